"""Ending an order that never reached the broker, and freeing its Idempotency-Key."""

from __future__ import annotations

from collections.abc import Callable

from django.db import transaction

from orders.models import IdempotencyRecord, Order, OrderStatus, TransitionTrigger
from orders.services import order_settle


def still_waiting(order: Order) -> bool:
    return order.status == OrderStatus.CREATED


def cancel_unsent(order: Order, reason: str) -> None:
    """An order left waiting by a process that died: cancelled, never sent late."""
    order_release_unsent(
        order=order, to_state=OrderStatus.CANCELLED, reason=reason, applies=still_waiting
    )


def order_release_unsent(
    *,
    order: Order,
    to_state: str,
    reason: str,
    applies: Callable[[Order], bool],
    trigger: str = TransitionTrigger.SWEEPER,
    actor: str = "",
) -> bool:
    """End an order that did not reach the broker, and free its idempotency key.

    The broker never saw it (or refused it for a transient reason, like its rate limit), so
    the same key must be able to place the order later, exactly once: the key and its tag are
    taken off the order (the audit row keeps them) and the key's record is deleted, in one
    transaction. False when the order had moved on meanwhile (its newer state stands).
    """
    key = order.idempotency_key
    reason = f"{reason}; Idempotency-Key released for a retry"[:2000]
    with transaction.atomic():
        settled = order_settle(
            order_id=order.pk,
            to_state=to_state,
            applies=applies,
            trigger=trigger,
            actor=actor,
            reason=reason,
            changes={"status_reason": reason, "idempotency_key": None, "custom_tag": None},
        )
        if settled.applied and key is not None:
            IdempotencyRecord.objects.filter(account_id=order.account_id, key=key).delete()
    return settled.applied
