"""The market hub's names and numbers (reference sections 5 and 6.3), exact as on the wire.

They live with the simulator for now; the client side may move them to `projectx.enums`.
"""

from __future__ import annotations

from enum import IntEnum


class TradeLogType(IntEnum):
    """A market trade's aggressor."""

    BUY = 0
    SELL = 1


class DomType(IntEnum):
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
