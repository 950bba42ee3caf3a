"""The simulator's broker on its own (no sockets): fills, positions, P&L, brackets, rules."""

from __future__ import annotations

import itertools
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projectx.enums import (
    CancelOrderErrorCode,
    EventAction,
    ModifyOrderErrorCode,
    OrderSide,
    OrderStatus,
    OrderType,
    PlaceOrderErrorCode,
    PositionType,
)
from projectx.simulator.broker import (
    BracketLeg,
    Broker,
    BrokerError,
    PlaceOrderRequest,
    symbol_id_for,
)

MNQ = "CON.F.US.MNQ.Z26"
ACCOUNT = 1001
USER = "trader"


@pytest.fixture
def broker() -> Broker:
    broker = Broker()
    broker.add_user(USER, "key")
    broker.add_account(ACCOUNT, "PRAC-1001", Decimal("50000"))
    broker.add_contract(MNQ, "MNQZ6", Decimal("0.25"), Decimal("0.5"))
    broker.set_price(MNQ, Decimal("21000.00"))
    return broker


def place(broker: Broker, **overrides: Any) -> Any:
    fields: dict[str, Any] = {
        "account_id": ACCOUNT,
        "contract_id": MNQ,
        "type": OrderType.MARKET,
        "side": OrderSide.BID,
        "size": 1,
    }
    fields.update(overrides)
    return broker.place_order(USER, PlaceOrderRequest(**fields))


def kinds(broker: Broker) -> list[tuple[str, int]]:
    return [(event.kind, int(event.action)) for event in broker.events()]


def test_symbol_id_is_derived_from_the_contract_id() -> None:
    assert symbol_id_for("CON.F.US.MNQ.Z26") == "F.US.MNQ"
    assert symbol_id_for("odd") == "odd"


def test_market_order_lifecycle_on_the_stream(broker: Broker) -> None:
    result = place(broker, size=2)

    assert result.success and result.order_id is not None and result.order_id >= 9000
    assert kinds(broker) == [
        ("order", EventAction.CREATE),
        ("trade", EventAction.CREATE),
        ("order", EventAction.UPDATE),
        ("position", EventAction.CREATE),
        ("account", EventAction.UPDATE),
    ]
    created, trade, filled, position, account = (event.data for event in broker.events())
    assert created["status"] == OrderStatus.PENDING and created["fillVolume"] == 0
    assert "limitPrice" not in created and "filledPrice" not in created  # nulls left out live
    assert trade["price"] == Decimal("21000.00") and trade["profitAndLoss"] is None
    assert trade["fees"] == Decimal("0.74") and trade["orderId"] == result.order_id
    assert filled["status"] == OrderStatus.FILLED and filled["fillVolume"] == 2
    assert filled["filledPrice"] == Decimal("21000.00")
    assert position["type"] == PositionType.LONG and position["size"] == 2
    assert account["balance"] == Decimal("49999.26")


def test_timestamps_strictly_increase_across_events(broker: Broker) -> None:
    place(broker, size=1)
    place(broker, size=1, side=OrderSide.ASK)
    stamps: list[datetime] = []
    for event in broker.events():
        for key in ("updateTimestamp", "creationTimestamp"):
            if key in event.data and event.kind != "position":
                stamps.append(datetime.fromisoformat(event.data[key]))
                break
    assert all(a < b for a, b in itertools.pairwise(stamps))
    assert broker.events()[0].data["creationTimestamp"].endswith("+00:00")


def test_positions_net_average_and_close_with_pnl(broker: Broker) -> None:
    place(broker, size=1)
    broker.set_price(MNQ, Decimal("21001.00"))
    place(broker, size=1)
    (position,) = broker.positions(ACCOUNT)
    assert position["size"] == 2 and position["averagePrice"] == Decimal("21000.50")

    broker.set_price(MNQ, Decimal("21011.00"))
    place(broker, size=1, side=OrderSide.ASK)
    (position,) = broker.positions(ACCOUNT)
    assert position["size"] == 1 and position["type"] == PositionType.LONG
    closing_trade = broker.trades(ACCOUNT)[-1]
    # 10.5 points x 1 contract x (0.5 / 0.25) dollars a point
    assert closing_trade["profitAndLoss"] == Decimal("21.00")

    place(broker, size=1, side=OrderSide.ASK)
    assert broker.positions(ACCOUNT) == []
    close_event = [e for e in broker.events() if e.kind == "position"][-1]
    assert close_event.action == EventAction.DELETE
    assert close_event.data["type"] == PositionType.UNDEFINED and close_event.data["size"] == 0
    balance = broker.account(ACCOUNT)["balance"]  # type: ignore[index]
    assert balance == Decimal("50000") + Decimal("21.00") + Decimal("21.00") - 4 * Decimal("0.37")


def test_a_reversal_closes_and_opens_a_new_position(broker: Broker) -> None:
    place(broker, size=1)
    first_id = broker.positions(ACCOUNT)[0]["id"]
    broker.set_price(MNQ, Decimal("20990.00"))
    place(broker, size=3, side=OrderSide.ASK)

    (position,) = broker.positions(ACCOUNT)
    assert position["type"] == PositionType.SHORT and position["size"] == 2
    assert position["id"] != first_id and position["averagePrice"] == Decimal("20990.00")
    assert broker.trades(ACCOUNT)[-1]["profitAndLoss"] == Decimal("-20.00")
    actions = [int(e.action) for e in broker.events() if e.kind == "position"]
    assert actions == [EventAction.CREATE, EventAction.DELETE, EventAction.CREATE]


def test_limit_order_rests_then_fills_at_its_limit(broker: Broker) -> None:
    result = place(broker, type=OrderType.LIMIT, limit_price=Decimal("20990.00"))
    order = broker.order(result.order_id)
    assert order is not None and order["status"] == OrderStatus.OPEN
    assert broker.open_orders(ACCOUNT)[0]["id"] == result.order_id

    broker.set_price(MNQ, Decimal("20995.00"))
    assert broker.trades(ACCOUNT) == []
    broker.set_price(MNQ, Decimal("20985.00"))  # gaps through the limit
    (trade,) = broker.trades(ACCOUNT)
    assert trade["price"] == Decimal("20990.00")
    assert broker.order(result.order_id)["status"] == OrderStatus.FILLED  # type: ignore[index]


def test_marketable_limit_fills_at_the_market(broker: Broker) -> None:
    place(broker, type=OrderType.LIMIT, limit_price=Decimal("21010.00"))
    assert broker.trades(ACCOUNT)[0]["price"] == Decimal("21000.00")


def test_stop_triggers_when_the_price_crosses(broker: Broker) -> None:
    result = place(broker, type=OrderType.STOP, side=OrderSide.ASK, stop_price=Decimal("20990"))
    broker.set_price(MNQ, Decimal("20992.00"))
    assert broker.trades(ACCOUNT) == []
    broker.set_price(MNQ, Decimal("20988.00"))
    assert broker.trades(ACCOUNT)[0]["price"] == Decimal("20988.00")
    assert broker.order(result.order_id)["status"] == OrderStatus.FILLED  # type: ignore[index]


def test_stop_limit_triggers_then_works_as_a_limit(broker: Broker) -> None:
    place(
        broker,
        type=OrderType.STOP_LIMIT,
        stop_price=Decimal("21010.00"),
        limit_price=Decimal("21012.00"),
    )
    broker.set_price(MNQ, Decimal("21020.00"))  # triggers; limit not reachable yet
    assert broker.trades(ACCOUNT) == []
    broker.set_price(MNQ, Decimal("21011.00"))
    assert broker.trades(ACCOUNT)[0]["price"] == Decimal("21012.00")


def test_trailing_stop_follows_the_price(broker: Broker) -> None:
    result = place(
        broker, type=OrderType.TRAILING_STOP, side=OrderSide.ASK, trail_price=Decimal("20995.00")
    )
    order = broker.order(result.order_id)
    assert order is not None
    assert order["trailPrice"] == Decimal("5.00") and order["trailDistance"] == 20
    assert order["stopPrice"] == Decimal("20995.00")
    broker.set_price(MNQ, Decimal("21010.00"))
    assert broker.order(result.order_id)["stopPrice"] == Decimal("21005.00")  # type: ignore[index]
    broker.set_price(MNQ, Decimal("21006.00"))
    assert broker.trades(ACCOUNT) == []
    broker.set_price(MNQ, Decimal("21004.00"))
    assert broker.trades(ACCOUNT)[0]["price"] == Decimal("21004.00")


@pytest.mark.parametrize(
    ("overrides", "message_part"),
    [
        ({"size": 0}, "size"),
        ({"side": 2}, "side"),
        ({"type": 0}, "type"),
        ({"type": 9}, "type"),
        ({"type": OrderType.LIMIT}, "limit price"),
        ({"type": OrderType.LIMIT, "limit_price": Decimal("21000.10")}, "tick"),
        ({"type": OrderType.STOP}, "stop price"),
        ({"type": OrderType.STOP, "stop_price": Decimal("20990")}, "above"),
        ({"type": OrderType.TRAILING_STOP}, "Trail Distance not set"),
        ({"type": OrderType.TRAILING_STOP, "trail_price": Decimal("21000")}, "not set"),
        ({"type": OrderType.TRAILING_STOP, "trail_price": Decimal("20700")}, "maximum (1000)"),
        ({"stop_loss_bracket": BracketLeg(0, OrderType.STOP)}, "bracket"),
        ({"take_profit_bracket": BracketLeg(8, OrderType.STOP)}, "bracket"),
    ],
)
def test_validation_rejects_with_order_rejected_and_creates_nothing(
    broker: Broker, overrides: dict[str, Any], message_part: str
) -> None:
    result = place(broker, **overrides)
    assert result.error_code == PlaceOrderErrorCode.ORDER_REJECTED
    assert result.order_id is None
    assert message_part.lower() in (result.error_message or "").lower()
    assert broker.orders(ACCOUNT) == []


def test_account_and_contract_errors(broker: Broker) -> None:
    assert place(broker, account_id=9).error_code == PlaceOrderErrorCode.ACCOUNT_NOT_FOUND
    assert place(broker, contract_id="X").error_code == PlaceOrderErrorCode.CONTRACT_NOT_FOUND
    broker.add_contract("CON.F.US.OLD.H20", "OLDH0", Decimal(1), Decimal(1), active=False)
    inactive = place(broker, contract_id="CON.F.US.OLD.H20")
    assert inactive.error_code == PlaceOrderErrorCode.CONTRACT_NOT_ACTIVE
    broker.update_account(ACCOUNT, can_trade=False)
    assert place(broker).error_code == PlaceOrderErrorCode.ACCOUNT_VIOLATION
    broker.add_account(2002, "OTHER", owner="someone-else")
    assert place(broker, account_id=2002).error_code == PlaceOrderErrorCode.ACCOUNT_NOT_FOUND


def test_custom_tag_is_unique_per_account_forever(broker: Broker) -> None:
    first = place(broker, custom_tag="entry-1")
    assert first.success
    duplicate = place(broker, custom_tag="entry-1", type=OrderType.LIMIT, limit_price=Decimal(1))
    assert duplicate.error_code == PlaceOrderErrorCode.ORDER_REJECTED
    assert duplicate.order_id is None and "duplicate" in (duplicate.error_message or "")
    assert len(broker.orders(ACCOUNT)) == 1
    broker.add_account(1002, "PRAC-1002")
    assert place(broker, account_id=1002, custom_tag="entry-1").success


def test_fill_plan_splits_a_market_order_over_price_moves(broker: Broker) -> None:
    broker.queue_fill_plan([2, 1, 2])
    result = place(broker, size=5)
    order = broker.order(result.order_id)
    assert order is not None and order["fillVolume"] == 2 and order["status"] == OrderStatus.OPEN
    broker.set_price(MNQ, Decimal("21001.00"))
    assert broker.order(result.order_id)["fillVolume"] == 3  # type: ignore[index]
    broker.set_price(MNQ, Decimal("21002.00"))
    final = broker.order(result.order_id)
    assert final is not None and final["status"] == OrderStatus.FILLED
    assert [t["size"] for t in broker.trades(ACCOUNT)] == [2, 1, 2]
    # (2 x 21000 + 1 x 21001 + 2 x 21002) / 5
    assert final["filledPrice"] == Decimal("21001.000000000")
    assert broker.positions(ACCOUNT)[0]["size"] == 5


def test_fill_order_fills_explicitly(broker: Broker) -> None:
    result = place(broker, size=3, type=OrderType.LIMIT, limit_price=Decimal("20900"))
    broker.set_fill_plan(result.order_id, [1, 2])
    assert broker.fill_order(result.order_id)["size"] == 1
    trade = broker.fill_order(result.order_id, price=Decimal("20899.75"))
    assert trade["size"] == 2 and trade["price"] == Decimal("20899.75")
    with pytest.raises(BrokerError):
        broker.fill_order(result.order_id)


def test_modify_and_cancel(broker: Broker) -> None:
    result = place(broker, size=2, type=OrderType.LIMIT, limit_price=Decimal("20900.00"))
    order_id = result.order_id
    assert broker.modify_order(USER, ACCOUNT, order_id, size=3) == (
        ModifyOrderErrorCode.SUCCESS,
        None,
    )
    code, message = broker.modify_order(USER, ACCOUNT, order_id, limit_price=Decimal("20900.10"))
    assert code == ModifyOrderErrorCode.REJECTED and "tick" in (message or "")
    code, _ = broker.modify_order(USER, ACCOUNT, order_id, stop_price=Decimal("21000"))
    assert code == ModifyOrderErrorCode.REJECTED
    assert broker.modify_order(USER, ACCOUNT, 1, size=1)[0] == ModifyOrderErrorCode.ORDER_NOT_FOUND
    assert broker.modify_order(USER, 7, order_id)[0] == ModifyOrderErrorCode.ACCOUNT_NOT_FOUND
    # Moving the limit through the market fills it at the market.
    broker.modify_order(USER, ACCOUNT, order_id, limit_price=Decimal("21005.00"))
    assert broker.order(order_id)["status"] == OrderStatus.FILLED  # type: ignore[index]
    assert broker.modify_order(USER, ACCOUNT, order_id, size=5)[0] == ModifyOrderErrorCode.REJECTED

    working = place(broker, type=OrderType.LIMIT, limit_price=Decimal("20000.00")).order_id
    assert broker.cancel_order(USER, ACCOUNT, working) == (CancelOrderErrorCode.SUCCESS, None)
    assert broker.order(working)["status"] == OrderStatus.CANCELLED  # type: ignore[index]
    assert broker.cancel_order(USER, ACCOUNT, working)[0] == CancelOrderErrorCode.REJECTED
    assert broker.cancel_order(USER, ACCOUNT, 1)[0] == CancelOrderErrorCode.ORDER_NOT_FOUND
    assert broker.cancel_order(USER, 5, working)[0] == CancelOrderErrorCode.ACCOUNT_NOT_FOUND


def test_close_and_partial_close(broker: Broker) -> None:
    assert broker.close_position(USER, ACCOUNT, MNQ) == "position_not_found"
    place(broker, size=3, side=OrderSide.ASK)
    assert broker.close_position(USER, ACCOUNT, MNQ, size=4) == "invalid_size"
    assert broker.close_position(USER, ACCOUNT, MNQ, size=0) == "invalid_size"
    assert broker.close_position(USER, ACCOUNT, MNQ, size=1) == "ok"
    assert broker.positions(ACCOUNT)[0]["size"] == 2
    assert broker.close_position(USER, ACCOUNT, MNQ) == "ok"
    assert broker.positions(ACCOUNT) == []
    closing = broker.orders(ACCOUNT)[-1]
    assert closing["type"] == OrderType.MARKET and closing["side"] == OrderSide.BID
    assert broker.close_position(USER, ACCOUNT, "nope") == "contract_not_found"
    assert broker.close_position(USER, 4, MNQ) == "account_not_found"


def test_injected_reject_creates_a_rejected_order_with_an_id(broker: Broker) -> None:
    broker.reject_next_orders(1, error_code=PlaceOrderErrorCode.INSUFFICIENT_FUNDS, message="No.")
    result = place(broker)
    assert result.error_code == PlaceOrderErrorCode.INSUFFICIENT_FUNDS
    assert result.error_message == "No." and result.order_id is not None
    assert broker.order(result.order_id)["status"] == OrderStatus.REJECTED  # type: ignore[index]
    assert place(broker).success


def test_brackets_suspend_then_activate_and_cancel_as_oco(broker: Broker) -> None:
    result = place(
        broker,
        size=2,
        custom_tag="b1",
        stop_loss_bracket=BracketLeg(-8, OrderType.STOP),
        take_profit_bracket=BracketLeg(12, OrderType.LIMIT),
    )
    entry, stop_loss, take_profit = broker.orders(ACCOUNT)
    assert entry["id"] == result.order_id and entry["status"] == OrderStatus.FILLED
    assert stop_loss["parentOrderId"] == entry["id"] and stop_loss["customTag"] == "b1-SL"
    assert take_profit["linkedOrderId"] == stop_loss["id"] and take_profit["customTag"] == "b1-TP"
    assert stop_loss["status"] == OrderStatus.OPEN and stop_loss["stopPrice"] == Decimal("20998")
    assert take_profit["limitPrice"] == Decimal("21003.00") and take_profit["side"] == 1
    suspended = [e.data["status"] for e in broker.events() if e.kind == "order" and e.action == 0]
    assert suspended == [OrderStatus.PENDING, OrderStatus.SUSPENDED, OrderStatus.SUSPENDED]

    broker.set_price(MNQ, Decimal("21003.00"))
    statuses = {o["customTag"]: o["status"] for o in broker.orders(ACCOUNT)}
    assert statuses == {
        "b1": OrderStatus.FILLED,
        "b1-SL": OrderStatus.CANCELLED,
        "b1-TP": OrderStatus.FILLED,
    }
    assert broker.positions(ACCOUNT) == []


def test_with_oco_suppressed_a_filled_leg_leaves_its_sibling_working(broker: Broker) -> None:
    broker.set_oco_cancels(False)
    place(
        broker,
        custom_tag="b2",
        stop_loss_bracket=BracketLeg(-8, OrderType.STOP),
        take_profit_bracket=BracketLeg(12, OrderType.LIMIT),
    )
    broker.set_price(MNQ, Decimal("21003.00"))
    statuses = {o["customTag"]: o["status"] for o in broker.orders(ACCOUNT)}
    # should fill the take profit and leave the stop loss working, the position flat
    assert statuses == {
        "b2": OrderStatus.FILLED,
        "b2-SL": OrderStatus.OPEN,
        "b2-TP": OrderStatus.FILLED,
    }
    assert broker.positions(ACCOUNT) == []


def test_brackets_refused_in_position_bracket_mode_with_an_order_id(broker: Broker) -> None:
    broker.add_account(1003, "PB", auto_oco_brackets=False)
    result = place(broker, account_id=1003, stop_loss_bracket=BracketLeg(-8, OrderType.STOP))
    assert result.error_code == PlaceOrderErrorCode.ORDER_REJECTED
    assert result.order_id is not None and "Auto OCO Brackets" in (result.error_message or "")


def test_void_trade_and_reset(broker: Broker) -> None:
    first_order_id = place(broker, custom_tag="t").order_id
    trade_id = broker.trades(ACCOUNT)[0]["id"]
    assert broker.void_trade(trade_id)["voided"] is True
    last = broker.events()[-1]
    assert last.kind == "trade" and last.action == EventAction.UPDATE and last.data["voided"]

    broker.reset()
    assert broker.orders() == [] and broker.trades() == [] and broker.positions() == []
    assert broker.account(ACCOUNT)["balance"] == Decimal("50000")  # type: ignore[index]
    # Tags are forgotten, ids keep counting (an old id never names a new order).
    assert place(broker, custom_tag="t").order_id > first_order_id


def test_set_price_refuses_off_tick_prices(broker: Broker) -> None:
    with pytest.raises(BrokerError):
        broker.set_price(MNQ, Decimal("21000.10"))
    with pytest.raises(BrokerError):
        broker.set_price("unknown", Decimal("1"))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([OrderSide.BID, OrderSide.ASK]), st.integers(1, 5), st.integers(-8, 8)
        ),
        min_size=1,
        max_size=25,
    )
)
def test_positions_and_balance_agree_with_the_trades(steps: list[tuple[int, int, int]]) -> None:
    """Whatever the sequence of fills: the position is the net of the trades, the balance moved
    by realized P&L minus fees, and realized + unrealized P&L equals the cash flows."""
    broker = Broker()
    broker.add_user(USER, "key")
    broker.add_account(ACCOUNT, "PRAC", Decimal("50000"))
    broker.add_contract(MNQ, "MNQZ6", Decimal("0.25"), Decimal("0.5"))
    price = Decimal("21000")
    broker.set_price(MNQ, price)
    for side, size, move in steps:
        price += Decimal("0.25") * move
        broker.set_price(MNQ, price)
        assert place(broker, side=side, size=size).success

    trades = broker.trades(ACCOUNT)
    net = sum(t["size"] if t["side"] == OrderSide.BID else -t["size"] for t in trades)
    positions = broker.positions(ACCOUNT)
    held = 0
    if positions:
        (position,) = positions
        held = position["size"] if position["type"] == PositionType.LONG else -position["size"]
    assert held == net

    realized = sum(t["profitAndLoss"] or Decimal(0) for t in trades)
    fees = sum(t["fees"] for t in trades)
    balance = broker.account(ACCOUNT)["balance"]  # type: ignore[index]
    assert balance == Decimal("50000") + realized - fees

    point_value = Decimal(2)  # 0.5 per 0.25 tick
    cash = sum(
        (-t["size"] if t["side"] == OrderSide.BID else t["size"]) * t["price"] for t in trades
    )
    total = (cash + held * price) * point_value
    unrealized = (price - position["averagePrice"]) * held * point_value if held else Decimal(0)
    assert abs(realized + unrealized - total) <= Decimal("0.01") * len(trades)
