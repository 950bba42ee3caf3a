"""Everything the simulated broker knows, and the one way its changes are published.

`BrokerState` has no lock of its own: the `Broker` facade owns the state and holds its single
re-entrant lock around every call into it, and into the helpers (`rules`, `matching`,
`brackets`) that receive it. Every state change is published to listeners as a `BrokerEvent`
*while that lock is held*, so listeners see events in exactly the order the broker made them
(the hub relays them with `loop.call_soon_threadsafe`, which keeps that order).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from projectx.enums import EventAction
from projectx.simulator.broker.entities import (
    Account,
    BrokerEvent,
    Contract,
    EventKind,
    EventListener,
    Order,
    OrderRejection,
    Position,
    Trade,
    User,
)
from projectx.simulator.wire import MonotonicClock

FIRST_ORDER_ID = 9001
FIRST_TRADE_ID = 70001
FIRST_POSITION_ID = 501

PositionKey = tuple[int, str]
"""(account id, contract id): an account holds at most one position per contract."""


@dataclass
class BrokerState:
    clock: MonotonicClock = field(default_factory=MonotonicClock)
    users: dict[str, User] = field(default_factory=dict)
    accounts: dict[int, Account] = field(default_factory=dict)
    contracts: dict[str, Contract] = field(default_factory=dict)
    prices: dict[str, Decimal] = field(default_factory=dict)
    orders: dict[int, Order] = field(default_factory=dict)
    trades: dict[int, Trade] = field(default_factory=dict)
    positions: dict[PositionKey, Position] = field(default_factory=dict)
    tags_used: dict[int, set[str]] = field(default_factory=dict)
    """Every customTag ever used per account id, whatever became of its order."""
    next_order_fill_plans: list[tuple[int | None, list[int]]] = field(default_factory=list)
    """Queued fill plans for orders not placed yet: (account id or None for any, chunks)."""
    pending_rejections: list[OrderRejection] = field(default_factory=list)
    oco_cancels: bool = True
    """False (a fault): a filled bracket leg leaves its sibling working, and a flat position
    leaves the children working, so a client's own OCO backstop can be tested."""
    listeners: list[EventListener] = field(default_factory=list)
    event_log: list[BrokerEvent] = field(default_factory=list)
    # Ids keep counting up across resets, so an id seen once never names another object.
    order_ids: Iterator[int] = field(default_factory=lambda: itertools.count(FIRST_ORDER_ID))
    trade_ids: Iterator[int] = field(default_factory=lambda: itertools.count(FIRST_TRADE_ID))
    position_ids: Iterator[int] = field(default_factory=lambda: itertools.count(FIRST_POSITION_ID))

    # ---------------------------------------------------------------- queries

    def visible_account(self, username: str, account_id: int) -> Account | None:
        account = self.accounts.get(account_id)
        if account is None or not account.visible_to(username):
            return None
        return account

    def account_order(self, account_id: int, order_id: int) -> Order | None:
        """The order, if it exists on that account: an id on another account is not found."""
        order = self.orders.get(order_id)
        if order is None or order.account_id != account_id:
            return None
        return order

    def orders_oldest_first(self) -> list[Order]:
        return sorted(self.orders.values(), key=lambda order: order.id)

    def trades_oldest_first(self) -> list[Trade]:
        return sorted(self.trades.values(), key=lambda trade: trade.id)

    def is_flat(self, account_id: int, contract_id: str) -> bool:
        position = self.positions.get((account_id, contract_id))
        return position is None or position.net == 0

    # ---------------------------------------------------------------- changes

    def record_new_order(self, order: Order) -> None:
        """Store a just-built order, claim its customTag and publish its creation."""
        self.orders[order.id] = order
        if order.custom_tag is not None:
            self.tags_used.setdefault(order.account_id, set()).add(order.custom_tag)
        self.emit_order(order, EventAction.CREATE)

    def touch(self, order: Order) -> None:
        """Stamp a changed order and publish it."""
        order.update_timestamp = self.clock.now()
        self.emit_order(order, EventAction.UPDATE)

    def emit_order(self, order: Order, action: EventAction) -> None:
        self.emit("order", order.account_id, action, order.to_wire(for_stream=True))

    def emit_account(self, account: Account) -> None:
        self.emit("account", account.id, EventAction.UPDATE, account.to_wire())

    def emit(
        self, kind: EventKind, account_id: int, action: EventAction, data: dict[str, Any]
    ) -> None:
        event = BrokerEvent(kind=kind, account_id=account_id, action=action, data=data)
        self.event_log.append(event)
        # A copy, so that a listener may remove itself while being called.
        for listener in list(self.listeners):
            listener(event)
