"""The account's placement queue: acceptance under the account's row lock (its place in the
queue, its depth, a close in progress), and sending in acceptance order in the account's turn.
See docs/decisions/0002."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Account, PositionClose
from common import metrics
from common.locking import (
    ADVISORY_NAMESPACE_PLACEMENT,
    TurnTimeout,
    advisory_lock,
    retry_on_deadlock,
)
from orders import idempotency, lifecycle
from orders.exceptions import (
    PlacementDeferred,
    PlacementQueueFull,
    PositionClosing,
)
from orders.locking import lock_in_order
from orders.models import IdempotencyRecord, Order, OrderStatus
from orders.placement.release import cancel_unsent, order_release_unsent, still_waiting
from orders.placement.results import PlacementResult
from orders.placement.submission import submit
from orders.risk import order_risk_check
from orders.services import order_create


@retry_on_deadlock
@transaction.atomic
def accept(
    account: Account,
    payload: idempotency.OrderPayload,
    key: str,
    fingerprint: str,
    actor: str,
    now: Any,
) -> tuple[Order, IdempotencyRecord]:
    """Store the order (`created`) with its place in the account's queue, or refuse it whole.

    Under the account's row lock (the first lock of the hierarchy): the queue depth, a close in
    progress on the contract, and the next sequence number are decided by one writer at a time.
    """
    config = settings.ORDER_MANAGEMENT
    locked = lock_in_order(accounts=[account])["account"][0]
    # A close whose lease expired (its process died) does not block: it is taken over later.
    if (
        PositionClose.objects.lease_held(now=now)
        .filter(account=locked, contract_id=payload.contract_id)
        .exists()
    ):
        raise PositionClosing(contract_id=payload.contract_id)
    # Pre-trade risk (issue 15): limits and the trading state, decided under this lock.
    order_risk_check(account=locked, payload=payload, now=now)
    waiting = Order.objects.filter(account=locked, status=OrderStatus.CREATED).count()
    if waiting >= config.concurrency_control.max_queue_depth_per_account:
        metrics.placement_queue_rejections_total.inc()
        raise PlacementQueueFull(waiting=waiting)
    seq = locked.last_order_seq + 1
    Account.objects.filter(pk=locked.pk).update(last_order_seq=seq)
    order = order_create(
        account_id=locked.pk,
        contract_id=payload.contract_id,
        side=payload.side,
        type=payload.type,
        size=payload.size,
        limit_price=payload.limit_price,
        stop_price=payload.stop_price,
        trail_price=payload.trail_price,
        stop_loss_ticks=payload.stop_loss_ticks,
        take_profit_ticks=payload.take_profit_ticks,
        idempotency_key=key,
        custom_tag=idempotency.custom_tag_for(account_broker_id=locked.broker_account_id, key=key),
        created_by=actor,
        account_seq=seq,
    )
    record = IdempotencyRecord.objects.create(
        account=locked,
        key=key,
        request_fingerprint=fingerprint,
        order=order,
        expires_at=now + timedelta(seconds=config.idempotency.key_ttl_seconds),
    )
    return order, record


def _seq(order: Order) -> int:
    """An order's place in its account's queue: every order `accept` took has one."""
    if order.account_seq is None:
        raise RuntimeError(
            f"order {order.pk} is waiting to be sent but has no account_seq: it was not "
            "accepted through the placement queue"
        )
    return order.account_seq


def send_in_turn(order: Order, *, actor: str, trigger: str) -> PlacementResult:
    """Send the account's waiting orders in acceptance order, up to and including this one.

    One request at a time per account holds the account's turn (a PostgreSQL advisory lock, so
    across every web process). The holder sends every order accepted before its own that is
    still waiting, then its own: whoever gets the turn, the broker sees the account's orders in
    the order the system accepted them. A request whose order was sent by an earlier holder
    reads the outcome from the database. Orders left waiting longer than
    `lifecycle.stuckAfterSeconds.created` (their process died) are cancelled, never sent late.
    """
    config = settings.ORDER_MANAGEMENT
    stale_after = timedelta(seconds=config.lifecycle.stuck_after_seconds.created)
    try:
        with advisory_lock(
            ADVISORY_NAMESPACE_PLACEMENT,
            order.account_id,
            timeout=config.concurrency_control.placement_turn_timeout_seconds,
        ):
            while True:
                waiting = (
                    Order.objects.select_related("account")
                    .filter(account_id=order.account_id, status=OrderStatus.CREATED)
                    .order_by("account_seq")
                    .first()
                )
                if waiting is None or _seq(waiting) > _seq(order):
                    break  # ours went out in an earlier holder's turn
                if timezone.now() - waiting.created_at > stale_after:
                    cancel_unsent(waiting, "not sent within the time allowed after acceptance")
                    continue
                result = submit(waiting, actor=waiting.created_by or actor, trigger=trigger)
                if waiting.pk == order.pk:
                    return result
    except TurnTimeout:
        deferred = PlacementDeferred(
            "placement_queue_timeout",
            "the account's placement queue did not move in time; nothing was sent",
            http_status=503,
            retry_after=1.0,
        )
        if order_release_unsent(
            order=order,
            to_state=OrderStatus.CANCELLED,
            reason=f"not placed ({deferred.code}): {deferred}",
            applies=still_waiting,
        ):
            return PlacementResult(order, 503, deferred=deferred)
    current = Order.objects.select_related("account").get(pk=order.pk)
    if current.idempotency_key is None:
        # An earlier holder of the turn sent it, and it did not reach the broker (or the
        # broker refused it for a transient reason): the key is free again.
        deferred = PlacementDeferred(
            "broker_unavailable",
            f"the order was not placed: {current.status_reason}",
            http_status=503,
            retry_after=1.0,
        )
        return PlacementResult(current, 503, deferred=deferred)
    return PlacementResult(current, lifecycle.placement_http_status(current))
