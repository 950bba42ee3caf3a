"""Bracket orders [4.4]: the stop-loss and take-profit children of an entry, and their OCO rules.

- The sign of `ticks` is ignored; the stop loss always goes on the losing side and the take
  profit on the winning side.
- Children are created Suspended (8) with no price, become Open (1) when the entry is completely
  filled (or is cancelled after a partial fill, for the filled size), and are cancelled with the
  entry otherwise.
- Only the TP carries `linkedOrderId` (= the SL id), as seen live.
- A partial fill of one leg shrinks the other; a complete fill, or the position going flat,
  cancels the working children.

Brackets fill nothing themselves. A child they arm is handed back to matching through the
`offer_price` callback the caller passes in, so that this module does not import `matching`
(which calls `after_fill` after every fill). Everything runs under the facade's lock.
"""

from __future__ import annotations

from collections.abc import Callable

from projectx.enums import OrderSide, OrderStatus, OrderType
from projectx.simulator.broker.entities import ACTIVE_ORDER_STATUSES, Order
from projectx.simulator.broker.state import BrokerState

PriceOffer = Callable[[BrokerState, Order], None]
"""Gives one order a chance to fill at its contract's current price (`matching`)."""


def create_children(state: BrokerState, entry: Order) -> None:
    """Create the entry's stop-loss (first) and take-profit children, Suspended and unpriced."""
    stop_loss_id: int | None = None
    for suffix, leg in (("-SL", entry.stop_loss), ("-TP", entry.take_profit)):
        if leg is None:
            continue
        now = state.clock.now()
        child = Order(
            id=next(state.order_ids),
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
        state.record_new_order(child)


def resize_suspended_children(state: BrokerState, entry: Order, size: int) -> None:
    """A modified entry size carries over to the children still waiting for it."""
    for child in _children(state, entry):
        if child.status == OrderStatus.SUSPENDED:
            child.size = size
            state.touch(child)


def cancel(state: BrokerState, order: Order, *, offer_price: PriceOffer) -> None:
    """Cancel `order`; its suspended children are armed for what it filled, else cancelled."""
    was_filled = order.fill_volume
    order.status = OrderStatus.CANCELLED
    state.touch(order)
    children = [c for c in _children(state, order) if c.status == OrderStatus.SUSPENDED]
    if not children:
        return
    if was_filled:
        _arm_children(state, order, was_filled, offer_price=offer_price)
    else:
        for child in children:
            child.status = OrderStatus.CANCELLED
            state.touch(child)


def after_fill(
    state: BrokerState, order: Order, quantity: int, *, flat: bool, offer_price: PriceOffer
) -> None:
    """The bracket consequences of `order` filling `quantity` (`flat`: the position is now 0).

    1. A completely filled entry arms its children for its whole size.
    2. A leg that filled completely cancels its working sibling; a partial fill shrinks it
       (never below what the sibling has filled, plus one).
    3. A flat position cancels every working child on that account and contract.
    """
    if order.status == OrderStatus.FILLED:
        _arm_children(state, order, order.size, offer_price=offer_price)
    if not state.oco_cancels:
        return  # the `suppress_oco` fault: the broker forgets its OCO duties
    if order.parent_order_id is not None:
        for sibling in _siblings(state, order):
            if sibling.status not in ACTIVE_ORDER_STATUSES:
                continue
            if order.status == OrderStatus.FILLED:
                cancel(state, sibling, offer_price=offer_price)
            else:
                sibling.size = max(sibling.fill_volume + 1, sibling.size - quantity)
                state.touch(sibling)
    if flat:
        for other in list(state.orders.values()):
            if (
                other.parent_order_id is not None
                and other.account_id == order.account_id
                and other.contract_id == order.contract_id
                and other.status == OrderStatus.OPEN
            ):
                cancel(state, other, offer_price=offer_price)


def _arm_children(state: BrokerState, entry: Order, size: int, *, offer_price: PriceOffer) -> None:
    """Price and open the entry's suspended children for `size`, then offer them the market."""
    contract = state.contracts[entry.contract_id]
    assert entry.filled_price is not None
    # Round the average entry to the tick so the child prices are valid prices.
    base = (entry.filled_price / contract.tick_size).to_integral_value() * contract.tick_size
    direction = 1 if entry.is_buy else -1
    armed: list[Order] = []
    for child in _children(state, entry):
        if child.status != OrderStatus.SUSPENDED or child.bracket_ticks is None:
            continue
        offset = child.bracket_ticks * contract.tick_size
        child.size = size
        child.status = OrderStatus.OPEN
        if child.type == OrderType.LIMIT:  # take profit: the winning side
            child.limit_price = base + direction * offset
        elif child.type == OrderType.TRAILING_STOP:
            # Trails from the current price (the entry's, if none yet), on the losing side.
            child.start_trailing(
                from_price=state.prices.get(entry.contract_id, base),
                distance=offset,
                tick_size=contract.tick_size,
            )
        else:  # stop loss: the losing side
            child.stop_price = base - direction * offset
        state.touch(child)
        armed.append(child)
    # Only once every child is priced: a child that fills at once may cancel its sibling.
    for child in armed:
        if child.status == OrderStatus.OPEN:
            offer_price(state, child)


def _children(state: BrokerState, order: Order) -> list[Order]:
    return sorted(
        (o for o in state.orders.values() if o.parent_order_id == order.id),
        key=lambda o: o.id,
    )


def _siblings(state: BrokerState, order: Order) -> list[Order]:
    return [
        o
        for o in state.orders.values()
        if o.parent_order_id == order.parent_order_id and o.id != order.id
    ]
