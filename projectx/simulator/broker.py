"""The simulator's deterministic in-memory broker: accounts, contracts, orders, fills, positions.

Everything here is synchronous and guarded by one re-entrant lock, because tests call it from their
own thread while the aiohttp handlers call it from the simulator's event-loop thread. Every state
change is published to listeners as a `BrokerEvent` *while the lock is held*, so listeners see
events in exactly the order the broker made them (the hub relays them with
`loop.call_soon_threadsafe`, which keeps that order).

Choices where the reference says "unconfirmed" (reference section numbers in brackets):

- Fill prices: a market order (and a triggered stop) fills at the contract's current price; a limit
  order that is marketable when placed or modified fills at the current price (never worse than
  its limit), and one that rests fills at its limit price when a later price touches or crosses it.
- StopLimit (3) is placeable [4.4]: it triggers like a stop, then works as a limit. A stop whose
  trigger is already on the wrong side of the current price is rejected (errorCode 2).
- JoinBid (6) / JoinAsk (7): the simulator has a single price per contract and no book, so a
  JoinBid rests as a buy limit one tick below the current price, a JoinAsk one tick above.
- TrailingStop (5) follows the reference [4.4]: `trailPrice` on place is an absolute price, the
  distance is |last - trailPrice| in whole ticks (1..1000); on read-back `trailPrice` holds the
  distance in price units, `trailDistance` the ticks and `stopPrice` the current trigger level.
- Validation rejects (bad size, side, type, price off tick, duplicate customTag, ...) create no
  order and return `orderId: null`. Rejects injected with `reject_next_orders(create_order=True)`
  and the "Position Brackets" bracket reject do create an order in status 5 Rejected and return
  its id with `success: false`, as seen live [4.4].
- `customTag` is unique per account forever (over every order ever created on it, whatever its
  state); an empty string counts as no tag.
- Brackets [4.4]: the sign of `ticks` is ignored; the stop loss always goes on the losing side and
  the take profit on the winning side. Children are created Suspended (8) with no price, become
  Open (1) when the entry is completely filled (or is cancelled after a partial fill, for the
  filled size), and are cancelled with the entry otherwise. Only the TP carries `linkedOrderId`
  (= the SL id), as seen live. A partial fill of one leg shrinks the other; a complete fill, or
  the position going flat, cancels the working children.
- A fill that reverses a position is recorded as one trade whose `profitAndLoss` is the P&L of
  the closed part; the position is closed (action 2) and a new one, with a new id, opened.
- `profitAndLoss` is gross (fees are separate), rounded to cents; `fees` = the contract's fee per
  contract x size. The account balance moves by P&L minus fees and a `GatewayUserAccount` update
  goes out. Voiding a trade only flags it (`voided: true`) and re-sends it; it does not unwind the
  position or the balance.
- Order/searchOpen returns Open (1), Pending (6) and PendingCancellation (7) orders, never
  Suspended (8) bracket children [4.7].
- Event `action`: 0 create, 1 update, 2 delete (close) for orders, positions and accounts; trades
  go out with action 0 when made and 1 when voided [6.2].
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from projectx.enums import (
    EVENT_ACCOUNT,
    EVENT_ORDER,
    EVENT_POSITION,
    EVENT_TRADE,
    CancelOrderErrorCode,
    EventAction,
    ModifyOrderErrorCode,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrderErrorCode,
    PositionType,
)
from projectx.simulator.wire import MonotonicClock, format_timestamp

EventKind = Literal["order", "trade", "position", "account"]
EVENT_NAMES: dict[str, str] = {
    "order": EVENT_ORDER,
    "trade": EVENT_TRADE,
    "position": EVENT_POSITION,
    "account": EVENT_ACCOUNT,
}

FIRST_ORDER_ID = 9001
FIRST_TRADE_ID = 70001
FIRST_POSITION_ID = 501
MAX_TRAIL_TICKS = 1000
DEFAULT_FEE_PER_CONTRACT = Decimal("0.37")

_AVERAGE_QUANTUM = Decimal("0.000000001")
_CENT = Decimal("0.01")
_OPEN_ORDER_STATUSES = frozenset(
    {OrderStatus.OPEN, OrderStatus.PENDING, OrderStatus.PENDING_CANCELLATION}
)
_ACTIVE_ORDER_STATUSES = _OPEN_ORDER_STATUSES | {OrderStatus.SUSPENDED}
_NULL_PRICE_FIELDS_OMITTED_ON_STREAM = ("limitPrice", "stopPrice", "trailPrice", "filledPrice")


class BrokerError(Exception):
    """A misuse of the simulator's Python API (unknown order id, bad fill size, ...)."""


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
    """One state change, already in wire form (a snapshot taken when it happened)."""

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


@dataclass(frozen=True)
class PlaceOrderResult:
    order_id: int | None
    error_code: PlaceOrderErrorCode
    error_message: str | None = None

    @property
    def success(self) -> bool:
        return self.error_code == PlaceOrderErrorCode.SUCCESS


@dataclass(frozen=True)
class OrderRejection:
    """An injected reject for the next Order/place (see `Faults.reject_orders`)."""

    error_code: int
    message: str
    create_order: bool


CloseOutcome = Literal[
    "ok", "account_not_found", "position_not_found", "contract_not_found", "invalid_size"
]

EventListener = Callable[[BrokerEvent], None]


def symbol_id_for(contract_id: str) -> str:
    """`CON.F.US.MNQ.Z26` -> `F.US.MNQ` (the grammar is inferred [2]; fine for our own data)."""
    parts = contract_id.split(".")
    if len(parts) >= 5 and parts[0] == "CON":
        return ".".join(parts[1:-1])
    return contract_id


def _quantize(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN)


class Broker:
    """A small deterministic futures broker. All public methods are thread-safe."""

    def __init__(self, clock: MonotonicClock | None = None) -> None:
        self._lock = threading.RLock()
        self.clock = clock or MonotonicClock()
        self._users: dict[str, User] = {}
        self._accounts: dict[int, Account] = {}
        self._contracts: dict[str, Contract] = {}
        self._prices: dict[str, Decimal] = {}
        self._orders: dict[int, Order] = {}
        self._trades: dict[int, Trade] = {}
        self._positions: dict[tuple[int, str], Position] = {}
        self._tags_used: dict[int, set[str]] = {}
        self._next_order_fill_plans: list[tuple[int | None, list[int]]] = []
        self._pending_rejections: list[OrderRejection] = []
        self._order_ids = itertools.count(FIRST_ORDER_ID)
        self._trade_ids = itertools.count(FIRST_TRADE_ID)
        self._position_ids = itertools.count(FIRST_POSITION_ID)
        self._listeners: list[EventListener] = []
        self._event_log: list[BrokerEvent] = []

    # ------------------------------------------------------------------ setup

    def add_user(self, username: str, api_key: str) -> User:
        with self._lock:
            user = User(username=username, api_key=api_key)
            self._users[username] = user
            return user

    def add_account(
        self,
        id: int,
        name: str,
        balance: Decimal = Decimal("50000"),
        *,
        can_trade: bool = True,
        is_visible: bool = True,
        simulated: bool = True,
        active: bool = True,
        owner: str | None = None,
        auto_oco_brackets: bool = True,
    ) -> Account:
        with self._lock:
            balance = Decimal(balance)
            account = Account(
                id=id,
                name=name,
                balance=balance,
                can_trade=can_trade,
                is_visible=is_visible,
                simulated=simulated,
                active=active,
                owner=owner,
                auto_oco_brackets=auto_oco_brackets,
                initial_balance=balance,
            )
            self._accounts[id] = account
            return account

    def update_account(self, account_id: int, **changes: Any) -> None:
        """Change account fields (e.g. `can_trade=False`) and publish a GatewayUserAccount."""
        with self._lock:
            account = self._require_account(account_id)
            for name, value in changes.items():
                if not hasattr(account, name):
                    raise BrokerError(f"accounts have no field {name!r}")
                setattr(account, name, value)
            self._emit("account", account.id, EventAction.UPDATE, account.to_wire())

    def add_contract(
        self,
        id: str,
        name: str,
        tick_size: Decimal,
        tick_value: Decimal,
        *,
        description: str | None = None,
        symbol_id: str | None = None,
        active: bool = True,
        fee_per_contract: Decimal = DEFAULT_FEE_PER_CONTRACT,
    ) -> Contract:
        with self._lock:
            contract = Contract(
                id=id,
                name=name,
                description=description if description is not None else name,
                tick_size=Decimal(tick_size),
                tick_value=Decimal(tick_value),
                symbol_id=symbol_id or symbol_id_for(id),
                active=active,
                fee_per_contract=Decimal(fee_per_contract),
            )
            self._contracts[id] = contract
            return contract

    def set_price(self, contract_id: str, price: Decimal) -> None:
        """Move the contract's price and give every working order on it one chance to fill."""
        with self._lock:
            contract = self._require_contract(contract_id)
            price = Decimal(price)
            if price <= 0:
                raise BrokerError("a price must be positive")
            if not contract.on_tick(price):
                raise BrokerError(f"{price} is off the {contract.tick_size} tick of {contract.id}")
            self._prices[contract_id] = price
            working = sorted(
                (
                    order
                    for order in self._orders.values()
                    if order.contract_id == contract_id and order.status == OrderStatus.OPEN
                ),
                key=lambda order: order.id,
            )
            for order in working:
                # An earlier fill in this loop may have cancelled or shrunk this one (brackets).
                if order.status == OrderStatus.OPEN and order.remaining > 0:
                    self._on_price(order, price)

    def price(self, contract_id: str) -> Decimal | None:
        with self._lock:
            return self._prices.get(contract_id)

    def add_listener(self, listener: EventListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def reset(self) -> None:
        """Forget orders, trades, positions, tags, plans and rejects; restore balances.

        Users, accounts, contracts and prices stay; ids keep counting up so that an id seen before
        a reset never names a different object after it.
        """
        with self._lock:
            self._orders.clear()
            self._trades.clear()
            self._positions.clear()
            self._tags_used.clear()
            self._next_order_fill_plans.clear()
            self._pending_rejections.clear()
            self._event_log.clear()
            for account in self._accounts.values():
                account.balance = account.initial_balance

    # ----------------------------------------------------- users and lookups

    def check_api_key(self, username: str, api_key: str) -> bool:
        with self._lock:
            user = self._users.get(username)
            return user is not None and user.api_key == api_key

    def has_user(self, username: str) -> bool:
        with self._lock:
            return username in self._users

    def user_sees_account(self, username: str, account_id: int) -> bool:
        with self._lock:
            account = self._accounts.get(account_id)
            return account is not None and account.owner in (None, username)

    def accounts_for_user(self, username: str, *, only_active: bool) -> list[dict[str, Any]]:
        with self._lock:
            return [
                account.to_wire()
                for account in sorted(self._accounts.values(), key=lambda a: a.id)
                if account.owner in (None, username) and (account.active or not only_active)
            ]

    def contract(self, contract_id: str) -> dict[str, Any] | None:
        with self._lock:
            contract = self._contracts.get(contract_id)
            return contract.to_wire() if contract else None

    def search_contracts(self, search_text: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """Case-insensitive match on id, name, description or symbol id; at most `limit`."""
        needle = search_text.strip().lower()
        with self._lock:
            found = [
                contract.to_wire()
                for contract in self._contracts.values()
                if contract.active
                and (
                    not needle
                    or any(
                        needle in text.lower()
                        for text in (
                            contract.id,
                            contract.name,
                            contract.description,
                            contract.symbol_id,
                        )
                    )
                )
            ]
            return found[:limit]

    def available_contracts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [contract.to_wire() for contract in self._contracts.values() if contract.active]

    # ------------------------------------------------------------- snapshots

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [account.to_wire() for account in self._accounts.values()]

    def account(self, account_id: int) -> dict[str, Any] | None:
        with self._lock:
            account = self._accounts.get(account_id)
            return account.to_wire() if account else None

    def orders(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Every order the broker holds (any status), oldest first, in REST wire form."""
        with self._lock:
            return [
                order.to_wire()
                for order in sorted(self._orders.values(), key=lambda o: o.id)
                if account_id is None or order.account_id == account_id
            ]

    orders_for = orders

    def open_orders(self, account_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                order.to_wire()
                for order in sorted(self._orders.values(), key=lambda o: o.id)
                if (account_id is None or order.account_id == account_id)
                and order.status in _OPEN_ORDER_STATUSES
            ]

    def order(self, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            order = self._orders.get(order_id)
            return order.to_wire() if order else None

    def trades(self, account_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                trade.to_wire()
                for trade in sorted(self._trades.values(), key=lambda t: t.id)
                if account_id is None or trade.account_id == account_id
            ]

    def positions(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Open positions (size != 0)."""
        with self._lock:
            return [
                position.to_wire()
                for position in sorted(self._positions.values(), key=lambda p: p.id)
                if (account_id is None or position.account_id == account_id) and position.net
            ]

    def events(self) -> list[BrokerEvent]:
        """Every event published since the start or the last reset, in order."""
        with self._lock:
            return list(self._event_log)

    # ----------------------------------------------------------- REST queries

    def search_orders(
        self, account_id: int, start: datetime, end: datetime | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                order.to_wire()
                for order in sorted(self._orders.values(), key=lambda o: o.id)
                if order.account_id == account_id
                and order.creation_timestamp >= start
                and (end is None or order.creation_timestamp <= end)
            ]

    def find_order(self, account_id: int, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None or order.account_id != account_id:
                return None
            return order.to_wire()

    def search_trades(
        self, account_id: int, start: datetime, end: datetime | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                trade.to_wire()
                for trade in sorted(self._trades.values(), key=lambda t: t.id)
                if trade.account_id == account_id
                and trade.creation_timestamp >= start
                and (end is None or trade.creation_timestamp <= end)
            ]

    # ------------------------------------------------------- test controls

    def set_fill_plan(self, order_id: int, plan: Iterable[int]) -> None:
        """Split the rest of a working order's fills: one chunk per price move or fill call."""
        chunks = self._checked_plan(plan)
        with self._lock:
            self._require_order(order_id).fill_plan = chunks

    def queue_fill_plan(self, plan: Iterable[int], *, account_id: int | None = None) -> None:
        """Give the next order placed (on `account_id`, or on any account) this fill plan.

        The first chunk fills as soon as the order can fill (at once for a market order); each
        later chunk needs another price move (`set_price`) or an explicit `fill_order`. When the
        plan runs out, whatever remains fills in one go.
        """
        chunks = self._checked_plan(plan)
        with self._lock:
            self._next_order_fill_plans.append((account_id, chunks))

    def reject_next_orders(
        self,
        count: int = 1,
        *,
        error_code: int = PlaceOrderErrorCode.ORDER_REJECTED,
        message: str = "Order rejected by the simulator.",
        create_order: bool = True,
    ) -> None:
        with self._lock:
            rejection = OrderRejection(int(error_code), message, create_order)
            self._pending_rejections.extend([rejection] * count)

    def clear_rejections(self) -> None:
        with self._lock:
            self._pending_rejections.clear()

    def pending_rejections(self) -> int:
        with self._lock:
            return len(self._pending_rejections)

    def fill_order(
        self, order_id: int, size: int | None = None, price: Decimal | None = None
    ) -> dict[str, Any]:
        """Fill a working order now, whatever the price: `size` defaults to the next chunk of
        its fill plan (or everything left), `price` to its limit price, else the current price.
        Returns the trade."""
        with self._lock:
            order = self._require_order(order_id)
            if order.status != OrderStatus.OPEN:
                raise BrokerError(f"order {order_id} is not working (status {order.status.name})")
            quantity = size if size is not None else self._next_chunk(order)
            if not 1 <= quantity <= order.remaining:
                raise BrokerError(f"fill size must be 1..{order.remaining}, not {quantity}")
            if size is not None and order.fill_plan:
                # An explicit size replaces the plan's next chunk rather than shifting the plan.
                order.fill_plan.pop(0)
            if price is None:
                price = order.limit_price if order.type == OrderType.LIMIT else None
                price = price if price is not None else self._prices.get(order.contract_id)
            if price is None:
                raise BrokerError(f"no price for {order.contract_id}; pass price=")
            trade = self._fill(order, quantity, Decimal(price))
            return trade.to_wire()

    def void_trade(self, trade_id: int) -> dict[str, Any]:
        with self._lock:
            trade = self._trades.get(trade_id)
            if trade is None:
                raise BrokerError(f"no trade {trade_id}")
            trade.voided = True
            self._emit("trade", trade.account_id, EventAction.UPDATE, trade.to_wire())
            return trade.to_wire()

    # --------------------------------------------------------- order entry

    def place_order(self, username: str, request: PlaceOrderRequest) -> PlaceOrderResult:
        codes = PlaceOrderErrorCode
        with self._lock:
            account = self._visible_account(username, request.account_id)
            if account is None:
                return PlaceOrderResult(None, codes.ACCOUNT_NOT_FOUND, "Account not found.")
            if not account.can_trade:
                return PlaceOrderResult(
                    None, codes.ACCOUNT_VIOLATION, "The account is not allowed to trade."
                )
            contract = self._contracts.get(request.contract_id)
            if contract is None:
                return PlaceOrderResult(None, codes.CONTRACT_NOT_FOUND, "Contract not found.")
            if not contract.active:
                return PlaceOrderResult(None, codes.CONTRACT_NOT_ACTIVE, "Contract is not active.")
            problem = self._validate_new_order(request, contract)
            if problem is not None:
                return PlaceOrderResult(None, codes.ORDER_REJECTED, problem)
            tag = request.custom_tag or None
            if tag is not None and tag in self._tags_used.get(account.id, set()):
                return PlaceOrderResult(
                    None,
                    codes.ORDER_REJECTED,
                    f"Order rejected: the customTag {tag!r} is a duplicate; a custom tag must "
                    "be unique across the account.",
                )
            has_brackets = (
                request.stop_loss_bracket is not None or request.take_profit_bracket is not None
            )
            if has_brackets and not account.auto_oco_brackets:
                order = self._new_order(request, contract, status=OrderStatus.REJECTED)
                return PlaceOrderResult(
                    order.id,
                    codes.ORDER_REJECTED,
                    "Brackets cannot be used with Position Brackets. You must enable Auto OCO "
                    "Brackets.",
                )
            if self._pending_rejections:
                rejection = self._pending_rejections.pop(0)
                rejected_id = None
                if rejection.create_order:
                    rejected_id = self._new_order(request, contract, status=OrderStatus.REJECTED).id
                return PlaceOrderResult(
                    rejected_id, PlaceOrderErrorCode(rejection.error_code), rejection.message
                )
            order = self._new_order(request, contract, status=self._initial_status(request))
            self._create_bracket_children(order, contract, request)
            self._after_entry(order)
            return PlaceOrderResult(order.id, codes.SUCCESS)

    def modify_order(
        self,
        username: str,
        account_id: int,
        order_id: int,
        *,
        size: int | None = None,
        limit_price: Decimal | None = None,
        stop_price: Decimal | None = None,
        trail_price: Decimal | None = None,
    ) -> tuple[ModifyOrderErrorCode, str | None]:
        """Null/omitted fields stay unchanged (unconfirmed [4.5]; what clients assume)."""
        codes = ModifyOrderErrorCode
        with self._lock:
            if self._visible_account(username, account_id) is None:
                return codes.ACCOUNT_NOT_FOUND, "Account not found."
            order = self._orders.get(order_id)
            if order is None or order.account_id != account_id:
                return codes.ORDER_NOT_FOUND, "Order not found."
            if order.status == OrderStatus.SUSPENDED:
                return codes.REJECTED, "A suspended bracket order cannot be modified."
            if order.status not in _OPEN_ORDER_STATUSES:
                return codes.REJECTED, f"The order is not working (status {order.status.name})."
            if order.type == OrderType.MARKET:
                return codes.REJECTED, "A market order cannot be modified."
            contract = self._contracts[order.contract_id]
            last = self._prices.get(order.contract_id)
            problem = self._validate_modification(
                order, contract, last, size, limit_price, stop_price, trail_price
            )
            if problem is not None:
                return codes.REJECTED, problem
            if size is not None:
                order.size = size
                for child in self._children(order):
                    if child.status == OrderStatus.SUSPENDED:
                        child.size = size
                        self._touch(child)
            if limit_price is not None:
                order.limit_price = limit_price
            if stop_price is not None:
                order.stop_price = stop_price
            if trail_price is not None and last is not None:
                distance = abs(last - trail_price)
                order.trail_price = distance
                order.trail_distance = int(distance / contract.tick_size)
                order.trail_extreme = last
                order.stop_price = last + distance if order.is_buy else last - distance
            self._touch(order)
            if last is not None and order.status == OrderStatus.OPEN:
                self._on_price(order, last, at_entry=True)
            return codes.SUCCESS, None

    def cancel_order(
        self, username: str, account_id: int, order_id: int
    ) -> tuple[CancelOrderErrorCode, str | None]:
        codes = CancelOrderErrorCode
        with self._lock:
            if self._visible_account(username, account_id) is None:
                return codes.ACCOUNT_NOT_FOUND, "Account not found."
            order = self._orders.get(order_id)
            if order is None or order.account_id != account_id:
                return codes.ORDER_NOT_FOUND, "Order not found."
            if order.status not in _ACTIVE_ORDER_STATUSES:
                return codes.REJECTED, f"The order is not working (status {order.status.name})."
            self._cancel(order)
            return codes.SUCCESS, None

    def close_position(
        self, username: str, account_id: int, contract_id: str, size: int | None = None
    ) -> CloseOutcome:
        """Flatten (size None) or reduce a position with a market order."""
        with self._lock:
            if self._visible_account(username, account_id) is None:
                return "account_not_found"
            contract = self._contracts.get(contract_id)
            if contract is None:
                return "contract_not_found"
            position = self._positions.get((account_id, contract_id))
            if position is None or position.net == 0:
                return "position_not_found"
            held = abs(position.net)
            if size is not None and not 1 <= size <= held:
                return "invalid_size"
            request = PlaceOrderRequest(
                account_id=account_id,
                contract_id=contract_id,
                type=OrderType.MARKET,
                side=OrderSide.ASK if position.net > 0 else OrderSide.BID,
                size=size if size is not None else held,
            )
            order = self._new_order(request, contract, status=OrderStatus.PENDING)
            self._after_entry(order)
            return "ok"

    # ------------------------------------------------------------ internals

    def _visible_account(self, username: str, account_id: int) -> Account | None:
        account = self._accounts.get(account_id)
        if account is None or account.owner not in (None, username):
            return None
        return account

    def _require_account(self, account_id: int) -> Account:
        account = self._accounts.get(account_id)
        if account is None:
            raise BrokerError(f"no account {account_id}")
        return account

    def _require_contract(self, contract_id: str) -> Contract:
        contract = self._contracts.get(contract_id)
        if contract is None:
            raise BrokerError(f"no contract {contract_id}")
        return contract

    def _require_order(self, order_id: int) -> Order:
        order = self._orders.get(order_id)
        if order is None:
            raise BrokerError(f"no order {order_id}")
        return order

    @staticmethod
    def _checked_plan(plan: Iterable[int]) -> list[int]:
        chunks = list(plan)
        if not chunks or any(not isinstance(c, int) or c < 1 for c in chunks):
            raise BrokerError(f"a fill plan is a non-empty list of positive ints, not {chunks!r}")
        return chunks

    def _validate_new_order(self, request: PlaceOrderRequest, contract: Contract) -> str | None:
        if request.type not in OrderType.__members__.values() or request.type == 0:
            return "Invalid order type."
        if request.side not in (OrderSide.BID, OrderSide.ASK):
            return "Invalid order side."
        if request.size < 1:
            return "Invalid order size. The size must be at least 1."
        order_type = OrderType(request.type)
        is_buy = request.side == OrderSide.BID
        last = self._prices.get(contract.id)
        for label, price in (
            ("limit", request.limit_price),
            ("stop", request.stop_price),
        ):
            if price is not None and price <= 0:
                return f"Invalid {label} price. The price must be positive."
        if order_type in (OrderType.LIMIT, OrderType.STOP_LIMIT):
            if request.limit_price is None:
                return "Invalid limit price. A limit price is required."
            if not contract.on_tick(request.limit_price):
                return "Invalid limit price. Price is not aligned to tick size."
        if order_type in (OrderType.STOP, OrderType.STOP_LIMIT):
            if request.stop_price is None:
                return "Invalid stop price. A stop price is required."
            if not contract.on_tick(request.stop_price):
                return "Invalid stop price. Price is not aligned to tick size."
            if last is None:
                return "Cannot place a stop order without a last price."
            if is_buy and request.stop_price <= last:
                return "Invalid stop price. A buy stop must be above the current price."
            if not is_buy and request.stop_price >= last:
                return "Invalid stop price. A sell stop must be below the current price."
        if order_type == OrderType.TRAILING_STOP:
            if request.trail_price is None:
                return "Trail Distance not set."
            if last is None:
                return "Cannot trail without a last price"
            if not contract.on_tick(request.trail_price):
                return "Invalid trail price. Price is not aligned to tick size."
            ticks = abs(last - request.trail_price) / contract.tick_size
            if ticks == 0:
                return "Trail Distance not set."
            if ticks > MAX_TRAIL_TICKS:
                return f"Trail Distance exceeds maximum ({MAX_TRAIL_TICKS})"
        needs_last = order_type in (OrderType.MARKET, OrderType.JOIN_BID, OrderType.JOIN_ASK)
        if needs_last and last is None:
            return "Cannot place this order without a last price."
        for label, leg, expected in (
            ("stop loss", request.stop_loss_bracket, (OrderType.STOP, OrderType.TRAILING_STOP)),
            ("take profit", request.take_profit_bracket, (OrderType.LIMIT,)),
        ):
            if leg is None:
                continue
            if leg.ticks == 0:
                return f"Invalid {label} bracket. Ticks must not be zero."
            if leg.type not in expected:
                allowed = ", ".join(str(int(t)) for t in expected)
                return f"Invalid {label} bracket type {int(leg.type)}; use {allowed}."
        return None

    def _validate_modification(
        self,
        order: Order,
        contract: Contract,
        last: Decimal | None,
        size: int | None,
        limit_price: Decimal | None,
        stop_price: Decimal | None,
        trail_price: Decimal | None,
    ) -> str | None:
        if size is not None and size <= order.fill_volume:
            return f"Invalid order size. The size must be more than the filled {order.fill_volume}."
        takes_limit = order.type in (
            OrderType.LIMIT,
            OrderType.STOP_LIMIT,
            OrderType.JOIN_BID,
            OrderType.JOIN_ASK,
        )
        if limit_price is not None:
            if not takes_limit:
                return "Invalid limit price. This order type has no limit price."
            if limit_price <= 0 or not contract.on_tick(limit_price):
                return "Invalid limit price. Price is not aligned to tick size."
        if stop_price is not None:
            if order.type not in (OrderType.STOP, OrderType.STOP_LIMIT):
                return "Invalid stop price. This order type has no stop price."
            if stop_price <= 0 or not contract.on_tick(stop_price):
                return "Invalid stop price. Price is not aligned to tick size."
            if last is not None and not order.triggered:
                if order.is_buy and stop_price <= last:
                    return "Invalid stop price. A buy stop must be above the current price."
                if not order.is_buy and stop_price >= last:
                    return "Invalid stop price. A sell stop must be below the current price."
        if trail_price is not None:
            if order.type != OrderType.TRAILING_STOP:
                return "Invalid trail price. This order is not a trailing stop."
            if last is None:
                return "Cannot trail without a last price"
            if not contract.on_tick(trail_price):
                return "Invalid trail price. Price is not aligned to tick size."
            ticks = abs(last - trail_price) / contract.tick_size
            if ticks == 0:
                return "Trail Distance not set."
            if ticks > MAX_TRAIL_TICKS:
                return f"Trail Distance exceeds maximum ({MAX_TRAIL_TICKS})"
        return None

    @staticmethod
    def _initial_status(request: PlaceOrderRequest) -> OrderStatus:
        # Market orders show Pending first (seen live); resting orders are created Open.
        return OrderStatus.PENDING if request.type == OrderType.MARKET else OrderStatus.OPEN

    def _new_order(
        self, request: PlaceOrderRequest, contract: Contract, *, status: OrderStatus
    ) -> Order:
        now = self.clock.now()
        order_type = OrderType(request.type)
        order = Order(
            id=next(self._order_ids),
            account_id=request.account_id,
            contract_id=contract.id,
            symbol_id=contract.symbol_id,
            creation_timestamp=now,
            update_timestamp=now,
            status=status,
            type=order_type,
            side=OrderSide(request.side),
            size=request.size,
            limit_price=request.limit_price,
            stop_price=request.stop_price,
            custom_tag=request.custom_tag or None,
            linked_order_id=request.linked_order_id,
            stop_loss=request.stop_loss_bracket,
            take_profit=request.take_profit_bracket,
        )
        last = self._prices.get(contract.id)
        if order_type == OrderType.TRAILING_STOP and request.trail_price is not None and last:
            distance = abs(last - request.trail_price)
            order.trail_price = distance
            order.trail_distance = int(distance / contract.tick_size)
            order.trail_extreme = last
            order.stop_price = last + distance if order.is_buy else last - distance
        elif order_type == OrderType.JOIN_BID and last is not None:
            order.limit_price = last - contract.tick_size
        elif order_type == OrderType.JOIN_ASK and last is not None:
            order.limit_price = last + contract.tick_size
        if status != OrderStatus.REJECTED:
            for index, (account_filter, plan) in enumerate(self._next_order_fill_plans):
                if account_filter in (None, order.account_id):
                    order.fill_plan = list(plan)
                    del self._next_order_fill_plans[index]
                    break
        self._orders[order.id] = order
        if order.custom_tag is not None:
            self._tags_used.setdefault(order.account_id, set()).add(order.custom_tag)
        self._emit_order(order, EventAction.CREATE)
        return order

    def _create_bracket_children(
        self, entry: Order, contract: Contract, request: PlaceOrderRequest
    ) -> None:
        stop_loss_id: int | None = None
        for suffix, leg in (("-SL", entry.stop_loss), ("-TP", entry.take_profit)):
            if leg is None:
                continue
            now = self.clock.now()
            child = Order(
                id=next(self._order_ids),
                account_id=entry.account_id,
                contract_id=entry.contract_id,
                symbol_id=entry.symbol_id,
                creation_timestamp=now,
                update_timestamp=now,
                status=OrderStatus.SUSPENDED,
                type=leg.type,
                side=OrderSide.ASK if entry.is_buy else OrderSide.BID,
                size=entry.size,
                custom_tag=f"{entry.custom_tag}{suffix}" if entry.custom_tag else None,
                parent_order_id=entry.id,
                linked_order_id=stop_loss_id if suffix == "-TP" else None,
                bracket_ticks=abs(leg.ticks),
            )
            if suffix == "-SL":
                stop_loss_id = child.id
            self._orders[child.id] = child
            if child.custom_tag is not None:
                self._tags_used.setdefault(child.account_id, set()).add(child.custom_tag)
            self._emit_order(child, EventAction.CREATE)

    def _after_entry(self, order: Order) -> None:
        """Give a freshly placed order its first chance to fill."""
        last = self._prices.get(order.contract_id)
        if last is not None:
            self._on_price(order, last, at_entry=True)

    def _on_price(self, order: Order, price: Decimal, *, at_entry: bool = False) -> None:
        """Fill one chunk of `order` if `price` lets it. Called per order per price move."""
        if order.type == OrderType.MARKET:
            self._fill(order, self._next_chunk(order), price)
            return
        if order.type == OrderType.TRAILING_STOP and not order.triggered:
            self._trail(order, price)
        if order.type in (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP):
            if not order.triggered:
                assert order.stop_price is not None
                crossed = price >= order.stop_price if order.is_buy else price <= order.stop_price
                if not crossed:
                    return
                order.triggered = True
            if order.type != OrderType.STOP_LIMIT:
                self._fill(order, self._next_chunk(order), price)
                return
        limit = order.limit_price
        if limit is None:
            return
        marketable = price <= limit if order.is_buy else price >= limit
        if marketable:
            # A limit that is marketable on arrival trades at the market (never worse than its
            # limit); one that was resting fills at its limit when the market reaches it.
            self._fill(order, self._next_chunk(order), price if at_entry else limit)

    def _trail(self, order: Order, price: Decimal) -> None:
        assert order.trail_price is not None and order.trail_extreme is not None
        better = price < order.trail_extreme if order.is_buy else price > order.trail_extreme
        if not better:
            return
        order.trail_extreme = price
        distance = order.trail_price
        order.stop_price = price + distance if order.is_buy else price - distance
        self._touch(order)

    @staticmethod
    def _next_chunk(order: Order) -> int:
        if order.fill_plan:
            return min(order.fill_plan.pop(0), order.remaining)
        return order.remaining

    def _fill(self, order: Order, quantity: int, price: Decimal) -> Trade:
        """Execute `quantity` of `order` at `price`: a trade, the order, the position, the
        account, in that order on the stream; then the bracket consequences."""
        contract = self._contracts[order.contract_id]
        account = self._accounts[order.account_id]
        # Every object gets its own timestamp, increasing in the order the stream shows them.
        traded_at = self.clock.now()
        order_updated_at = self.clock.now()
        position_opened_at = self.clock.now()
        signed = quantity if order.is_buy else -quantity
        key = (order.account_id, order.contract_id)
        position = self._positions.get(key)
        position_events: list[tuple[EventAction, Position]] = []
        profit_and_loss: Decimal | None = None
        point_value = contract.tick_value / contract.tick_size

        if position is None or position.net == 0:
            position = Position(
                id=next(self._position_ids),
                account_id=order.account_id,
                contract_id=order.contract_id,
                creation_timestamp=position_opened_at,
                net=signed,
                average_price=price,
            )
            self._positions[key] = position
            position_events.append((EventAction.CREATE, position))
        elif (position.net > 0) == (signed > 0):
            held = abs(position.net)
            total = position.average_price * held + price * quantity
            position.average_price = _quantize(total / (held + quantity), _AVERAGE_QUANTUM)
            position.net += signed
            position_events.append((EventAction.UPDATE, position))
        else:
            closed = min(quantity, abs(position.net))
            direction = 1 if position.net > 0 else -1
            gross = (price - position.average_price) * closed * point_value * direction
            profit_and_loss = _quantize(gross, _CENT)
            remainder = position.net + signed
            if remainder == 0 or (remainder > 0) != (position.net > 0):
                position.net = 0
                position_events.append((EventAction.DELETE, position))
                del self._positions[key]
                if remainder != 0:
                    reopened = Position(
                        id=next(self._position_ids),
                        account_id=order.account_id,
                        contract_id=order.contract_id,
                        creation_timestamp=position_opened_at,
                        net=remainder,
                        average_price=price,
                    )
                    self._positions[key] = reopened
                    position_events.append((EventAction.CREATE, reopened))
            else:
                position.net = remainder
                position_events.append((EventAction.UPDATE, position))

        fees = _quantize(contract.fee_per_contract * quantity, _CENT)
        trade = Trade(
            id=next(self._trade_ids),
            account_id=order.account_id,
            contract_id=order.contract_id,
            creation_timestamp=traded_at,
            price=price,
            profit_and_loss=profit_and_loss,
            fees=fees,
            side=order.side,
            size=quantity,
            order_id=order.id,
        )
        self._trades[trade.id] = trade
        self._emit("trade", trade.account_id, EventAction.CREATE, trade.to_wire())

        previous_value = (order.filled_price or Decimal(0)) * order.fill_volume
        order.fill_volume += quantity
        order.filled_price = _quantize(
            (previous_value + price * quantity) / order.fill_volume, _AVERAGE_QUANTUM
        )
        order.status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.OPEN
        order.update_timestamp = order_updated_at
        self._emit_order(order, EventAction.UPDATE)

        for action, changed in position_events:
            self._emit("position", changed.account_id, action, changed.to_wire())

        account.balance += (profit_and_loss or Decimal(0)) - fees
        self._emit("account", account.id, EventAction.UPDATE, account.to_wire())

        self._after_fill(order, quantity, flat=_is_flat(order, self._positions))
        return trade

    def _after_fill(self, order: Order, quantity: int, *, flat: bool) -> None:
        if order.status == OrderStatus.FILLED:
            self._activate_children(order, order.size)
        if order.parent_order_id is not None:
            for sibling in self._siblings(order):
                if sibling.status not in _ACTIVE_ORDER_STATUSES:
                    continue
                if order.status == OrderStatus.FILLED:
                    self._cancel(sibling)
                else:
                    sibling.size = max(sibling.fill_volume + 1, sibling.size - quantity)
                    self._touch(sibling)
        if flat:
            for other in list(self._orders.values()):
                if (
                    other.parent_order_id is not None
                    and other.account_id == order.account_id
                    and other.contract_id == order.contract_id
                    and other.status == OrderStatus.OPEN
                ):
                    self._cancel(other)

    def _children(self, order: Order) -> list[Order]:
        return sorted(
            (o for o in self._orders.values() if o.parent_order_id == order.id),
            key=lambda o: o.id,
        )

    def _siblings(self, order: Order) -> list[Order]:
        return [
            o
            for o in self._orders.values()
            if o.parent_order_id == order.parent_order_id and o.id != order.id
        ]

    def _activate_children(self, entry: Order, size: int) -> None:
        contract = self._contracts[entry.contract_id]
        assert entry.filled_price is not None
        # Round the average entry to the tick so the child prices are valid prices.
        base = (entry.filled_price / contract.tick_size).to_integral_value() * contract.tick_size
        direction = 1 if entry.is_buy else -1
        activated: list[Order] = []
        for child in self._children(entry):
            if child.status != OrderStatus.SUSPENDED or child.bracket_ticks is None:
                continue
            offset = child.bracket_ticks * contract.tick_size
            child.size = size
            child.status = OrderStatus.OPEN
            if child.type == OrderType.LIMIT:  # take profit: the winning side
                child.limit_price = base + direction * offset
            elif child.type == OrderType.TRAILING_STOP:
                child.trail_price = offset
                child.trail_distance = child.bracket_ticks
                child.trail_extreme = self._prices.get(entry.contract_id, base)
                child.stop_price = child.trail_extreme - direction * offset
            else:  # stop loss: the losing side
                child.stop_price = base - direction * offset
            self._touch(child)
            activated.append(child)
        last = self._prices.get(entry.contract_id)
        for child in activated:
            if last is not None and child.status == OrderStatus.OPEN:
                self._on_price(child, last)

    def _cancel(self, order: Order) -> None:
        was_filled = order.fill_volume
        order.status = OrderStatus.CANCELLED
        self._touch(order)
        children = [c for c in self._children(order) if c.status == OrderStatus.SUSPENDED]
        if not children:
            return
        if was_filled:
            self._activate_children(order, was_filled)
        else:
            for child in children:
                child.status = OrderStatus.CANCELLED
                self._touch(child)

    def _touch(self, order: Order) -> None:
        order.update_timestamp = self.clock.now()
        self._emit_order(order, EventAction.UPDATE)

    def _emit_order(self, order: Order, action: EventAction) -> None:
        self._emit("order", order.account_id, action, order.to_wire(for_stream=True))

    def _emit(self, kind: EventKind, account_id: int, action: EventAction, data: dict) -> None:
        event = BrokerEvent(kind=kind, account_id=account_id, action=action, data=data)
        self._event_log.append(event)
        for listener in list(self._listeners):
            listener(event)


def _is_flat(order: Order, positions: dict[tuple[int, str], Position]) -> bool:
    position = positions.get((order.account_id, order.contract_id))
    return position is None or position.net == 0
