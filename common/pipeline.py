"""Statements sent to PostgreSQL together, answered in one round trip.

Every statement Django runs waits for its answer before the next is sent, and the first one
of a transaction waits for a `BEGIN` of its own. Where a unit of work runs several statements
whose answers nothing in between needs (the listener's batch: the account's figures, the
positions, the order locks), `sent_together` sends them as one pipeline (psycopg's pipeline
mode, libpq's `PQpipelineSync`): the statements and a Sync leave together, and the answers
come back together when the block ends. (psycopg still sends a transaction's `BEGIN` with a
Sync of its own before the first of them: one round trip for it, one for all the rest.)

The rule inside the block: execute, never read. A statement's answer is read after the block,
from the cursor it was executed on (keep it open: `Sent`). A statement that fails makes the
block raise as it ends, and the statements after it in the block are not run; the
transaction is then aborted, as after any failed statement. Elsewhere (SQLite) the block does
nothing and each statement is answered as it runs, so the same code reads the same answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from django.db import connection

from common.statements import execute_prepared

# Reads the answer of a statement already sent: call it after the `sent_together` block.
Sent = Callable[[], Any]


@contextlib.contextmanager
def sent_together() -> Iterator[None]:
    """Within the block, statements on Django's connection are sent together (PostgreSQL)."""
    if connection.vendor != "postgresql":
        yield
        return
    connection.ensure_connection()
    # A statement that failed raises as the block ends, as Django's error (DataError, ...).
    with connection.wrap_database_errors, connection.connection.pipeline():
        yield


def sent_cursor(sql: str, params: list[Any]) -> Any:
    """Execute `sql` on a new cursor of Django's connection and return the cursor, open, for
    its answer to be read once the statements sent together have been answered. The caller
    closes it (`with cursor:`) when it has read it."""
    cursor = connection.cursor()
    try:
        # The statements sent together are the listener's, the same texts on every batch.
        execute_prepared(cursor, sql, params)
    except BaseException:
        cursor.close()
        raise
    return cursor
