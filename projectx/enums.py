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


class TradeLogType(IntEnum):
    """A market trade's aggressor (market hub `GatewayTrade.type`)."""

    BUY = 0
    SELL = 1


class DomType(IntEnum):
    """A market-depth entry's kind (market hub `GatewayDepth.type`)."""

    UNKNOWN = 0
    ASK = 1
    BID = 2
    BEST_ASK = 3
    BEST_BID = 4
    TRADE = 5
    RESET = 6
    LOW = 7
    HIGH = 8
    NEW_BEST_BID = 9
    NEW_BEST_ASK = 10
    FILL = 11


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

# Market hub (section 6.3): per-contract subscriptions; events carry (contractId, data).
HUB_SUBSCRIBE_CONTRACT_QUOTES = "SubscribeContractQuotes"
HUB_SUBSCRIBE_CONTRACT_TRADES = "SubscribeContractTrades"
HUB_SUBSCRIBE_CONTRACT_MARKET_DEPTH = "SubscribeContractMarketDepth"
HUB_UNSUBSCRIBE_CONTRACT_QUOTES = "UnsubscribeContractQuotes"
HUB_UNSUBSCRIBE_CONTRACT_TRADES = "UnsubscribeContractTrades"
HUB_UNSUBSCRIBE_CONTRACT_MARKET_DEPTH = "UnsubscribeContractMarketDepth"

EVENT_QUOTE = "GatewayQuote"
EVENT_MARKET_TRADE = "GatewayTrade"
EVENT_DEPTH = "GatewayDepth"
MARKET_HUB_EVENTS = (EVENT_QUOTE, EVENT_MARKET_TRADE, EVENT_DEPTH)


# Per-endpoint `errorCode` enums (reference section 3 and 4; names and numbers from the SPEC).
# The envelope's errorCode means something different on every endpoint, so each has its own enum.


class LoginErrorCode(IntEnum):
    SUCCESS = 0
    USER_NOT_FOUND = 1
    PASSWORD_VERIFICATION_FAILED = 2
    INVALID_CREDENTIALS = 3
    APP_NOT_FOUND = 4
    APP_VERIFICATION_FAILED = 5
    INVALID_DEVICE = 6
    AGREEMENTS_NOT_SIGNED = 7
    UNKNOWN_ERROR = 8
    API_SUBSCRIPTION_NOT_FOUND = 9
    API_KEY_AUTHENTICATION_DISABLED = 10


class ValidateErrorCode(IntEnum):
    SUCCESS = 0
    INVALID_SESSION = 1
    SESSION_NOT_FOUND = 2
    EXPIRED_TOKEN = 3
    UNKNOWN_ERROR = 4


class LogoutErrorCode(IntEnum):
    SUCCESS = 0
    INVALID_SESSION = 1
    UNKNOWN_ERROR = 2


class SearchAccountErrorCode(IntEnum):
    SUCCESS = 0


class SearchContractErrorCode(IntEnum):
    """Contract/search and Contract/available."""

    SUCCESS = 0


class SearchContractByIdErrorCode(IntEnum):
    SUCCESS = 0
    CONTRACT_NOT_FOUND = 1


class RetrieveBarErrorCode(IntEnum):
    SUCCESS = 0
    CONTRACT_NOT_FOUND = 1
    UNIT_INVALID = 2
    UNIT_NUMBER_INVALID = 3
    LIMIT_INVALID = 4


class PlaceOrderErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
    ORDER_REJECTED = 2
    INSUFFICIENT_FUNDS = 3
    ACCOUNT_VIOLATION = 4
    OUTSIDE_TRADING_HOURS = 5
    ORDER_PENDING = 6
    UNKNOWN_ERROR = 7
    CONTRACT_NOT_FOUND = 8
    CONTRACT_NOT_ACTIVE = 9
    ACCOUNT_REJECTED = 10


class ModifyOrderErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
    ORDER_NOT_FOUND = 2
    REJECTED = 3
    PENDING = 4
    UNKNOWN_ERROR = 5
    ACCOUNT_REJECTED = 6
    CONTRACT_NOT_FOUND = 7


class CancelOrderErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
    ORDER_NOT_FOUND = 2
    REJECTED = 3
    PENDING = 4
    UNKNOWN_ERROR = 5
    ACCOUNT_REJECTED = 6


class SearchOrderErrorCode(IntEnum):
    """Order/search and Order/searchOpen."""

    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1


class SearchOrderByIdErrorCode(IntEnum):
    SUCCESS = 0
    ORDER_NOT_FOUND = 1


class SearchPositionErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1


class ClosePositionErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
    POSITION_NOT_FOUND = 2
    CONTRACT_NOT_FOUND = 3
    CONTRACT_NOT_ACTIVE = 4
    ORDER_REJECTED = 5
    ORDER_PENDING = 6
    UNKNOWN_ERROR = 7
    ACCOUNT_REJECTED = 8


class PartialClosePositionErrorCode(IntEnum):
    """Position/partialCloseContract: the codes shift by one against closeContract."""

    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
    POSITION_NOT_FOUND = 2
    CONTRACT_NOT_FOUND = 3
    CONTRACT_NOT_ACTIVE = 4
    INVALID_CLOSE_SIZE = 5
    ORDER_REJECTED = 6
    ORDER_PENDING = 7
    UNKNOWN_ERROR = 8
    ACCOUNT_REJECTED = 9


class SearchTradeErrorCode(IntEnum):
    SUCCESS = 0
    ACCOUNT_NOT_FOUND = 1
