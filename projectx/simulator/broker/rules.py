"""Which Order/place, Order/modify and Order/cancel requests the simulated broker refuses, with
the error code and message of each refusal. Nothing here changes state.

Choices where the reference says "unconfirmed" (reference section numbers in brackets):

- Validation rejects (bad size, side, type, price off tick, duplicate customTag, ...) create no
  order and return `orderId: null`. Rejects injected with `reject_next_orders(create_order=True)`
  and the "Position Brackets" bracket reject do create an order in status 5 Rejected and return
  its id with `success: false`, as seen live [4.4] (the facade creates that order).
- `customTag` is unique per account forever (over every order ever created on it, whatever its
  state); an empty string counts as no tag.
- StopLimit (3) is placeable [4.4]. A stop whose trigger is already on the wrong side of the
  current price is rejected (errorCode 2).
- TrailingStop (5) [4.4]: `trailPrice` is an absolute price, and the distance |last - trailPrice|
  must be a whole number of ticks from 1 to `MAX_TRAIL_TICKS`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TypeVar

from projectx.enums import (
    CancelOrderErrorCode,
    ModifyOrderErrorCode,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrderErrorCode,
)
from projectx.simulator.broker.entities import (
    ACTIVE_ORDER_STATUSES,
    OPEN_ORDER_STATUSES,
    Account,
    Contract,
    Order,
    OrderChanges,
    PlaceOrderRequest,
    PlaceOrderResult,
)
from projectx.simulator.broker.state import BrokerState

MAX_TRAIL_TICKS = 1000
POSITION_BRACKETS_MESSAGE = (
    "Brackets cannot be used with Position Brackets. You must enable Auto OCO Brackets."
)

OrderActionCode = TypeVar("OrderActionCode", ModifyOrderErrorCode, CancelOrderErrorCode)

_LIMIT_PRICED_TYPES = (OrderType.LIMIT, OrderType.STOP_LIMIT)
_STOP_PRICED_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT)
_TYPES_NEEDING_LAST_PRICE = (OrderType.MARKET, OrderType.JOIN_BID, OrderType.JOIN_ASK)
_MODIFIABLE_LIMIT_TYPES = (
    OrderType.LIMIT,
    OrderType.STOP_LIMIT,
    OrderType.JOIN_BID,
    OrderType.JOIN_ASK,
)


def check_placement(
    state: BrokerState, username: str, request: PlaceOrderRequest
) -> PlaceOrderResult | None:
    """The refusal of a new order that creates no order, or None when none applies."""
    codes = PlaceOrderErrorCode
    account = state.visible_account(username, request.account_id)
    if account is None:
        return PlaceOrderResult(None, codes.ACCOUNT_NOT_FOUND, "Account not found.")
    if not account.can_trade:
        return PlaceOrderResult(
            None, codes.ACCOUNT_VIOLATION, "The account is not allowed to trade."
        )
    contract = state.contracts.get(request.contract_id)
    if contract is None:
        return PlaceOrderResult(None, codes.CONTRACT_NOT_FOUND, "Contract not found.")
    if not contract.active:
        return PlaceOrderResult(None, codes.CONTRACT_NOT_ACTIVE, "Contract is not active.")
    problem = _new_order_problem(request, contract, state.prices.get(contract.id))
    if problem is not None:
        return PlaceOrderResult(None, codes.ORDER_REJECTED, problem)
    tag = request.custom_tag or None
    if tag is not None and tag in state.tags_used.get(account.id, set()):
        return PlaceOrderResult(
            None,
            codes.ORDER_REJECTED,
            f"Order rejected: the customTag {tag!r} is a duplicate; a custom tag must "
            "be unique across the account.",
        )
    return None


def brackets_need_auto_oco(account: Account, request: PlaceOrderRequest) -> bool:
    """An order with brackets on a "Position Brackets" account is rejected (with an order)."""
    return request.has_brackets and not account.auto_oco_brackets


def check_modification(
    state: BrokerState, username: str, account_id: int, order_id: int, changes: OrderChanges
) -> tuple[ModifyOrderErrorCode, str | None]:
    codes = ModifyOrderErrorCode
    found = _caller_order(state, codes, username, account_id, order_id)
    if not isinstance(found, Order):
        return found
    order = found
    if order.status == OrderStatus.SUSPENDED:
        return codes.REJECTED, "A suspended bracket order cannot be modified."
    if order.status not in OPEN_ORDER_STATUSES:
        return codes.REJECTED, _not_working_message(order)
    if order.type == OrderType.MARKET:
        return codes.REJECTED, "A market order cannot be modified."
    contract = state.contracts[order.contract_id]
    problem = _modification_problem(order, contract, state.prices.get(contract.id), changes)
    if problem is not None:
        return codes.REJECTED, problem
    return codes.SUCCESS, None


def check_cancellation(
    state: BrokerState, username: str, account_id: int, order_id: int
) -> tuple[CancelOrderErrorCode, str | None]:
    codes = CancelOrderErrorCode
    found = _caller_order(state, codes, username, account_id, order_id)
    if not isinstance(found, Order):
        return found
    if found.status not in ACTIVE_ORDER_STATUSES:
        return codes.REJECTED, _not_working_message(found)
    return codes.SUCCESS, None


def _caller_order(
    state: BrokerState,
    codes: type[OrderActionCode],
    username: str,
    account_id: int,
    order_id: int,
) -> Order | tuple[OrderActionCode, str]:
    """The order Order/modify or Order/cancel names, or the refusal when the caller cannot
    see the account or the order is not on it (both endpoints' enums share these codes)."""
    if state.visible_account(username, account_id) is None:
        return codes.ACCOUNT_NOT_FOUND, "Account not found."
    order = state.account_order(account_id, order_id)
    if order is None:
        return codes.ORDER_NOT_FOUND, "Order not found."
    return order


def _not_working_message(order: Order) -> str:
    return f"The order is not working (status {order.status.name})."


def _new_order_problem(
    request: PlaceOrderRequest, contract: Contract, last: Decimal | None
) -> str | None:
    if request.type not in OrderType.__members__.values() or request.type == 0:
        return "Invalid order type."
    if request.side not in (OrderSide.BID, OrderSide.ASK):
        return "Invalid order side."
    if request.size < 1:
        return "Invalid order size. The size must be at least 1."
    order_type = OrderType(request.type)
    for label, price in (
        ("limit", request.limit_price),
        ("stop", request.stop_price),
    ):
        if price is not None and price <= 0:
            return f"Invalid {label} price. The price must be positive."
    if order_type in _LIMIT_PRICED_TYPES:
        if request.limit_price is None:
            return "Invalid limit price. A limit price is required."
        if not contract.on_tick(request.limit_price):
            return "Invalid limit price. Price is not aligned to tick size."
    if order_type in _STOP_PRICED_TYPES:
        if request.stop_price is None:
            return "Invalid stop price. A stop price is required."
        if not contract.on_tick(request.stop_price):
            return "Invalid stop price. Price is not aligned to tick size."
        if last is None:
            return "Cannot place a stop order without a last price."
        problem = _stop_side_problem(request.side == OrderSide.BID, request.stop_price, last)
        if problem is not None:
            return problem
    if order_type == OrderType.TRAILING_STOP:
        if request.trail_price is None:
            return "Trail Distance not set."
        problem = _trail_problem(request.trail_price, contract, last)
        if problem is not None:
            return problem
    if order_type in _TYPES_NEEDING_LAST_PRICE and last is None:
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


def _modification_problem(
    order: Order, contract: Contract, last: Decimal | None, changes: OrderChanges
) -> str | None:
    if changes.size is not None and changes.size <= order.fill_volume:
        return f"Invalid order size. The size must be more than the filled {order.fill_volume}."
    if changes.limit_price is not None:
        if order.type not in _MODIFIABLE_LIMIT_TYPES:
            return "Invalid limit price. This order type has no limit price."
        if changes.limit_price <= 0 or not contract.on_tick(changes.limit_price):
            return "Invalid limit price. Price is not aligned to tick size."
    if changes.stop_price is not None:
        if order.type not in _STOP_PRICED_TYPES:
            return "Invalid stop price. This order type has no stop price."
        if changes.stop_price <= 0 or not contract.on_tick(changes.stop_price):
            return "Invalid stop price. Price is not aligned to tick size."
        # Once triggered, the stop level has done its job; which side of the market it is on
        # no longer matters.
        if last is not None and not order.triggered:
            problem = _stop_side_problem(order.is_buy, changes.stop_price, last)
            if problem is not None:
                return problem
    if changes.trail_price is not None:
        if order.type != OrderType.TRAILING_STOP:
            return "Invalid trail price. This order is not a trailing stop."
        return _trail_problem(changes.trail_price, contract, last)
    return None


def _stop_side_problem(is_buy: bool, stop_price: Decimal, last: Decimal) -> str | None:
    """A stop already at or through the market would trigger at once: refuse it."""
    if is_buy and stop_price <= last:
        return "Invalid stop price. A buy stop must be above the current price."
    if not is_buy and stop_price >= last:
        return "Invalid stop price. A sell stop must be below the current price."
    return None


def _trail_problem(trail_price: Decimal, contract: Contract, last: Decimal | None) -> str | None:
    """The trailing-stop checks shared by place and modify: 1..MAX_TRAIL_TICKS whole ticks."""
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
