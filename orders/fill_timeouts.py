"""Orders that stopped filling: found from stored times (so it survives restarts) and handled
with the configured `partialFillTracking.timeoutAction`. The listener's sweep runs it; which
orders are due is the lifecycle's decision (`lifecycle.fill_timeout_due`)."""

from __future__ import annotations

import logging
from datetime import datetime

from accounts.gateway import get_gateway
from common import metrics
from orders import lifecycle
from orders.amend import order_cancel, require_broker_order_id
from orders.models import Order, TransitionTrigger
from orders.services import order_apply_broker_order, order_update

logger = logging.getLogger(__name__)


def orders_past_fill_timeout(*, now: datetime) -> list[Order]:
    """Orders with no completion `partialFillTracking.timeoutSeconds` after their last fill
    (or submission), not yet handled since. Derived from stored times: survives restarts."""
    return list(
        Order.objects.filter(lifecycle.fill_timeout_due(now=now))
        .select_related("account")
        .order_by("last_fill_at")[:200]
    )


def order_handle_fill_timeout(*, order: Order, action: str, now: datetime) -> str:
    """Run the configured action for one overdue order: `alert`, `verify` or `cancel_remaining`.

    The order is marked handled first (a write under its version), so two listeners never both
    act on it, and a new fill re-arms the timer.
    """
    try:
        order_update(
            order_id=order.pk,
            expected_version=order.version,
            changes={"fill_timeout_handled_at": now},
            trigger=TransitionTrigger.SWEEPER,
            reason=f"no completion within the fill timeout: {action}",
        )
    except Exception:  # lost the race to another process: it handles this one
        return "skipped"
    metrics.order_fill_timeouts_total.labels(action).inc()
    logger.error(
        "ALERT order %s (%s, %d of %d filled) has not completed within the fill "
        "timeout; action: %s",
        order.pk,
        order.status,
        order.filled_size,
        order.size,
        action,
    )
    if action == "verify":
        wire = get_gateway().get_order(
            account_id=order.account.broker_account_id,
            order_id=require_broker_order_id(order),
            budget=5.0,
        )
        order_apply_broker_order(
            order_id=order.pk,
            broker_order=wire,
            trigger=TransitionTrigger.SWEEPER,
            reason="fill timeout: verified with the broker",
        )
    elif action == "cancel_remaining":
        order_cancel(
            order_id=order.pk,
            expected_version=None,
            actor="fill-timeout",
            trigger=TransitionTrigger.SWEEPER,
        )
    return action
