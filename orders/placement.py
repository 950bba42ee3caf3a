"""Placing an order: idempotency, the broker call, and what happens when it fails.

`order_place` follows these steps:

1. Validate against the contract (tick size) and work out the idempotency key.
2. Answer from a previous request with the same key when there is one (replay, 409 or 422).
3. Store the order (`created`) and its idempotency record in one transaction, and commit.
   The record's unique constraint makes concurrent requests with one key race safely.
4. Move to `submitting` and call the broker outside any transaction, with the key's digest as
   `customTag`.
5. Accepted: `open` with the broker's id (201). Refused: `rejected` with the broker's reason
   (422). An ambiguous failure (timeout, reset, 5xx) or a request that never left: `unknown`
   (202), and verification finds out what the broker did before anyone retries.
6. Store the response on the idempotency record, so a retry replays it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import Account, PositionClose
from accounts.services import contract_resolve
from common import metrics
from common.locking import (
    ADVISORY_NAMESPACE_PLACEMENT,
    TurnTimeout,
    advisory_lock,
    retry_on_deadlock,
)
from orders import idempotency, lifecycle, wire
from orders.exceptions import (
    BrokerUnavailable,
    IdempotencyKeyReused,
    InvalidOrder,
    PlacementDeferred,
    PlacementQueueFull,
    PositionClosing,
    RequestInProgress,
)
from orders.locking import lock_in_order
from orders.models import IdempotencyRecord, Order, OrderStatus, OrderType, TransitionTrigger
from orders.services import order_create, order_settle, order_transition, order_update
from projectx.errors import (
    AmbiguousError,
    BrokerRejected,
    DefinitiveError,
    GatewayError,
    RateLimited,
    RateLimitExceeded,
    RequestNotSent,
)

logger = logging.getLogger(__name__)

# Which prices each type needs; any other price given is refused rather than ignored.
_REQUIRED_PRICES: dict[str, set[str]] = {
    OrderType.MARKET: set(),
    OrderType.LIMIT: {"limit_price"},
    OrderType.STOP: {"stop_price"},
    OrderType.STOP_LIMIT: {"limit_price", "stop_price"},
    OrderType.TRAILING_STOP: {"trail_price"},
    OrderType.JOIN_BID: set(),
    OrderType.JOIN_ASK: set(),
}
PRICE_FIELDS = ("limit_price", "stop_price", "trail_price")

Renderer = Callable[[Order], dict[str, Any]]


@dataclass(frozen=True)
class PlacementResult:
    order: Order
    http_status: int
    replayed: bool = False
    body: dict[str, Any] | None = None  # the stored body, on a replay
    retry_after: float | None = None
    # Nothing reached the broker (or it refused for a transient reason): the key is free and
    # the caller answers this error, never a stored outcome.
    deferred: PlacementDeferred | None = None


def _minimal_body(order: Order) -> dict[str, Any]:
    return {"id": str(order.pk), "status": order.status}


def order_validate_prices(*, payload: idempotency.OrderPayload) -> None:
    """Refuse prices the type does not take, missing ones, and prices off the tick size."""
    errors: dict[str, list[str]] = {}
    required = _REQUIRED_PRICES[payload.type]
    for field in PRICE_FIELDS:
        value = getattr(payload, field)
        if field in required and value is None:
            errors[field] = [f"required for a {payload.type} order"]
        elif field not in required and value is not None:
            errors[field] = [f"not used by a {payload.type} order"]
        elif value is not None and value <= 0:
            errors[field] = ["must be greater than zero"]
    if errors:
        raise InvalidOrder(errors)
    try:
        contract = contract_resolve(contract_id=payload.contract_id)
    except GatewayError as exc:
        raise BrokerUnavailable(f"cannot look up contract {payload.contract_id}: {exc}") from exc
    if contract is None:
        raise InvalidOrder({"contract_id": [f"unknown contract {payload.contract_id}"]})
    for field in PRICE_FIELDS:
        value = getattr(payload, field)
        if value is not None and not contract.is_on_tick(value):
            tick = format(contract.tick_size.normalize(), "f")
            errors[field] = [f"{value} is not on the contract's tick size {tick}"]
    if errors:
        raise InvalidOrder(errors)


def _previous_outcome(account: Account, key: str, fingerprint: str) -> PlacementResult | None:
    """What an earlier request with this key did, from the cache or else the database."""
    cached = idempotency.cache_get(account.pk, key)
    if cached is not None:
        if cached.fingerprint != fingerprint:
            raise IdempotencyKeyReused(key)
        order = Order.objects.get(pk=cached.order_id)
        return PlacementResult(order, cached.status, replayed=True, body=cached.body)

    record = (
        IdempotencyRecord.objects.select_related("order").filter(account=account, key=key).first()
    )
    if record is None:
        return None
    if record.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    if record.state == IdempotencyRecord.State.COMPLETED and record.order is not None:
        _remember(account, key, record)
        return PlacementResult(
            record.order, record.response_status or 200, replayed=True, body=record.response_body
        )
    in_flight_for = settings.ORDER_MANAGEMENT.idempotency.in_flight_lock_seconds
    if record.order is not None and timezone.now() - record.created_at > timedelta(
        seconds=in_flight_for
    ):
        # The first request died mid-way (its process crashed). Its order exists and the
        # sweeper verifies it; a retry learns where it stands instead of waiting forever.
        return PlacementResult(record.order, 202, replayed=True)
    raise RequestInProgress(key, record.order_id)


def _remember(account: Account, key: str, record: IdempotencyRecord) -> None:
    ttl = int((record.expires_at - timezone.now()).total_seconds())
    if ttl > 0 and record.order_id is not None and record.response_status is not None:
        idempotency.cache_put(
            account.pk,
            key,
            idempotency.StoredResponse(
                fingerprint=record.request_fingerprint,
                order_id=str(record.order_id),
                status=record.response_status,
                body=record.response_body or {},
            ),
            ttl,
        )


def order_place(
    *,
    account: Account,
    payload: idempotency.OrderPayload,
    client_key: str | None,
    actor: str,
    trigger: str = TransitionTrigger.API,
    render: Renderer = _minimal_body,
) -> PlacementResult:
    started = time.perf_counter()
    config = settings.ORDER_MANAGEMENT.idempotency
    now = timezone.now()
    key = (
        idempotency.validate_client_key(client_key)
        if client_key is not None
        else idempotency.derived_key(
            payload, now=now, bucket_seconds=config.derived_key_bucket_seconds
        )
    )
    fingerprint = payload.fingerprint()
    previous = _previous_outcome(account, key, fingerprint)
    if previous is not None:
        return previous

    order_validate_prices(payload=payload)
    try:
        order, record = _accept(account, payload, key, fingerprint, actor, now)
    except IntegrityError:
        # Another request with this key won the insert a moment ago.
        previous = _previous_outcome(account, key, fingerprint)
        if previous is not None:
            return previous
        raise IdempotencyKeyReused(key) from None

    result = _send_in_turn(order, actor=actor, trigger=trigger)
    if result.deferred is not None:
        raise result.deferred
    # Request to broker answer, for placements that reached the broker's turn (replays and
    # refusals answer from the database and would only blur it), by where the order landed.
    metrics.order_placement_seconds.labels(result.order.status).observe(
        time.perf_counter() - started
    )
    body = render(result.order)
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=IdempotencyRecord.State.COMPLETED,
        response_status=result.http_status,
        response_body=body,
    )
    record.refresh_from_db()
    _remember(account, key, record)
    return PlacementResult(result.order, result.http_status)


@retry_on_deadlock
@transaction.atomic
def _accept(
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


def _send_in_turn(order: Order, *, actor: str, trigger: str) -> PlacementResult:
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
                if waiting is None or waiting.account_seq > order.account_seq:
                    break  # ours went out in an earlier holder's turn
                if timezone.now() - waiting.created_at > stale_after:
                    _cancel_unsent(waiting, "not sent within the time allowed after acceptance")
                    continue
                result = _submit(waiting, actor=waiting.created_by or actor, trigger=trigger)
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
            applies=_still_waiting,
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


def _still_waiting(order: Order) -> bool:
    return order.status == OrderStatus.CREATED


def _cancel_unsent(order: Order, reason: str) -> None:
    """An order left waiting by a process that died: cancelled, never sent late."""
    order_release_unsent(
        order=order, to_state=OrderStatus.CANCELLED, reason=reason, applies=_still_waiting
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


def _submit(order: Order, *, actor: str, trigger: str) -> PlacementResult:
    order = order_transition(
        order_id=order.pk,
        to_state=OrderStatus.SUBMITTING,
        trigger=trigger,
        actor=actor,
        changes={"submitted_at": timezone.now()},
    )
    account = order.account
    try:
        broker_order_id = get_gateway().place_order(
            account_id=account.broker_account_id,
            contract_id=order.contract_id,
            type=wire.to_wire_type(order.type),
            side=wire.to_wire_side(order.side),
            size=order.size,
            limit_price=order.limit_price,
            stop_price=order.stop_price,
            trail_price=order.trail_price,
            custom_tag=order.custom_tag,
        )
    except BrokerRejected as exc:
        reason = f"broker rejected ({exc.error_name}): {exc.broker_message or ''}".strip()
        if exc.order_id is not None:
            reason += f" [broker order {exc.order_id}]"
        return _answer(_settle(order, OrderStatus.REJECTED, reason, actor))
    except AmbiguousError as exc:
        settled = order_settle(
            order_id=order.pk,
            to_state=OrderStatus.UNKNOWN,
            applies=lifecycle.placement_answer_applies,
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason=f"placement outcome unknown: {exc}"[:2000],
            changes={"status_reason": f"placement outcome unknown: {exc}"[:2000]},
        )
        if settled.applied:
            from orders.verification import schedule_verification

            schedule_verification(settled.order.pk)
        return _answer(settled.order)
    except RateLimited as exc:
        return _defer(
            order,
            OrderStatus.REJECTED,
            PlacementDeferred(
                "broker_rate_limited",
                f"the broker's rate limit refused the order: {exc}",
                http_status=429,
                retry_after=exc.retry_after,
            ),
        )
    except RateLimitExceeded as exc:
        return _defer(
            order,
            OrderStatus.FAILED,
            PlacementDeferred(
                "rate_limited",
                f"not sent: the broker's request limit is reached for now ({exc})",
                http_status=429,
                retry_after=exc.retry_after,
            ),
        )
    except RequestNotSent as exc:
        return _defer(
            order,
            OrderStatus.FAILED,
            PlacementDeferred(
                "broker_unavailable",
                f"not sent: the broker could not be reached ({exc})",
                http_status=503,
                retry_after=1.0,
            ),
        )
    except DefinitiveError as exc:
        return _answer(_settle(order, OrderStatus.REJECTED, str(exc), actor))

    return _answer(_acknowledge(order, broker_order_id, actor))


def _answer(order: Order) -> PlacementResult:
    return PlacementResult(order, lifecycle.placement_http_status(order))


def _defer(order: Order, to_state: str, deferred: PlacementDeferred) -> PlacementResult:
    """Nothing reached the broker, or it refused for a reason that passes: free the key."""
    if order_release_unsent(
        order=order,
        to_state=to_state,
        reason=f"not placed ({deferred.code}): {deferred}",
        applies=lifecycle.placement_answer_applies,
        trigger=TransitionTrigger.BROKER_REST,
    ):
        return PlacementResult(order, deferred.http_status, deferred=deferred)
    return _answer(Order.objects.select_related("account").get(pk=order.pk))  # moved on


def _settle(order: Order, to_state: str, reason: str, actor: str) -> Order:
    """A definitive REST answer, applied unless the hub or verification got there first."""
    settled = order_settle(
        order_id=order.pk,
        to_state=to_state,
        applies=lifecycle.placement_answer_applies,
        trigger=TransitionTrigger.BROKER_REST,
        actor=actor,
        reason=reason[:2000],
        changes={"status_reason": reason[:2000]},
    )
    if not settled.applied and settled.order.status == to_state and not settled.order.status_reason:
        # The stream reached the same conclusion first; the answer still says why.
        return order_update(
            order_id=order.pk,
            changes={"status_reason": reason[:2000]},
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason=reason[:2000],
        )
    return settled.order


def _acknowledge(order: Order, broker_order_id: int, actor: str) -> Order:
    """The broker accepted: record its id and open the order, unless the stream got there first."""
    settled = order_settle(
        order_id=order.pk,
        to_state=OrderStatus.OPEN,
        applies=lifecycle.placement_answer_applies,
        trigger=TransitionTrigger.BROKER_REST,
        actor=actor,
        reason="accepted by the broker",
        changes={"broker_order_id": broker_order_id},
    )
    current = settled.order
    if not settled.applied and current.broker_order_id is None:
        # The hub delivered the order's progress before our REST answer, without its id.
        current = order_update(
            order_id=order.pk,
            changes={"broker_order_id": broker_order_id},
            trigger=TransitionTrigger.BROKER_REST,
            reason="broker order id from the placement answer",
        )
    return current


def payload_from(
    *,
    account: Account,
    contract_id: str,
    side: str,
    type: str,
    size: int,
    limit_price: Decimal | None = None,
    stop_price: Decimal | None = None,
    trail_price: Decimal | None = None,
) -> idempotency.OrderPayload:
    return idempotency.OrderPayload(
        account_broker_id=account.broker_account_id,
        contract_id=contract_id,
        side=side,
        type=type,
        size=size,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_price=trail_price,
    )
