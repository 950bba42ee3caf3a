"""The simulator's deterministic in-memory broker: accounts, contracts, orders, fills, positions.

    from projectx.simulator.broker import Broker, PlaceOrderRequest

One concern a module:

- `facade`: `Broker`, the thread-safe public methods (setup, snapshots, REST queries, test
  controls, order entry) and the one lock they all take; `BrokerError`.
- `entities`: the records (users, accounts, contracts, orders, trades, positions, events) and
  their wire forms; the requests and results of order entry.
- `state`: `BrokerState`, everything the broker knows, and how changes are published as events.
- `rules`: which place/modify/cancel requests are refused, with which error code and message.
- `matching`: orders entering the book and filling against prices (stops, trailing stops, fill
  plans), and what a fill does to the position and the balance.
- `brackets`: stop-loss and take-profit children and their OCO rules.

Each module's docstring lists the choices it makes where the reference says "unconfirmed".
"""

from __future__ import annotations

from projectx.simulator.broker.entities import (
    DEFAULT_ACCOUNT_BALANCE,
    DEFAULT_FEE_PER_CONTRACT,
    DEFAULT_REJECTION_MESSAGE,
    EVENT_NAMES,
    Account,
    BracketLeg,
    BrokerEvent,
    CloseOutcome,
    Contract,
    EventKind,
    EventListener,
    Order,
    OrderChanges,
    OrderRejection,
    PlaceOrderRequest,
    PlaceOrderResult,
    Position,
    Trade,
    User,
    symbol_id_for,
)
from projectx.simulator.broker.facade import Broker, BrokerError
from projectx.simulator.broker.rules import MAX_TRAIL_TICKS
from projectx.simulator.broker.state import FIRST_ORDER_ID, FIRST_POSITION_ID, FIRST_TRADE_ID

__all__ = [
    "DEFAULT_ACCOUNT_BALANCE",
    "DEFAULT_FEE_PER_CONTRACT",
    "DEFAULT_REJECTION_MESSAGE",
    "EVENT_NAMES",
    "FIRST_ORDER_ID",
    "FIRST_POSITION_ID",
    "FIRST_TRADE_ID",
    "MAX_TRAIL_TICKS",
    "Account",
    "BracketLeg",
    "Broker",
    "BrokerError",
    "BrokerEvent",
    "CloseOutcome",
    "Contract",
    "EventKind",
    "EventListener",
    "Order",
    "OrderChanges",
    "OrderRejection",
    "PlaceOrderRequest",
    "PlaceOrderResult",
    "Position",
    "Trade",
    "User",
    "symbol_id_for",
]
