"""Our orders take the broker's view of them, read through REST one by one.

For the actions that must end with our books matching the broker's (the position close, the
kill switch): an order whose cancel answer was lost with the process that sent it, or that the
broker ended meanwhile, is still working here until the broker's own account of it is adopted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from accounts.gateway import get_gateway
from orders.exceptions import OrderError
from orders.models import TransitionTrigger
from orders.services import order_apply_broker_order
from projectx.errors import GatewayError

logger = logging.getLogger(__name__)

# Each look-up is bounded: a slow broker leaves the order to the stream or the stuck sweep.
RECONCILE_BUDGET_SECONDS = 2.0


def orders_adopt_broker_view(
    *, orders: Any, actor: str, during: str, before_each: Callable[[], None]
) -> None:
    """Every order of `orders` (a queryset) with a broker id takes the broker's view of it,
    audited with "<during>: the broker's view of the order adopted". `before_each` runs before
    each broker call (a lease renewed)."""
    gateway = get_gateway()
    for order in orders.select_related("account").exclude(broker_order_id=None):
        before_each()
        try:
            wire = gateway.get_order(
                account_id=order.account.broker_account_id,
                order_id=order.broker_order_id,
                budget=RECONCILE_BUDGET_SECONDS,
            )
            order_apply_broker_order(
                order_id=order.pk,
                broker_order=wire,
                trigger=TransitionTrigger.BROKER_REST,
                actor=actor,
                reason=f"{during}: the broker's view of the order adopted",
            )
        except (GatewayError, OrderError) as exc:  # the stream or the stuck sweep settles it
            logger.warning("order %s not reconciled during %s: %s", order.pk, during, exc)
