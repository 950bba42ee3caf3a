"""Cancelling and modifying working orders at the broker.

Both follow the placement rules: the local state moves first (under the version check), the
broker is called outside any transaction, and an answer we cannot trust is reconciled from the
broker's own view of the order rather than guessed.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from django.utils import timezone

from accounts.gateway import get_gateway
from orders.exceptions import BrokerUnavailable, IllegalTransition, InvalidOrder, VersionConflict
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.placement import order_validate_prices, payload_from
from orders.services import order_apply_broker_order, order_transition, order_update
from projectx.errors import AmbiguousError, BrokerRejected, GatewayError

logger = logging.getLogger(__name__)

RECONCILE_BUDGET_SECONDS = 2.0
_CANCELLABLE = {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED}
_MODIFIABLE = {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED}


class OutcomeNotKnownYet(IllegalTransition):
    """The order's placement is still in flight or unverified: it cannot be changed yet."""

    code = "outcome_not_known"


def _reconcile(order: Order, *, trigger: str, actor: str, reason: str) -> Order:
    """Adopt the broker's view of the order; keep ours when the broker cannot be asked."""
    try:
        wire = get_gateway().get_order(
            account_id=order.account.broker_account_id,
            order_id=order.broker_order_id,
            budget=RECONCILE_BUDGET_SECONDS,
        )
    except GatewayError as exc:
        logger.warning("could not reconcile order %s with the broker: %s", order.pk, exc)
        return Order.objects.select_related("account").get(pk=order.pk)
    updated = order_apply_broker_order(
        order_id=order.pk, broker_order=wire, trigger=trigger, reason=reason, actor=actor
    )
    return updated.order


def order_cancel(
    *,
    order_id: object,
    expected_version: int | None,
    actor: str,
    trigger: str = TransitionTrigger.API,
) -> Order:
    order = Order.objects.select_related("account").get(pk=order_id)
    if order.status == OrderStatus.CREATED:
        # Never sent: cancelling is a local matter.
        return order_transition(
            order_id=order.pk,
            to_state=OrderStatus.CANCELLED,
            trigger=trigger,
            expected_version=expected_version,
            actor=actor,
            reason="cancelled before sending",
        )
    if order.status == OrderStatus.PENDING_CANCEL:
        return order  # already asked; the broker's confirmation is on its way
    if order.status in {OrderStatus.SUBMITTING, OrderStatus.UNKNOWN}:
        raise OutcomeNotKnownYet(
            order_id=order.pk, from_state=order.status, to_state=OrderStatus.PENDING_CANCEL
        )
    if order.status not in _CANCELLABLE:
        raise IllegalTransition(
            order_id=order.pk, from_state=order.status, to_state=OrderStatus.CANCELLED
        )

    order = order_transition(
        order_id=order.pk,
        to_state=OrderStatus.PENDING_CANCEL,
        trigger=trigger,
        expected_version=expected_version,
        actor=actor,
        reason="cancel requested",
    )
    try:
        get_gateway().cancel_order(
            account_id=order.account.broker_account_id, order_id=order.broker_order_id
        )
    except BrokerRejected as exc:
        # E.g. the order filled a moment ago: the broker's view of the order says what it is.
        logger.info("broker refused to cancel order %s: %s", order.pk, exc)
        return _reconcile(
            order,
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason=f"cancel refused by the broker: {exc.broker_message or ''}",
        )
    except GatewayError as exc:
        # Ambiguous or not sent: stay pending_cancel; the stream or the sweeper settles it.
        logger.warning("cancel of order %s not confirmed: %s", order.pk, exc)
        return _reconcile(
            order,
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason="cancel outcome unknown; broker state adopted",
        )
    return _reconcile(
        order,
        trigger=TransitionTrigger.BROKER_REST,
        actor=actor,
        reason="cancel accepted by the broker",
    )


def order_modify(
    *,
    order_id: object,
    expected_version: int | None,
    changes: dict[str, Any],
    actor: str,
    trigger: str = TransitionTrigger.API,
) -> Order:
    order = Order.objects.select_related("account").get(pk=order_id)
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict(current=order, expected_version=expected_version)
    if order.status in {OrderStatus.SUBMITTING, OrderStatus.UNKNOWN, OrderStatus.CREATED}:
        raise OutcomeNotKnownYet(order_id=order.pk, from_state=order.status, to_state=order.status)
    if order.status not in _MODIFIABLE:
        raise IllegalTransition(order_id=order.pk, from_state=order.status, to_state=order.status)

    new_size = changes.get("size", order.size)
    if new_size <= order.filled_size:
        raise InvalidOrder({"size": [f"must be above the {order.filled_size} already filled"]})
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
            **prices,
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
    return order_update(
        order_id=order.pk,
        changes=changes,
        trigger=trigger,
        actor=actor,
        reason=f"modified at {timezone.now().isoformat()}",
    )
