"""How orders enter the simulated book and trade against the contract's single current price:
stop triggers, trailing stops, fill plans, and what a fill does to the position and the account.

Choices where the reference says "unconfirmed" (reference section numbers in brackets):

- Fill prices: a market order (and a triggered stop) fills at the contract's current price; a limit
  order that is marketable when placed or modified fills at the current price (never worse than
  its limit), and one that rests fills at its limit price when a later price touches or crosses it.
- StopLimit (3) [4.4] triggers like a stop, then works as a limit.
- JoinBid (6) / JoinAsk (7): the simulator has a single price per contract and no book, so a
  JoinBid rests as a buy limit one tick below the current price, a JoinAsk one tick above.
- TrailingStop (5) [4.4]: the trigger starts |last - trailPrice| behind the current price and
  follows the price whenever it moves in the order's favour, until the price comes back to it.
- A fill that reverses a position is recorded as one trade whose `profitAndLoss` is the P&L of
  the closed part; the position is closed (action 2) and a new one, with a new id, opened.
- `profitAndLoss` is gross (fees are separate), rounded to cents; `fees` = the contract's fee per
  contract x size. The account balance moves by P&L minus fees and a `GatewayUserAccount` update
  goes out.

Every function here runs under the facade's lock and receives the `BrokerState` it changes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from projectx.enums import EventAction, OrderSide, OrderStatus, OrderType
from projectx.simulator.broker import brackets
from projectx.simulator.broker.entities import (
    Contract,
    Order,
    PlaceOrderRequest,
    Position,
    Trade,
)
from projectx.simulator.broker.state import BrokerState

_AVERAGE_QUANTUM = Decimal("0.000000001")
_CENT = Decimal("0.01")
_STOP_TYPES = (OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TRAILING_STOP)


def initial_status(request: PlaceOrderRequest) -> OrderStatus:
    # Market orders show Pending first (seen live); resting orders are created Open.
    return OrderStatus.PENDING if request.type == OrderType.MARKET else OrderStatus.OPEN


def enter_order(
    state: BrokerState, request: PlaceOrderRequest, contract: Contract, *, status: OrderStatus
) -> Order:
    """Create the order (already validated, or created Rejected) with its first prices, give it
    any queued fill plan, and publish it. It gets no chance to fill here."""
    now = state.clock.now()
    order_type = OrderType(request.type)
    order = Order(
        id=next(state.order_ids),
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
    last = state.prices.get(contract.id)
    if order_type == OrderType.TRAILING_STOP and request.trail_price is not None and last:
        order.start_trailing(
            from_price=last,
            distance=abs(last - request.trail_price),
            tick_size=contract.tick_size,
        )
    elif order_type == OrderType.JOIN_BID and last is not None:
        order.limit_price = last - contract.tick_size
    elif order_type == OrderType.JOIN_ASK and last is not None:
        order.limit_price = last + contract.tick_size
    if status != OrderStatus.REJECTED:
        _take_queued_fill_plan(state, order)
    state.record_new_order(order)
    return order


def offer_current_price(state: BrokerState, order: Order, *, at_entry: bool = False) -> None:
    """Give `order` a chance to fill at its contract's current price, if it has one yet."""
    last = state.prices.get(order.contract_id)
    if last is not None:
        offer_price(state, order, last, at_entry=at_entry)


def offer_price(
    state: BrokerState, order: Order, price: Decimal, *, at_entry: bool = False
) -> None:
    """Fill one chunk of `order` if `price` lets it. Called per order per price move."""
    if order.type == OrderType.MARKET:
        fill(state, order, next_chunk(order), price)
        return
    if order.type == OrderType.TRAILING_STOP and not order.triggered:
        _trail(state, order, price)
    if order.type in _STOP_TYPES:
        if not order.triggered:
            assert order.stop_price is not None
            crossed = price >= order.stop_price if order.is_buy else price <= order.stop_price
            if not crossed:
                return
            order.triggered = True
        if order.type != OrderType.STOP_LIMIT:
            fill(state, order, next_chunk(order), price)
            return
    limit = order.limit_price
    if limit is None:
        return
    marketable = price <= limit if order.is_buy else price >= limit
    if marketable:
        # A limit that is marketable on arrival trades at the market (never worse than its
        # limit); one that was resting fills at its limit when the market reaches it.
        fill(state, order, next_chunk(order), price if at_entry else limit)


def next_chunk(order: Order) -> int:
    """The size of the order's next fill: its fill plan's next chunk, else all that is left."""
    if order.fill_plan:
        return min(order.fill_plan.pop(0), order.remaining)
    return order.remaining


def fill(state: BrokerState, order: Order, quantity: int, price: Decimal) -> Trade:
    """Execute `quantity` of `order` at `price`: a trade, the order, the position, the
    account, in that order on the stream; then the bracket consequences."""
    contract = state.contracts[order.contract_id]
    account = state.accounts[order.account_id]
    # Every object gets its own timestamp, increasing in the order the stream shows them.
    traded_at = state.clock.now()
    order_updated_at = state.clock.now()
    position_opened_at = state.clock.now()
    signed = quantity if order.is_buy else -quantity
    key = (order.account_id, order.contract_id)
    position = state.positions.get(key)
    position_events: list[tuple[EventAction, Position]] = []
    profit_and_loss: Decimal | None = None
    point_value = contract.tick_value / contract.tick_size

    if position is None or position.net == 0:
        position = _open_position(state, order, signed, price, position_opened_at)
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
            del state.positions[key]
            if remainder != 0:
                reopened = _open_position(state, order, remainder, price, position_opened_at)
                position_events.append((EventAction.CREATE, reopened))
        else:
            position.net = remainder
            position_events.append((EventAction.UPDATE, position))

    fees = _quantize(contract.fee_per_contract * quantity, _CENT)
    trade = Trade(
        id=next(state.trade_ids),
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
    state.trades[trade.id] = trade
    state.emit("trade", trade.account_id, EventAction.CREATE, trade.to_wire())

    previous_value = (order.filled_price or Decimal(0)) * order.fill_volume
    order.fill_volume += quantity
    order.filled_price = _quantize(
        (previous_value + price * quantity) / order.fill_volume, _AVERAGE_QUANTUM
    )
    order.status = OrderStatus.FILLED if order.remaining == 0 else OrderStatus.OPEN
    order.update_timestamp = order_updated_at
    state.emit_order(order, EventAction.UPDATE)

    for action, changed in position_events:
        state.emit("position", changed.account_id, action, changed.to_wire())

    account.balance += (profit_and_loss or Decimal(0)) - fees
    state.emit_account(account)

    brackets.after_fill(
        state,
        order,
        quantity,
        flat=state.is_flat(order.account_id, order.contract_id),
        offer_price=offer_current_price,
    )
    return trade


def _take_queued_fill_plan(state: BrokerState, order: Order) -> None:
    for index, (account_filter, plan) in enumerate(state.next_order_fill_plans):
        if account_filter in (None, order.account_id):
            order.fill_plan = list(plan)
            del state.next_order_fill_plans[index]
            return


def _trail(state: BrokerState, order: Order, price: Decimal) -> None:
    """Move the trigger after the price when it improves on the best seen (a ratchet)."""
    assert order.trail_extreme is not None
    better = price < order.trail_extreme if order.is_buy else price > order.trail_extreme
    if not better:
        return
    order.trail_extreme = price
    order.stop_price = order.trailing_stop_level(price)
    state.touch(order)


def _open_position(
    state: BrokerState, order: Order, net: int, price: Decimal, opened_at: datetime
) -> Position:
    position = Position(
        id=next(state.position_ids),
        account_id=order.account_id,
        contract_id=order.contract_id,
        creation_timestamp=opened_at,
        net=net,
        average_price=price,
    )
    state.positions[(order.account_id, order.contract_id)] = position
    return position


def _quantize(value: Decimal, quantum: Decimal) -> Decimal:
    return value.quantize(quantum, rounding=ROUND_HALF_EVEN)
