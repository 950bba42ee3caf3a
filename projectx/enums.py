"""The ProjectX Gateway's enums, with the exact names and numbers of the wire protocol.

Source: ../shared/reference/projectx-gateway.md section 5. These are shared by the client and
the simulator so that both speak exactly the same numbers.
"""

from __future__ import annotations

from enum import IntEnum


class OrderSide(IntEnum):
    BID = 0  # buy
    ASK = 1  # sell


class OrderType(IntEnum):
    UNKNOWN = 0
    LIMIT = 1
    MARKET = 2
    STOP_LIMIT = 3
    STOP = 4
    TRAILING_STOP = 5
    JOIN_BID = 6
    JOIN_ASK = 7


class OrderStatus(IntEnum):
    NONE = 0
    OPEN = 1
    FILLED = 2
    CANCELLED = 3
    EXPIRED = 4
    REJECTED = 5
    PENDING = 6
    PENDING_CANCELLATION = 7
    SUSPENDED = 8

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_ORDER_STATUSES

    @property
    def is_working(self) -> bool:
        return self in WORKING_ORDER_STATUSES


TERMINAL_ORDER_STATUSES = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED}
)
WORKING_ORDER_STATUSES = frozenset(
    {
        OrderStatus.OPEN,
        OrderStatus.PENDING,
        OrderStatus.SUSPENDED,
        OrderStatus.PENDING_CANCELLATION,
    }
)


class PositionType(IntEnum):
    UNDEFINED = 0
    LONG = 1
    SHORT = 2


class AggregateBarUnit(IntEnum):
    UNSPECIFIED = 0
    SECOND = 1
    MINUTE = 2
    HOUR = 3
    DAY = 4
    WEEK = 5
    MONTH = 6
    TICK = 7


class EventAction(IntEnum):
    """The `action` of a user-hub `{action, data}` envelope.

    Unconfirmed for the gateway (reference section 6.2); we follow ProjectX's admin API, which
    documents 0 create, 1 update, 2 delete. Consumers must not depend on it beyond "2 on a
    position means closed".
    """

    CREATE = 0
    UPDATE = 1
    DELETE = 2


# User hub: what the client invokes, and the events the server pushes.
HUB_SUBSCRIBE_ACCOUNTS = "SubscribeAccounts"
HUB_SUBSCRIBE_ORDERS = "SubscribeOrders"
HUB_SUBSCRIBE_POSITIONS = "SubscribePositions"
HUB_SUBSCRIBE_TRADES = "SubscribeTrades"
HUB_UNSUBSCRIBE_ACCOUNTS = "UnsubscribeAccounts"
HUB_UNSUBSCRIBE_ORDERS = "UnsubscribeOrders"
HUB_UNSUBSCRIBE_POSITIONS = "UnsubscribePositions"
HUB_UNSUBSCRIBE_TRADES = "UnsubscribeTrades"

EVENT_ACCOUNT = "GatewayUserAccount"
EVENT_ORDER = "GatewayUserOrder"
EVENT_POSITION = "GatewayUserPosition"
EVENT_TRADE = "GatewayUserTrade"
USER_HUB_EVENTS = (EVENT_ACCOUNT, EVENT_ORDER, EVENT_POSITION, EVENT_TRADE)
