"""Orders as archival finds them: terminal (or not), with transitions, fills and keys, aged."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from accounts.models import Account
from fills.models import Fill
from orders.models import IdempotencyRecord, Order
from orders.services import order_transition
from tests.factories import make_order

_broker_ids = itertools.count(7_000_000)
_trade_ids = itertools.count(9_000_000)

# The states each order passes through (after `created`) to reach its final state.
PATHS: dict[str, list[str]] = {
    "filled": ["submitting", "open", "filled"],
    "cancelled": ["submitting", "open", "cancelled"],
    "expired": ["submitting", "open", "expired"],
    "rejected": ["submitting", "rejected"],
    "failed": ["submitting", "unknown", "failed"],
    "open": ["submitting", "open"],
    "partially_filled": ["submitting", "open", "partially_filled"],
}


def aged_order(
    account: Account,
    *,
    status: str = "filled",
    days_old: float = 40,
    fills: int = 1,
    key: str | None = None,
    key_expires_in: timedelta | None = None,
) -> Order:
    """An order that reached `status` through the services and was last changed `days_old`
    days ago; with `key`, an idempotency record expiring `key_expires_in` from now."""
    order = make_order(account, idempotency_key=key)
    broker_order_id = next(_broker_ids)
    for state in PATHS[status]:
        changes = {"broker_order_id": broker_order_id} if state == "open" else {}
        order_transition(order_id=order.pk, to_state=state, trigger="broker-rest", changes=changes)
    for _ in range(fills):
        Fill.objects.create(
            account=account,
            order=order,
            broker_trade_id=next(_trade_ids),
            broker_order_id=broker_order_id,
            contract_id=order.contract_id,
            side=order.side,
            size=1,
            price=Decimal("21000.25"),
            broker_ts=timezone.now() - timedelta(days=days_old),
        )
    if key is not None:
        IdempotencyRecord.objects.create(
            account=account,
            key=key,
            request_fingerprint="0" * 64,
            state=IdempotencyRecord.State.COMPLETED,
            order=order,
            response_status=201,
            response_body={"id": str(order.pk)},
            expires_at=timezone.now() + (key_expires_in or timedelta(hours=1)),
        )
    Order.objects.filter(pk=order.pk).update(updated_at=timezone.now() - timedelta(days=days_old))
    return Order.objects.get(pk=order.pk)
