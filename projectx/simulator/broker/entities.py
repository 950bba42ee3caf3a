"""What the simulated broker holds and publishes: users, accounts, contracts, orders, trades,
positions and events, each with its wire form; and the requests and results of order entry.

The dataclasses are plain records. The rules that change them live in `rules`, `matching` and
`brackets`, always called by the `Broker` facade under its lock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from projectx.enums import (
    EVENT_ACCOUNT,
    EVENT_ORDER,
    EVENT_POSITION,
    EVENT_TRADE,
    EventAction,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrderErrorCode,
    PositionType,
)
from projectx.simulator.wire import format_timestamp

EventKind = Literal["order", "trade", "position", "account"]
EVENT_NAMES: dict[str, str] = {
    "order": EVENT_ORDER,
    "trade": EVENT_TRADE,
    "position": EVENT_POSITION,
    "account": EVENT_ACCOUNT,
}

DEFAULT_ACCOUNT_BALANCE = Decimal("50000")
DEFAULT_FEE_PER_CONTRACT = Decimal("0.37")
DEFAULT_REJECTION_MESSAGE = "Order rejected by the simulator."

OPEN_ORDER_STATUSES = frozenset(
    {OrderStatus.OPEN, OrderStatus.PENDING, OrderStatus.PENDING_CANCELLATION}
)
"""Orders working in the market, which Order/modify may change."""
SEARCH_OPEN_STATUSES = frozenset({OrderStatus.OPEN})
"""What Order/searchOpen returns: status 1 only, never Suspended (8) bracket children [4.7]."""
ACTIVE_ORDER_STATUSES = OPEN_ORDER_STATUSES | {OrderStatus.SUSPENDED}
"""Orders that can still be cancelled: the open ones and the bracket children waiting for entry."""

_NULL_PRICE_FIELDS_OMITTED_ON_STREAM = ("limitPrice", "stopPrice", "trailPrice", "filledPrice")


@dataclass
class User:
    username: str
    api_key: str


@dataclass
class Account:
    id: int
    name: str
    balance: Decimal
    can_trade: bool = True
    is_visible: bool = True
    simulated: bool = True
    active: bool = True
    """Used by `onlyActiveAccounts`; not on the wire."""
    owner: str | None = None
    """The only username that sees this account; None means every user sees it."""
    auto_oco_brackets: bool = True
    """False = "Position Brackets" mode, in which orders with brackets are rejected [4.4]."""
    initial_balance: Decimal = Decimal("0")

    def visible_to(self, username: str) -> bool:
        return self.owner in (None, username)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "balance": self.balance,
            "canTrade": self.can_trade,
            "isVisible": self.is_visible,
            "simulated": self.simulated,
        }


@dataclass
class Contract:
    id: str
    name: str
    description: str
    tick_size: Decimal
    tick_value: Decimal
    symbol_id: str
    active: bool = True
    fee_per_contract: Decimal = DEFAULT_FEE_PER_CONTRACT

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "tickSize": self.tick_size,
            "tickValue": self.tick_value,
            "activeContract": self.active,
            "symbolId": self.symbol_id,
        }

    def on_tick(self, price: Decimal) -> bool:
        return price % self.tick_size == 0


@dataclass
class BracketLeg:
    ticks: int
    type: OrderType


@dataclass
class Order:
    id: int
    account_id: int
    contract_id: str
    symbol_id: str
    creation_timestamp: datetime
    update_timestamp: datetime
    status: OrderStatus
    type: OrderType
    side: OrderSide
    size: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    trail_distance: int | None = None
    fill_volume: int = 0
    filled_price: Decimal | None = None
    custom_tag: str | None = None
    parent_order_id: int | None = None
    linked_order_id: int | None = None
    # Simulator-only state, never on the wire.
    fill_plan: list[int] = field(default_factory=list)
    triggered: bool = False
    trail_extreme: Decimal | None = None
    bracket_ticks: int | None = None
    stop_loss: BracketLeg | None = None
    take_profit: BracketLeg | None = None

    @property
    def remaining(self) -> int:
        return self.size - self.fill_volume

    @property
    def is_buy(self) -> bool:
        return self.side == OrderSide.BID

    def start_trailing(self, *, from_price: Decimal, distance: Decimal, tick_size: Decimal) -> None:
        """Make this trailing stop trail `distance` behind `from_price` [4.4].

        On read-back `trailPrice` holds the distance in price units, `trailDistance` the ticks
        and `stopPrice` the current trigger level.
        """
        self.trail_price = distance
        self.trail_distance = int(distance / tick_size)
        self.trail_extreme = from_price
        self.stop_price = self.trailing_stop_level(from_price)

    def trailing_stop_level(self, price: Decimal) -> Decimal:
        """Where the trigger sits while the best price seen is `price`: behind it by the trail."""
        assert self.trail_price is not None
        return price + self.trail_price if self.is_buy else price - self.trail_price

    def to_wire(self, *, for_stream: bool = False) -> dict[str, Any]:
        """The order object; on the stream null price fields are left out, as seen live [6.2]."""
        wire: dict[str, Any] = {
            "id": self.id,
            "accountId": self.account_id,
            "contractId": self.contract_id,
            "symbolId": self.symbol_id,
            "creationTimestamp": format_timestamp(self.creation_timestamp),
            "updateTimestamp": format_timestamp(self.update_timestamp),
            "status": int(self.status),
            "type": int(self.type),
            "side": int(self.side),
            "size": self.size,
            "limitPrice": self.limit_price,
            "stopPrice": self.stop_price,
            "trailPrice": self.trail_price,
            "fillVolume": self.fill_volume,
            "filledPrice": self.filled_price,
            "customTag": self.custom_tag,
        }
        if self.trail_distance is not None:
            wire["trailDistance"] = self.trail_distance
        if self.parent_order_id is not None:
            wire["parentOrderId"] = self.parent_order_id
        if self.linked_order_id is not None:
            wire["linkedOrderId"] = self.linked_order_id
        if for_stream:
            for name in _NULL_PRICE_FIELDS_OMITTED_ON_STREAM:
                if wire[name] is None:
                    del wire[name]
        return wire


@dataclass
class Trade:
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: datetime
    price: Decimal
    profit_and_loss: Decimal | None
    fees: Decimal
    side: OrderSide
    size: int
    order_id: int
    voided: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "accountId": self.account_id,
            "contractId": self.contract_id,
            "creationTimestamp": format_timestamp(self.creation_timestamp),
            "price": self.price,
            "profitAndLoss": self.profit_and_loss,
            "fees": self.fees,
            "side": int(self.side),
            "size": self.size,
            "voided": self.voided,
            "orderId": self.order_id,
        }


@dataclass
class Position:
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: datetime
    net: int
    """Signed: positive long, negative short. The wire shows `type` and a positive `size`."""
    average_price: Decimal

    def to_wire(self) -> dict[str, Any]:
        if self.net > 0:
            position_type = PositionType.LONG
        elif self.net < 0:
            position_type = PositionType.SHORT
        else:
            position_type = PositionType.UNDEFINED
        return {
            "id": self.id,
            "accountId": self.account_id,
            "contractId": self.contract_id,
            "creationTimestamp": format_timestamp(self.creation_timestamp),
            "type": int(position_type),
            "size": abs(self.net),
            "averagePrice": self.average_price,
        }


@dataclass(frozen=True)
class BrokerEvent:
    """One state change, already in wire form (a snapshot taken when it happened).

    `action` is 0 create, 1 update, 2 delete (close) for orders, positions and accounts; trades
    go out with action 0 when made and 1 when voided [6.2].
    """

    kind: EventKind
    account_id: int
    action: EventAction
    data: dict[str, Any]

    @property
    def event_name(self) -> str:
        return EVENT_NAMES[self.kind]

    def envelope(self) -> dict[str, Any]:
        """The single hub argument: the `{action, data}` wrapper seen live [6.2]."""
        return {"action": int(self.action), "data": self.data}


EventListener = Callable[[BrokerEvent], None]


@dataclass(frozen=True)
class PlaceOrderRequest:
    account_id: int
    contract_id: str
    type: int
    side: int
    size: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    custom_tag: str | None = None
    linked_order_id: int | None = None
    stop_loss_bracket: BracketLeg | None = None
    take_profit_bracket: BracketLeg | None = None

    @property
    def has_brackets(self) -> bool:
        return self.stop_loss_bracket is not None or self.take_profit_bracket is not None


@dataclass(frozen=True)
class PlaceOrderResult:
    order_id: int | None
    error_code: PlaceOrderErrorCode
    error_message: str | None = None

    @property
    def success(self) -> bool:
        return self.error_code == PlaceOrderErrorCode.SUCCESS


@dataclass(frozen=True)
class OrderChanges:
    """An Order/modify: a None field stays unchanged (unconfirmed [4.5]; what clients assume)."""

    size: int | None = None
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None


@dataclass(frozen=True)
class OrderRejection:
    """An injected reject for the next Order/place (see `Faults.reject_orders`)."""

    error_code: int
    message: str
    create_order: bool


CloseOutcome = Literal[
    "ok", "account_not_found", "position_not_found", "contract_not_found", "invalid_size"
]


def symbol_id_for(contract_id: str) -> str:
    """`CON.F.US.MNQ.Z26` -> `F.US.MNQ` (the grammar is inferred [2]; fine for our own data)."""
    parts = contract_id.split(".")
    if len(parts) >= 5 and parts[0] == "CON":
        return ".".join(parts[1:-1])
    return contract_id
