"""The lock hierarchy of the domain: Account -> Position -> Order, always in that order.

Every transaction that locks rows of more than one kind takes them through `lock_in_order`, so
two writers can never wait on each other in a circle (and within a kind, by primary key).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from django.db import connection

from accounts.models import Account, Position
from common import metrics
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
        # ORDER BY pk: within a kind, always the same order too.
        rows = list(model.objects.select_for_update().filter(pk__in=keys).order_by("pk"))
        metrics.lock_wait_seconds.labels(kind).observe(time.perf_counter() - started)
        metrics.lock_acquisitions_total.labels(kind).inc(len(rows))
        locked[kind] = rows
    return locked
