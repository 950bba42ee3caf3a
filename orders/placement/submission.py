"""Sending one order to the broker, and what each answer means for it (lifecycle rules: a
REST answer applies only while the order is still `submitting`; newer evidence wins)."""

from __future__ import annotations

from django.utils import timezone

from accounts.gateway import get_gateway
from orders import brackets, lifecycle, wire
from orders.exceptions import PlacementDeferred
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.placement.release import order_release_unsent
from orders.placement.results import PlacementResult
from orders.services import order_settle, order_transition, order_update
from orders.verification import schedule_verification
from projectx.errors import (
    AmbiguousError,
    BrokerRejected,
    DefinitiveError,
    RateLimited,
    RateLimitExceeded,
    RequestNotSent,
)


def submit(order: Order, *, actor: str, trigger: str) -> PlacementResult:
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
            **brackets.wire_brackets(order),
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
