"""The one table that maps the broker's order statuses onto our lifecycle states."""

from __future__ import annotations

from orders.models import OrderStatus
from projectx.enums import OrderStatus as BrokerStatus

# Pending (6) and Suspended (8, bracket children waiting for their entry) count as working.
# None (0) carries no information and maps to nothing.
_BROKER_TO_LOCAL: dict[BrokerStatus, str | None] = {
    BrokerStatus.NONE: None,
    BrokerStatus.OPEN: OrderStatus.OPEN,
    BrokerStatus.PENDING: OrderStatus.OPEN,
    BrokerStatus.SUSPENDED: OrderStatus.OPEN,
    BrokerStatus.PENDING_CANCELLATION: OrderStatus.PENDING_CANCEL,
    BrokerStatus.FILLED: OrderStatus.FILLED,
    BrokerStatus.CANCELLED: OrderStatus.CANCELLED,
    BrokerStatus.EXPIRED: OrderStatus.EXPIRED,
    BrokerStatus.REJECTED: OrderStatus.REJECTED,
}


def local_state_for(broker_status: int, *, filled_size: int = 0) -> str | None:
    """Our state for a broker status; a working order with fills is partially filled.

    Returns None when the broker's status says nothing we can act on.
    """
    state = _BROKER_TO_LOCAL[BrokerStatus(broker_status)]
    if state == OrderStatus.OPEN and filled_size > 0:
        return OrderStatus.PARTIALLY_FILLED
    return state
