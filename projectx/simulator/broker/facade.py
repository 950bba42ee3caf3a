"""`Broker`: the simulated broker's public face, called by tests, the REST API and the user hub.

Everything here is synchronous and guarded by one re-entrant lock, because tests call it from their
own thread while the aiohttp handlers call it from the simulator's event-loop thread. Each public
method takes the lock and only then reads or changes the `BrokerState`, directly or through the
helpers that receive it: `rules` (what is refused), `matching` (fills) and `brackets` (OCO).
Those helpers take no lock of their own: this one lock is the only one.

Choices where the reference says "unconfirmed" (reference section numbers in brackets), for
the controls that only the simulator has:

- Voiding a trade only flags it (`voided: true`) and re-sends it; it does not unwind the
  position or the balance.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from projectx.enums import (
    CancelOrderErrorCode,
    EventAction,
    ModifyOrderErrorCode,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrderErrorCode,
)
from projectx.simulator.broker import brackets, matching, rules
from projectx.simulator.broker.entities import (
    DEFAULT_ACCOUNT_BALANCE,
    DEFAULT_FEE_PER_CONTRACT,
    DEFAULT_REJECTION_MESSAGE,
    SEARCH_OPEN_STATUSES,
    Account,
    BrokerEvent,
    CloseOutcome,
    Contract,
    EventListener,
    Order,
    OrderChanges,
    OrderRejection,
    PlaceOrderRequest,
    PlaceOrderResult,
    User,
    symbol_id_for,
)
from projectx.simulator.broker.state import BrokerState
from projectx.simulator.wire import MonotonicClock


class BrokerError(Exception):
    """A misuse of the simulator's Python API (unknown order id, bad fill size, ...)."""


class Broker:
    """A small deterministic futures broker. All public methods are thread-safe."""

    def __init__(self, clock: MonotonicClock | None = None) -> None:
        self._lock = threading.RLock()
        self._state = BrokerState(clock=clock or MonotonicClock())

    @property
    def clock(self) -> MonotonicClock:
        return self._state.clock

    # ------------------------------------------------------------------ setup

    def add_user(self, username: str, api_key: str) -> User:
        with self._lock:
            user = User(username=username, api_key=api_key)
            self._state.users[username] = user
            return user

    def add_account(
        self,
        id: int,
        name: str,
        balance: Decimal = DEFAULT_ACCOUNT_BALANCE,
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
            self._state.accounts[id] = account
            return account

    def update_account(self, account_id: int, **changes: Any) -> None:
        """Change account fields (e.g. `can_trade=False`) and publish a GatewayUserAccount."""
        with self._lock:
            account = self._require_account(account_id)
            for name, value in changes.items():
                if not hasattr(account, name):
                    raise BrokerError(f"accounts have no field {name!r}")
                setattr(account, name, value)
            self._state.emit_account(account)

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
            self._state.contracts[id] = contract
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
            self._state.prices[contract_id] = price
            working = [
                order
                for order in self._state.orders_oldest_first()
                if order.contract_id == contract_id and order.status == OrderStatus.OPEN
            ]
            for order in working:
                # An earlier fill in this loop may have cancelled or shrunk this one (brackets).
                if order.status == OrderStatus.OPEN and order.remaining > 0:
                    matching.offer_price(self._state, order, price)

    def price(self, contract_id: str) -> Decimal | None:
        with self._lock:
            return self._state.prices.get(contract_id)

    def add_listener(self, listener: EventListener) -> None:
        with self._lock:
            self._state.listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        with self._lock:
            if listener in self._state.listeners:
                self._state.listeners.remove(listener)

    def reset(self) -> None:
        """Forget orders, trades, positions, tags, plans and rejects; restore balances.

        Users, accounts, contracts and prices stay; ids keep counting up so that an id seen before
        a reset never names a different object after it.
        """
        with self._lock:
            state = self._state
            state.orders.clear()
            state.trades.clear()
            state.positions.clear()
            state.tags_used.clear()
            state.next_order_fill_plans.clear()
            state.pending_rejections.clear()
            state.event_log.clear()
            for account in state.accounts.values():
                account.balance = account.initial_balance

    # ----------------------------------------------------- users and lookups

    def check_api_key(self, username: str, api_key: str) -> bool:
        with self._lock:
            user = self._state.users.get(username)
            return user is not None and user.api_key == api_key

    def has_user(self, username: str) -> bool:
        with self._lock:
            return username in self._state.users

    def user_sees_account(self, username: str, account_id: int) -> bool:
        with self._lock:
            return self._state.visible_account(username, account_id) is not None

    def accounts_for_user(self, username: str, *, only_active: bool) -> list[dict[str, Any]]:
        with self._lock:
            return [
                account.to_wire()
                for account in sorted(self._state.accounts.values(), key=lambda a: a.id)
                if account.visible_to(username) and (account.active or not only_active)
            ]

    def contract(self, contract_id: str) -> dict[str, Any] | None:
        with self._lock:
            contract = self._state.contracts.get(contract_id)
            return contract.to_wire() if contract else None

    def search_contracts(self, search_text: str, *, limit: int = 20) -> list[dict[str, Any]]:
        """Case-insensitive match on id, name, description or symbol id; at most `limit`."""
        needle = search_text.strip().lower()
        with self._lock:
            found = [
                contract.to_wire()
                for contract in self._state.contracts.values()
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
            return [
                contract.to_wire() for contract in self._state.contracts.values() if contract.active
            ]

    # ------------------------------------------------------------- snapshots

    def accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [account.to_wire() for account in self._state.accounts.values()]

    def account(self, account_id: int) -> dict[str, Any] | None:
        with self._lock:
            account = self._state.accounts.get(account_id)
            return account.to_wire() if account else None

    def orders(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Every order the broker holds (any status), oldest first, in REST wire form."""
        with self._lock:
            return [
                order.to_wire()
                for order in self._state.orders_oldest_first()
                if account_id is None or order.account_id == account_id
            ]

    orders_for = orders

    def open_orders(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Order/searchOpen: status 1 Open only; never Suspended children [4.7]."""
        with self._lock:
            return [
                order.to_wire()
                for order in self._state.orders_oldest_first()
                if (account_id is None or order.account_id == account_id)
                and order.status in SEARCH_OPEN_STATUSES
            ]

    def order(self, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            order = self._state.orders.get(order_id)
            return order.to_wire() if order else None

    def trades(self, account_id: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [
                trade.to_wire()
                for trade in self._state.trades_oldest_first()
                if account_id is None or trade.account_id == account_id
            ]

    def positions(self, account_id: int | None = None) -> list[dict[str, Any]]:
        """Open positions (size != 0)."""
        with self._lock:
            return [
                position.to_wire()
                for position in sorted(self._state.positions.values(), key=lambda p: p.id)
                if (account_id is None or position.account_id == account_id) and position.net
            ]

    def events(self) -> list[BrokerEvent]:
        """Every event published since the start or the last reset, in order."""
        with self._lock:
            return list(self._state.event_log)

    # ----------------------------------------------------------- REST queries

    def search_orders(
        self, account_id: int, start: datetime, end: datetime | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                order.to_wire()
                for order in self._state.orders_oldest_first()
                if order.account_id == account_id
                and _created_between(order.creation_timestamp, start, end)
            ]

    def query_orders(
        self,
        account_id: int,
        *,
        statuses: frozenset[OrderStatus] = frozenset(),
        contract_id: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        by_id: bool = False,
        descending: bool = False,
        offset: int = 0,
        limit: int = 100,
    ) -> tuple[list[dict[str, Any]], int]:
        """Order/v2/query: one page of the account's matching orders (any status, Suspended
        children included, none of `statuses` meaning all) and how many match in all.
        `created_after` is inclusive, `created_before` exclusive."""
        with self._lock:
            matching_orders = [
                order
                for order in self._state.orders.values()
                if order.account_id == account_id
                and (not statuses or order.status in statuses)
                and (contract_id is None or order.contract_id == contract_id)
                and (created_after is None or order.creation_timestamp >= created_after)
                and (created_before is None or order.creation_timestamp < created_before)
            ]
            if by_id:
                matching_orders.sort(key=lambda order: order.id, reverse=descending)
            else:
                matching_orders.sort(
                    key=lambda order: (order.creation_timestamp, order.id), reverse=descending
                )
            page = matching_orders[offset : offset + limit]
            return [order.to_wire() for order in page], len(matching_orders)

    def find_order(self, account_id: int, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            order = self._state.account_order(account_id, order_id)
            return order.to_wire() if order else None

    def search_trades(
        self, account_id: int, start: datetime, end: datetime | None
    ) -> list[dict[str, Any]]:
        with self._lock:
            return [
                trade.to_wire()
                for trade in self._state.trades_oldest_first()
                if trade.account_id == account_id
                and _created_between(trade.creation_timestamp, start, end)
            ]

    # ------------------------------------------------------- test controls

    def set_fill_plan(self, order_id: int, plan: Iterable[int]) -> None:
        """Split the rest of a working order's fills: one chunk per price move or fill call."""
        chunks = _checked_plan(plan)
        with self._lock:
            self._require_order(order_id).fill_plan = chunks

    def queue_fill_plan(self, plan: Iterable[int], *, account_id: int | None = None) -> None:
        """Give the next order placed (on `account_id`, or on any account) this fill plan.

        The first chunk fills as soon as the order can fill (at once for a market order); each
        later chunk needs another price move (`set_price`) or an explicit `fill_order`. When the
        plan runs out, whatever remains fills in one go.
        """
        chunks = _checked_plan(plan)
        with self._lock:
            self._state.next_order_fill_plans.append((account_id, chunks))

    def reject_next_orders(
        self,
        count: int = 1,
        *,
        error_code: int = PlaceOrderErrorCode.ORDER_REJECTED,
        message: str = DEFAULT_REJECTION_MESSAGE,
        create_order: bool = True,
    ) -> None:
        with self._lock:
            rejection = OrderRejection(int(error_code), message, create_order)
            self._state.pending_rejections.extend([rejection] * count)

    def set_oco_cancels(self, enabled: bool) -> None:
        """False: a filled bracket leg no longer cancels (or shrinks) its sibling, and a flat
        position no longer cancels the children (a broker whose OCO fails)."""
        with self._lock:
            self._state.oco_cancels = enabled

    def oco_cancels(self) -> bool:
        with self._lock:
            return self._state.oco_cancels

    def clear_rejections(self) -> None:
        with self._lock:
            self._state.pending_rejections.clear()

    def pending_rejections(self) -> int:
        with self._lock:
            return len(self._state.pending_rejections)

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
            quantity = size if size is not None else matching.next_chunk(order)
            if not 1 <= quantity <= order.remaining:
                raise BrokerError(f"fill size must be 1..{order.remaining}, not {quantity}")
            if size is not None and order.fill_plan:
                # An explicit size replaces the plan's next chunk rather than shifting the plan.
                order.fill_plan.pop(0)
            if price is None:
                price = order.limit_price if order.type == OrderType.LIMIT else None
                price = price if price is not None else self._state.prices.get(order.contract_id)
            if price is None:
                raise BrokerError(f"no price for {order.contract_id}; pass price=")
            trade = matching.fill(self._state, order, quantity, Decimal(price))
            return trade.to_wire()

    def void_trade(self, trade_id: int) -> dict[str, Any]:
        with self._lock:
            trade = self._state.trades.get(trade_id)
            if trade is None:
                raise BrokerError(f"no trade {trade_id}")
            trade.voided = True
            self._state.emit("trade", trade.account_id, EventAction.UPDATE, trade.to_wire())
            return trade.to_wire()

    # --------------------------------------------------------- order entry

    def place_order(self, username: str, request: PlaceOrderRequest) -> PlaceOrderResult:
        """Order/place. Refusals in `rules` create no order; a "Position Brackets" refusal and
        an injected reject (`reject_next_orders(create_order=True)`) create one, Rejected, and
        return its id with `success: false`, as seen live [4.4]."""
        codes = PlaceOrderErrorCode
        with self._lock:
            state = self._state
            refusal = rules.check_placement(state, username, request)
            if refusal is not None:
                return refusal
            account = state.accounts[request.account_id]
            contract = state.contracts[request.contract_id]
            if rules.brackets_need_auto_oco(account, request):
                order = matching.enter_order(state, request, contract, status=OrderStatus.REJECTED)
                return PlaceOrderResult(
                    order.id, codes.ORDER_REJECTED, rules.POSITION_BRACKETS_MESSAGE
                )
            if state.pending_rejections:
                rejection = state.pending_rejections.pop(0)
                rejected_id = None
                if rejection.create_order:
                    rejected_id = matching.enter_order(
                        state, request, contract, status=OrderStatus.REJECTED
                    ).id
                return PlaceOrderResult(
                    rejected_id, PlaceOrderErrorCode(rejection.error_code), rejection.message
                )
            order = matching.enter_order(
                state, request, contract, status=matching.initial_status(request)
            )
            brackets.create_children(state, order)
            matching.offer_current_price(state, order, at_entry=True)
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
        changes = OrderChanges(
            size=size, limit_price=limit_price, stop_price=stop_price, trail_price=trail_price
        )
        with self._lock:
            state = self._state
            code, message = rules.check_modification(state, username, account_id, order_id, changes)
            if code != ModifyOrderErrorCode.SUCCESS:
                return code, message
            order = state.orders[order_id]
            _apply_changes(state, order, changes)
            state.touch(order)
            if order.status == OrderStatus.OPEN:
                matching.offer_current_price(state, order, at_entry=True)
            return code, None

    def cancel_order(
        self, username: str, account_id: int, order_id: int
    ) -> tuple[CancelOrderErrorCode, str | None]:
        with self._lock:
            code, message = rules.check_cancellation(self._state, username, account_id, order_id)
            if code != CancelOrderErrorCode.SUCCESS:
                return code, message
            brackets.cancel(
                self._state,
                self._state.orders[order_id],
                offer_price=matching.offer_current_price,
            )
            return code, None

    def close_position(
        self, username: str, account_id: int, contract_id: str, size: int | None = None
    ) -> CloseOutcome:
        """Flatten (size None) or reduce a position with a market order."""
        with self._lock:
            state = self._state
            if state.visible_account(username, account_id) is None:
                return "account_not_found"
            contract = state.contracts.get(contract_id)
            if contract is None:
                return "contract_not_found"
            position = state.positions.get((account_id, contract_id))
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
            order = matching.enter_order(state, request, contract, status=OrderStatus.PENDING)
            matching.offer_current_price(state, order, at_entry=True)
            return "ok"

    # ------------------------------------------------------------ internals

    def _require_account(self, account_id: int) -> Account:
        account = self._state.accounts.get(account_id)
        if account is None:
            raise BrokerError(f"no account {account_id}")
        return account

    def _require_contract(self, contract_id: str) -> Contract:
        contract = self._state.contracts.get(contract_id)
        if contract is None:
            raise BrokerError(f"no contract {contract_id}")
        return contract

    def _require_order(self, order_id: int) -> Order:
        order = self._state.orders.get(order_id)
        if order is None:
            raise BrokerError(f"no order {order_id}")
        return order


def _apply_changes(state: BrokerState, order: Order, changes: OrderChanges) -> None:
    """Apply an accepted Order/modify; the caller publishes the order and offers it the price."""
    if changes.size is not None:
        order.size = changes.size
        brackets.resize_suspended_children(state, order, changes.size)
    if changes.limit_price is not None:
        order.limit_price = changes.limit_price
    if changes.stop_price is not None:
        order.stop_price = changes.stop_price
    last = state.prices.get(order.contract_id)
    if changes.trail_price is not None and last is not None:
        order.start_trailing(
            from_price=last,
            distance=abs(last - changes.trail_price),
            tick_size=state.contracts[order.contract_id].tick_size,
        )


def _created_between(created: datetime, start: datetime, end: datetime | None) -> bool:
    return created >= start and (end is None or created <= end)


def _checked_plan(plan: Iterable[int]) -> list[int]:
    chunks = list(plan)
    if not chunks or any(not isinstance(c, int) or c < 1 for c in chunks):
        raise BrokerError(f"a fill plan is a non-empty list of positive ints, not {chunks!r}")
    return chunks
