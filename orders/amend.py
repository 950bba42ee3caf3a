"""Cancelling and modifying working orders at the broker.

Both follow the placement rules: the local state moves first (under the version check), the
broker is called outside any transaction, and an answer we cannot trust is reconciled from the
broker's own view of the order rather than guessed.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

from accounts.gateway import get_gateway
from orders import lifecycle
from orders.exceptions import (
    BrokerUnavailable,
    IllegalTransition,
    InvalidOrder,
    NoBrokerOrderId,
    NotCancellable,
    VersionConflict,
)
from orders.lifecycle import CancelDecision
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.risk import order_modify_risk_check
from orders.services import order_apply_broker_order, order_transition, order_update
from orders.validation import order_validate_prices, payload_from
from projectx.errors import AmbiguousError, BrokerRejected, GatewayError

logger = logging.getLogger(__name__)

RECONCILE_BUDGET_SECONDS = 2.0


class OutcomeNotKnownYet(IllegalTransition):
    """The order's placement is still in flight or unverified: it cannot be changed yet."""

    code = "outcome_not_known"


def require_broker_order_id(order: Order) -> int:
    """The broker's id of an order the broker accepted (the callers only reach the broker for
    such orders); NoBrokerOrderId rather than asking the broker about order None."""
    if order.broker_order_id is None:
        raise NoBrokerOrderId(order_id=order.pk, status=order.status)
    return order.broker_order_id


def _reconcile(
    order: Order, *, trigger: str, actor: str, reason: str, cancel_refused: bool = False
) -> Order:
    """Adopt the broker's view of the order; keep ours when the broker cannot be asked."""
    try:
        broker_order = get_gateway().get_order(
            account_id=order.account.broker_account_id,
            order_id=require_broker_order_id(order),
            budget=RECONCILE_BUDGET_SECONDS,
        )
    except GatewayError as exc:
        logger.warning("could not reconcile order %s with the broker: %s", order.pk, exc)
        return Order.objects.select_related("account").get(pk=order.pk)
    updated = order_apply_broker_order(
        order_id=order.pk,
        broker_order=broker_order,
        trigger=trigger,
        reason=reason,
        actor=actor,
        cancel_refused=cancel_refused,
    )
    return updated.order


def order_cancel(
    *,
    order_id: uuid.UUID | str,
    expected_version: int | None,
    actor: str,
    trigger: str = TransitionTrigger.API,
) -> Order:
    """Cancel an order; safe to retry. What happens is `lifecycle.cancel_decision`'s:

    - never sent: cancelled here; working: the cancel is sent (after the version check);
    - already `pending_cancel` (a retry after a lost answer): the cancel is sent again, which
      is harmless at the broker and settles it sooner than the sweep would;
    - already `cancelled`: returned as it is; ended otherwise: `NotCancellable` (409).

    The order comes back `cancelled` once the broker confirms, or still `pending_cancel` with
    the reason while it has not (the stream or the sweep settles it).
    """
    order = Order.objects.select_related("account").get(pk=order_id)
    decision = lifecycle.cancel_decision(order)
    if decision == CancelDecision.LOCAL:
        try:
            return order_transition(
                order_id=order.pk,
                to_state=OrderStatus.CANCELLED,
                trigger=trigger,
                expected_version=expected_version,
                actor=actor,
                reason="cancelled before sending",
            )
        except IllegalTransition:  # it was sent meanwhile: decide again from where it is
            return order_cancel(
                order_id=order_id, expected_version=None, actor=actor, trigger=trigger
            )
    if decision == CancelDecision.ALREADY_CANCELLED:
        return order
    if decision == CancelDecision.NOT_CANCELLABLE:
        raise NotCancellable(current=order)
    if decision == CancelDecision.OUTCOME_NOT_KNOWN:
        raise OutcomeNotKnownYet(
            order_id=order.pk, from_state=order.status, to_state=OrderStatus.PENDING_CANCEL
        )
    if decision == CancelDecision.SEND:
        try:
            order = order_transition(
                order_id=order.pk,
                to_state=OrderStatus.PENDING_CANCEL,
                trigger=trigger,
                expected_version=expected_version,
                actor=actor,
                reason="cancel requested",
            )
        except IllegalTransition:  # the broker moved it on meanwhile (filled, cancelled)
            return order_cancel(
                order_id=order_id, expected_version=None, actor=actor, trigger=trigger
            )
    return _send_cancel(order, actor=actor)


def _send_cancel(order: Order, *, actor: str) -> Order:
    try:
        get_gateway().cancel_order(
            account_id=order.account.broker_account_id, order_id=require_broker_order_id(order)
        )
    except BrokerRejected as exc:
        # E.g. the order filled a moment ago: the broker's view of the order says what it is,
        # and a working order whose cancel was refused is working again at once.
        logger.info("broker refused to cancel order %s: %s", order.pk, exc)
        return _reconcile(
            order,
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason=f"cancel refused by the broker: {exc.broker_message or ''}",
            cancel_refused=True,
        )
    except GatewayError as exc:
        # Ambiguous, or not sent: the order stays pending_cancel (never guessed back to
        # working from one look-up); the stream, a retry or the sweep settles it.
        logger.warning("cancel of order %s not confirmed: %s", order.pk, exc)
        reason = f"cancel not confirmed by the broker ({exc}); waiting for its confirmation"
        current = _reconcile(
            order, trigger=TransitionTrigger.BROKER_REST, actor=actor, reason=reason
        )
        if current.status == OrderStatus.PENDING_CANCEL:
            current = order_update(
                order_id=current.pk,
                changes={"status_reason": reason[:2000]},
                trigger=TransitionTrigger.BROKER_REST,
                actor=actor,
                reason=reason[:2000],
            )
        return current
    return _reconcile(
        order,
        trigger=TransitionTrigger.BROKER_REST,
        actor=actor,
        reason="cancel accepted by the broker",
    )


def order_modify(
    *,
    order_id: uuid.UUID | str,
    expected_version: int | None,
    changes: dict[str, Any],
    actor: str,
    trigger: str = TransitionTrigger.API,
) -> Order:
    order = Order.objects.select_related("account").get(pk=order_id)
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict(current=order, expected_version=expected_version)
    if order.status in lifecycle.OUTCOME_PENDING:
        raise OutcomeNotKnownYet(order_id=order.pk, from_state=order.status, to_state=order.status)
    if not lifecycle.modify_allowed(order):
        raise IllegalTransition(order_id=order.pk, from_state=order.status, to_state=order.status)

    new_size = changes.get("size", order.size)
    if new_size <= order.filled_size:
        raise InvalidOrder({"size": [f"must be above the {order.filled_size} already filled"]})
    if new_size > order.size:
        # Pre-trade risk (issue 15): a bigger order adds exposure like a new one.
        order_modify_risk_check(order=order, new_size=new_size)
    prices: dict[str, Decimal | None] = {
        field: changes.get(field, getattr(order, field))
        for field in ("limit_price", "stop_price", "trail_price")
    }
    order_validate_prices(
        payload=payload_from(
            account=order.account,
            contract_id=order.contract_id,
            side=order.side,
            type=order.type,
            size=new_size,
            limit_price=prices["limit_price"],
            stop_price=prices["stop_price"],
            trail_price=prices["trail_price"],
        )
    )
    # Claim the version before calling the broker: of two writers that read the same version,
    # exactly one gets past this write; the other gets the conflict (412) and sends nothing.
    # (The broker call cannot happen under the row lock: no network I/O in a transaction.)
    order = order_update(
        order_id=order.pk,
        expected_version=expected_version,
        changes={},
        trigger=trigger,
        actor=actor,
        reason="modify requested: "
        + ", ".join(f"{name}={value}" for name, value in sorted(changes.items())),
    )

    try:
        get_gateway().modify_order(
            account_id=order.account.broker_account_id,
            order_id=order.broker_order_id,
            **changes,
        )
    except BrokerRejected as exc:
        raise InvalidOrder(
            {
                "non_field_errors": [
                    f"the broker refused the change ({exc.error_name}): {exc.broker_message or ''}"
                ]
            }
        ) from exc
    except AmbiguousError as exc:
        reconciled = _reconcile(
            order,
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason="modify outcome unknown; broker state adopted",
        )
        raise BrokerUnavailable(
            f"the broker did not confirm the change ({exc}); the order was reconciled and is "
            f"at version {reconciled.version}: read it before retrying"
        ) from exc
    except GatewayError as exc:
        raise BrokerUnavailable(f"the change was not sent: {exc}") from exc
    # The broker accepted the change: record it even if the order filled (or was cancelled)
    # at the new terms before this answer arrived. It is broker evidence, so a finished
    # order's terms may change here (and the hub's order event carries the same terms).
    return order_update(
        order_id=order.pk,
        changes=changes,
        trigger=TransitionTrigger.BROKER_REST,
        actor=actor,
        reason="modify accepted by the broker: "
        + ", ".join(f"{name}={value}" for name, value in sorted(changes.items())),
    )
