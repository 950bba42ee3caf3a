"""Every write to an order goes through here.

`order_transition` is the one function that changes an order's state; `order_update` is the one
that changes its other fields. Both:

1. lock the order row (`select_for_update`) inside a transaction,
2. check the version the caller read (optimistic locking across processes),
3. apply the change (the state machine refuses illegal moves with `IllegalTransition`),
4. bump the version with a conditional UPDATE (`WHERE version = <old>`),
5. write the `OrderTransition` audit row in the same transaction,
6. after commit, send `order_changed` (live desk, metrics).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import transaction
from django.utils import timezone
from django_fsm import TransitionNotAllowed

from orders.exceptions import IllegalTransition, VersionConflict
from orders.models import (
    CORRECTIONS,
    TERMINAL_STATES,
    TRANSITION_METHODS,
    WORKING_STATES,
    Order,
    OrderStatus,
    OrderTransition,
    TransitionTrigger,
)
from orders.signals import order_changed, order_fills_missing

logger = logging.getLogger(__name__)

# Fields a caller may change through order_update / alongside a transition. The state, version
# and timestamps are ours to manage.
_WRITABLE_FIELDS = frozenset(
    {
        "size",
        "limit_price",
        "stop_price",
        "trail_price",
        "broker_order_id",
        "status_reason",
        "filled_size",
        "avg_fill_price",
        "last_server_ts",
        "submitted_at",
        "verification_attempts",
        "fill_notional",
        "last_fill_at",
        "broker_fill_volume",
        "overfilled",
        "fill_timeout_handled_at",
    }
)


def _check_version(order: Order, expected_version: int | None) -> Order:
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict(current=order, expected_version=expected_version)
    return order


def _lock_order(order_id: object, expected_version: int | None) -> Order:
    return _check_version(Order.objects.select_for_update().get(pk=order_id), expected_version)


def _in_callers_lock(locked: Order | None) -> Any:
    """The transaction a write runs in.

    Without `locked` the write is its own atomic block (a savepoint inside an outer one). With
    `locked`, the caller's transaction already holds the order's row lock (the fills path):
    every check has run before this, and the write joins that transaction without a savepoint,
    which under a burst of fills saves two round trips per write.
    """
    return transaction.atomic(savepoint=locked is None)


def _write(
    order: Order,
    *,
    from_state: str,
    now: datetime,
    state_changed: bool,
    trigger: str,
    actor: str,
    reason: str,
    server_ts: datetime | None,
    changes: Mapping[str, Any],
) -> OrderTransition:
    unknown = set(changes) - _WRITABLE_FIELDS
    if unknown:
        raise ValueError(f"not writable through the order services: {sorted(unknown)}")
    previous_version = order.version
    changed_fields: dict[str, list[str]] = {}
    for field, value in changes.items():
        old = getattr(order, field)
        if old != value:
            changed_fields[field] = [_jsonable(old), _jsonable(value)]
            setattr(order, field, value)

    time_in_previous_state = now - order.state_entered_at
    if state_changed:
        order.state_entered_at = now
    if server_ts is not None and (order.last_server_ts is None or server_ts > order.last_server_ts):
        order.last_server_ts = server_ts
    order.version = previous_version + 1
    order.updated_at = now

    # Conditional UPDATE: the row lock makes a lost race impossible here, but the version
    # filter keeps the rule "every write is conditional on the version" true for every writer.
    fields = {name: getattr(order, name) for name in changes}
    updated = Order.objects.filter(pk=order.pk, version=previous_version).update(
        status=order.status,
        state_entered_at=order.state_entered_at,
        version=order.version,
        last_server_ts=order.last_server_ts,
        updated_at=now,
        **fields,
    )
    if updated != 1:
        current = Order.objects.get(pk=order.pk)
        raise VersionConflict(current=current, expected_version=previous_version)

    record = OrderTransition.objects.create(
        order=order,
        from_state=from_state,
        to_state=order.status,
        at=now,
        time_in_previous_state=time_in_previous_state,
        trigger=trigger,
        actor=actor,
        reason=reason,
        is_correction=(from_state, order.status) in CORRECTIONS,
        changed_fields=changed_fields,
        server_ts=server_ts,
        version=order.version,
    )
    committed_order = order
    transaction.on_commit(
        lambda: order_changed.send(sender=Order, order=committed_order, transition=record)
    )
    return record


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _move(order: Order, to_state: str) -> str:
    """Apply the state machine's move in memory; raise IllegalTransition if there is none."""
    from_state = order.status
    method_name = TRANSITION_METHODS.get(to_state)
    if method_name is None:
        raise IllegalTransition(order_id=order.pk, from_state=from_state, to_state=to_state)
    try:
        getattr(order, method_name)()
    except TransitionNotAllowed:
        raise IllegalTransition(
            order_id=order.pk, from_state=from_state, to_state=to_state
        ) from None
    return from_state


def order_transition(
    *,
    order_id: object,
    to_state: str,
    trigger: str,
    expected_version: int | None = None,
    actor: str = "",
    reason: str = "",
    server_ts: datetime | None = None,
    changes: Mapping[str, Any] | None = None,
    locked: Order | None = None,
) -> Order:
    """Move an order to `to_state`, or raise IllegalTransition / VersionConflict.

    `expected_version=None` means "whatever the current version is": for writers that act on
    the broker's evidence (listener, verification), which re-read under the lock instead of
    asking a person to retry. `locked`: the order as the caller locked it in its transaction.
    """
    TransitionTrigger(trigger)  # a typo in a trigger is a programming error: fail loudly
    if locked is not None:
        from_state = _move(_check_version(locked, expected_version), to_state)
    with _in_callers_lock(locked):
        if locked is None:
            order = _lock_order(order_id, expected_version)
            from_state = _move(order, to_state)
        else:
            order = locked
        record = _write(
            order,
            from_state=from_state,
            now=timezone.now(),
            state_changed=True,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes or {},
        )
    if record.is_correction:
        logger.warning(
            "order %s corrected from %s to %s: %s", order.pk, from_state, order.status, reason
        )
    return order


def order_update(
    *,
    order_id: object,
    changes: Mapping[str, Any],
    trigger: str,
    expected_version: int | None = None,
    actor: str = "",
    reason: str = "",
    server_ts: datetime | None = None,
    locked: Order | None = None,
) -> Order:
    """Change an order's fields without changing its state; audited and versioned like a move."""
    TransitionTrigger(trigger)

    def check(order: Order) -> Order:
        if order.status in TERMINAL_STATES and set(changes) & {"size", "limit_price", "stop_price"}:
            raise IllegalTransition(
                order_id=order.pk, from_state=order.status, to_state=order.status
            )
        return order

    if locked is not None:
        check(_check_version(locked, expected_version))
    with _in_callers_lock(locked):
        order = locked if locked is not None else check(_lock_order(order_id, expected_version))
        _write(
            order,
            from_state=order.status,
            now=timezone.now(),
            state_changed=False,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
        )
    return order


def order_create(
    *,
    account_id: int,
    contract_id: str,
    side: str,
    type: str,
    size: int,
    limit_price: Any = None,
    stop_price: Any = None,
    trail_price: Any = None,
    idempotency_key: str | None = None,
    custom_tag: str | None = None,
    broker_order_id: int | None = None,
    created_by: str = "",
    account_seq: int | None = None,
) -> Order:
    """Store a new order in `created`. Placement (issue: placing orders) builds on this."""
    return Order.objects.create(
        account_id=account_id,
        contract_id=contract_id,
        side=side,
        type=type,
        size=size,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_price=trail_price,
        idempotency_key=idempotency_key,
        custom_tag=custom_tag,
        broker_order_id=broker_order_id,
        created_by=created_by,
        account_seq=account_seq,
        status=OrderStatus.CREATED,
        state_entered_at=timezone.now(),
    )


def _via_open(from_state: str, to_state: str) -> bool:
    # The broker can report "pending cancellation" for an order we never saw working (e.g. it
    # was `unknown`): the lifecycle has no direct edge, so the order passes through `open`.
    return to_state == OrderStatus.PENDING_CANCEL and from_state in {
        OrderStatus.SUBMITTING,
        OrderStatus.UNKNOWN,
        OrderStatus.FAILED,
    }


class BrokerEvidence(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE = "stale"


@dataclass(frozen=True)
class BrokerOrderResult:
    order: Order
    outcome: BrokerEvidence
    # The broker reports more filled than the fills we hold: fetch them (Trade/search).
    fills_missing: bool = False


def _target_state(order: Order, broker_order: Any) -> str | None:
    """Where the broker's report takes the order, given the fills we hold.

    The fill history is the source of truth for how much is filled: a working order is
    `partially_filled` only when we hold fills, and a broker `Filled` waits (as partially
    filled, or where it is) until the fills that make it up have arrived.
    """
    from orders.broker_status import local_state_for

    target = local_state_for(broker_order.status, filled_size=broker_order.fill_volume)
    if target in {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED}:
        return OrderStatus.PARTIALLY_FILLED if order.filled_size > 0 else OrderStatus.OPEN
    if target == OrderStatus.FILLED and order.filled_size < order.size:
        if order.filled_size > 0:
            return OrderStatus.PARTIALLY_FILLED
        return order.status if order.status in WORKING_STATES else OrderStatus.OPEN
    return target


@transaction.atomic
def order_apply_broker_order(
    *,
    order_id: object,
    broker_order: Any,
    trigger: str,
    reason: str,
    actor: str = "",
    locked: Order | None = None,
) -> BrokerOrderResult:
    """Bring an order to the state the broker reports (a `projectx.models.Order`).

    Evidence older than the newest already applied (by the broker's `updateTimestamp`, else
    `creationTimestamp`) never moves the state backwards: it is reported as stale. When the
    broker counts more filled than the fills we hold, `order_fills_missing` is sent after
    commit so the fills app fetches them.
    """
    order = locked if locked is not None else _lock_order(order_id, None)
    server_ts = broker_order.update_timestamp or broker_order.creation_timestamp
    if order.last_server_ts is not None and server_ts < order.last_server_ts:
        return BrokerOrderResult(order, BrokerEvidence.STALE)

    changes: dict[str, Any] = {}
    if order.broker_order_id is None:
        changes["broker_order_id"] = broker_order.id
    fills_missing = broker_order.fill_volume > order.filled_size
    # Only a count ahead of the fills we hold is worth a write (the sweep backfills from it);
    # an event that repeats what the fills already say changes nothing.
    if fills_missing and broker_order.fill_volume != order.broker_fill_volume:
        changes["broker_fill_volume"] = broker_order.fill_volume
    if fills_missing:
        transaction.on_commit(lambda: order_fills_missing.send(sender=Order, order_id=order.pk))

    target = _target_state(order, broker_order)
    if target is None or target == order.status:
        # No move (a repeated working state is the fills' to record). Write only what is new.
        if not changes:
            return BrokerOrderResult(order, BrokerEvidence.UNCHANGED, fills_missing)
        order = order_update(
            order_id=order.pk,
            changes=changes,
            trigger=trigger,
            reason=reason,
            actor=actor,
            server_ts=server_ts,
            locked=order,
        )
        return BrokerOrderResult(order, BrokerEvidence.APPLIED, fills_missing)

    if _via_open(order.status, target):
        order = order_transition(
            order_id=order.pk,
            to_state=OrderStatus.OPEN,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
            locked=order,
        )
        changes = {}
    try:
        order = order_transition(
            order_id=order.pk,
            to_state=target,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
            locked=order,
        )
    except IllegalTransition:
        logger.warning(
            "broker reports %s for order %s, which is %s locally: not applied",
            broker_order.status,
            order.pk,
            order.status,
        )
        return BrokerOrderResult(order, BrokerEvidence.UNCHANGED, fills_missing)
    return BrokerOrderResult(order, BrokerEvidence.APPLIED, fills_missing)
