"""The lock hierarchy of the domain: Account -> Position -> Order, always in that order.

Every transaction that locks rows of more than one kind takes them through `lock_in_order`, so
two writers can never wait on each other in a circle (and within a kind, by primary key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from django.db import connection

from accounts.models import Account, Position
from common import metrics
from common.bulk import column_list, fetch_instances, fetch_instances_sent
from orders.models import Order


def lock_in_order(
    *,
    accounts: Iterable[Any] = (),
    positions: Iterable[Any] = (),
    orders: Iterable[Any] = (),
) -> dict[str, list[Any]]:
    """Lock the given rows (model instances or primary keys) Account -> Position -> Order.

    Must run inside a transaction. Returns the locked rows, fresh from the database, by kind.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("lock_in_order must run inside transaction.atomic()")
    locked: dict[str, list[Any]] = {}
    for kind, model, items in (
        ("account", Account, accounts),
        ("position", Position, positions),
        ("order", Order, orders),
    ):
        keys = sorted({getattr(item, "pk", item) for item in items}, key=str)
        if not keys:
            locked[kind] = []
            continue
        started = time.perf_counter()
        rows = _locked_rows(model, keys)
        metrics.lock_wait_seconds.labels(kind).observe(time.perf_counter() - started)
        metrics.lock_acquisitions_total.labels(kind).inc(len(rows))
        locked[kind] = rows
    return locked


def _locked_rows(model: type[Any], keys: list[Any]) -> list[Any]:
    """SELECT ... FOR UPDATE of these rows, ORDER BY pk: within a kind, always the same order.

    On PostgreSQL one statement per model, written once: every placement locks its account and
    its order this way, and the ORM compiled the same query afresh each time (the largest part
    of the CPU of an uncontended lock)."""
    if connection.vendor != "postgresql":
        return list(model.objects.select_for_update().filter(pk__in=keys).order_by("pk"))
    sql = _LOCK_SQL.get(model)
    if sql is None:
        pk = model._meta.pk
        sql = _LOCK_SQL[model] = (
            f"SELECT {column_list(model)} FROM {connection.ops.quote_name(model._meta.db_table)} "
            f"WHERE {pk.column} = ANY(%s::{pk.db_type(connection)}[]) "
            f"ORDER BY {pk.column} FOR UPDATE"
        )
    return fetch_instances(model, sql, [keys])


_LOCK_SQL: dict[type[Any], str] = {}


def lock_account_taking_seq_sent(account: Any) -> Callable[[], Account]:
    """Lock the account (the first lock of the hierarchy, as `lock_in_order`) and take its next
    acceptance sequence number (`last_order_seq`, already moved on in the row returned): one
    statement on PostgreSQL where a lock and an UPDATE were two. The number is used only if the
    transaction commits; a refusal rolls it back with everything else.

    Among statements sent together (`common.pipeline`): the statement is sent now, and the
    function returned gives the locked row once the block has been answered. Statements sent
    after it in the block run once the lock is held (PostgreSQL runs a pipeline's statements in
    order), each in a snapshot of its own taken then. On SQLite the row is locked at once."""
    if not connection.in_atomic_block:
        raise RuntimeError("lock_account_taking_seq_sent must run inside transaction.atomic()")
    pk = getattr(account, "pk", account)
    started = time.perf_counter()
    if connection.vendor == "postgresql":
        rows = fetch_instances_sent(Account, _TAKE_SEQ_SQL, [pk])
    else:
        (held,) = _locked_rows(Account, [pk])
        held.last_order_seq += 1
        Account.objects.filter(pk=pk).update(last_order_seq=held.last_order_seq)

        def rows() -> list[Account]:
            return [held]

    def locked() -> Account:
        (row,) = rows()
        # Up to the block's answer: the wait for the lock and the round trip it shares.
        metrics.lock_wait_seconds.labels("account").observe(time.perf_counter() - started)
        metrics.lock_acquisitions_total.labels("account").inc()
        return row

    return locked


_TAKE_SEQ_SQL = (
    f"UPDATE {Account._meta.db_table} SET last_order_seq = last_order_seq + 1 "
    f"WHERE {Account._meta.pk.column} = %s RETURNING {column_list(Account)}"
)
