"""Statements our code writes once and runs all the time: prepared on PostgreSQL.

PostgreSQL parses and plans a statement that is not prepared on every execution. Its log
(`log_min_duration_statement = 0`) put parse and bind at 60% of its time in a listener batch
and 37% in a placement, the same few texts again and again. `execute_prepared` runs such a
text on a Django cursor and asks psycopg to prepare it: once per connection, then only bound
and executed. The settings' `prepare_threshold` keeps the ORM's own statements unprepared
(psycopg prepares nothing when it is None, asked or not, which is Django's default).

Only the last step changes: Django's execute wrappers and its query log (debug,
`CaptureQueriesContext`) see the statement as before, and its errors are Django's.
For texts from a bounded set only (written once, or once per shape): a connection keeps at
most psycopg's `prepared_max` of them and deallocates the least recently used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from django.db import connection
from django.db.backends.utils import CursorWrapper


def execute_prepared(cursor: CursorWrapper, sql: str, params: Sequence[Any]) -> None:
    """`cursor.execute(sql, params)`, the statement prepared on PostgreSQL."""
    if connection.vendor != "postgresql":
        cursor.execute(sql, params)
        return
    with connection.execute_wrapper(_prepared):
        cursor.execute(sql, params)


def _prepared(
    execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]
) -> Any:
    # In place of Django's own last step (`CursorWrapper._execute`), with its checks.
    database = context["connection"]
    database.validate_no_broken_transaction()
    with database.wrap_database_errors:
        return context["cursor"].cursor.execute(sql, params, prepare=True)
