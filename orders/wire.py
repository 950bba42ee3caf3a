"""The one place that translates between our order enums and the broker's wire enums.

Placement and modify send `to_wire_*`; verification compares with them; the fills app reads
the broker's events back with `from_wire_*`; `local_state_for` maps a broker order status onto
the lifecycle (the lifecycle module decides what to do with it).
"""

from __future__ import annotations

from orders.models import OrderSide, OrderStatus, OrderType
from projectx import enums
from projectx.enums import OrderStatus as BrokerStatus

_SIDE_TO_WIRE: dict[str, enums.OrderSide] = {
    OrderSide.BUY: enums.OrderSide.BID,
    OrderSide.SELL: enums.OrderSide.ASK,
}
_TYPE_TO_WIRE: dict[str, enums.OrderType] = {
    OrderType.MARKET: enums.OrderType.MARKET,
    OrderType.LIMIT: enums.OrderType.LIMIT,
    OrderType.STOP: enums.OrderType.STOP,
    OrderType.STOP_LIMIT: enums.OrderType.STOP_LIMIT,
    OrderType.TRAILING_STOP: enums.OrderType.TRAILING_STOP,
    OrderType.JOIN_BID: enums.OrderType.JOIN_BID,
    OrderType.JOIN_ASK: enums.OrderType.JOIN_ASK,
}
_SIDE_FROM_WIRE = {wire: local for local, wire in _SIDE_TO_WIRE.items()}
_TYPE_FROM_WIRE = {wire: local for local, wire in _TYPE_TO_WIRE.items()}

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


def to_wire_side(side: str) -> enums.OrderSide:
    return _SIDE_TO_WIRE[side]


def to_wire_type(order_type: str) -> enums.OrderType:
    return _TYPE_TO_WIRE[order_type]


def from_wire_side(side: int) -> str:
    return _SIDE_FROM_WIRE[enums.OrderSide(side)]


def from_wire_type(order_type: int) -> str:
    """Our type for the broker's; a type we do not model is mirrored as a market order."""
    try:
        wire = enums.OrderType(order_type)
    except ValueError:
        return OrderType.MARKET
    return _TYPE_FROM_WIRE.get(wire, OrderType.MARKET)


def local_state_for(broker_status: int, *, filled_size: int = 0) -> str | None:
    """Our state for a broker status; a working order with fills is partially filled.

    Returns None when the broker's status says nothing we can act on.
    """
    state = _BROKER_TO_LOCAL[BrokerStatus(broker_status)]
    if state == OrderStatus.OPEN and filled_size > 0:
        return OrderStatus.PARTIALLY_FILLED
    return state
