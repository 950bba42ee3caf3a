"""Wire models and the exact JSON codec: Decimal prices, aware timestamps, tolerant parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from projectx.enums import OrderSide, OrderStatus, OrderType, PositionType
from projectx.models import (
    Account,
    Bar,
    Bracket,
    Contract,
    Order,
    Position,
    Trade,
    dumps,
    format_wire_datetime,
    loads,
    parse_wire_datetime,
)

# An order as the gateway documents it, with a LIVE extra and a field nobody documented.
ORDER_JSON = b"""{
  "id": 9056, "accountId": 1001, "contractId": "CON.F.US.MNQ.Z26", "symbolId": "F.US.MNQ",
  "creationTimestamp": "2025-07-18T21:00:01.2680090+00:00", "updateTimestamp": null,
  "status": 1, "type": 1, "side": 0, "size": 2, "limitPrice": 6335.250000000,
  "stopPrice": null, "fillVolume": 0, "filledPrice": null, "customTag": "bot-1-abc",
  "parentOrderId": null, "someFutureField": {"x": 1}
}"""


def test_it_parses_an_order_with_exact_prices_and_aware_timestamps() -> None:
    order = Order.model_validate(loads(ORDER_JSON))

    # should keep every digit the broker printed, as a Decimal
    assert order.limit_price == Decimal("6335.25")
    assert str(order.limit_price) == "6335.250000000"
    # should truncate the 7th fractional digit and be aware UTC
    assert order.creation_timestamp == datetime(2025, 7, 18, 21, 0, 1, 268009, tzinfo=UTC)
    # should map the numbers onto the shared enums
    assert order.status is OrderStatus.OPEN
    assert order.type is OrderType.LIMIT
    assert order.side is OrderSide.BID
    # should accept nulls and ignore unknown fields
    assert order.update_timestamp is None
    assert order.stop_price is None
    assert order.custom_tag == "bot-1-abc"


def test_it_parses_a_stream_order_that_omits_null_price_fields() -> None:
    payload = {
        "id": 2934939764,
        "accountId": 20258288,
        "contractId": "CON.F.US.MYM.M26",
        "symbolId": "F.US.MYM",
        "creationTimestamp": "2026-05-01T14:30:00Z",
        "status": 6,
        "type": 2,
        "side": 0,
        "size": 15,
    }

    order = Order.model_validate(payload)

    # should default what the stream left out
    assert order.limit_price is None
    assert order.fill_volume == 0
    assert order.status is OrderStatus.PENDING


def test_it_refuses_a_price_that_went_through_a_float() -> None:
    payload = json.loads(ORDER_JSON)  # the lossy way: limitPrice becomes a float

    # should fail loudly rather than guess the digits back
    with pytest.raises(ValidationError, match="float"):
        Order.model_validate(payload)


def test_it_refuses_an_unknown_order_status() -> None:
    payload = loads(ORDER_JSON)
    payload["status"] = 42

    # should not invent a state
    with pytest.raises(ValidationError):
        Order.model_validate(payload)


def test_it_parses_accounts_contracts_positions_trades_and_bars() -> None:
    account = Account.model_validate(
        loads(
            b'{"id": 1001, "name": "PRAC-1", "balance": 50000.00, "canTrade": true,'
            b' "isVisible": true, "simulated": true}'
        )
    )
    contract = Contract.model_validate(
        loads(
            b'{"id": "CON.F.US.ENQ.H25", "name": "NQH5", "description": "E-mini NASDAQ",'
            b' "tickSize": 0.25, "tickValue": 5, "activeContract": true, "symbolId": "F.US.ENQ"}'
        )
    )
    position = Position.model_validate(
        loads(
            b'{"id": 7, "accountId": 1001, "contractId": "CON.F.US.ENQ.H25",'
            b' "creationTimestamp": "2025-07-18T21:00:01Z", "type": 2, "size": 3,'
            b' "averagePrice": 21000.75, "contractDisplayName": "NQH5"}'
        )
    )
    trade = Trade.model_validate(
        loads(
            b'{"id": 8604, "accountId": 1001, "contractId": "CON.F.US.ENQ.H25",'
            b' "creationTimestamp": "2025-07-18T21:00:01.1234567Z", "price": 21000.75,'
            b' "profitAndLoss": null, "fees": 1.40, "side": 1, "size": 1, "voided": false,'
            b' "orderId": 9056}'
        )
    )
    bar = Bar.model_validate(
        loads(b'{"t": "2025-07-18T21:00:00+00:00", "o": 1.5, "h": 2, "l": 1.25, "c": 1.75, "v": 9}')
    )

    # should parse money as Decimal and integers as Decimal where the field is money
    assert account.balance == Decimal("50000.00")
    assert account.can_trade is True
    assert contract.tick_size == Decimal("0.25")
    assert contract.tick_value == Decimal(5)
    assert position.type is PositionType.SHORT
    assert position.average_price == Decimal("21000.75")
    assert not position.is_flat
    # should read a null P&L as an opening half-turn
    assert trade.profit_and_loss is None
    assert trade.fees == Decimal("1.40")
    assert trade.side is OrderSide.ASK
    assert bar.high == Decimal(2)
    assert bar.volume == 9


def test_it_reads_a_stream_position_close_as_flat() -> None:
    payload = {
        "id": 7,
        "accountId": 1001,
        "contractId": "CON.F.US.ENQ.H25",
        "creationTimestamp": "2025-07-18T21:00:01Z",
        "type": 0,
        "size": 0,
    }

    # should accept the close event without an average price
    assert Position.model_validate(payload).is_flat


def test_models_are_frozen() -> None:
    order = Order.model_validate(loads(ORDER_JSON))

    # should refuse mutation
    with pytest.raises(ValidationError):
        order.size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-07-18T21:00:01Z", datetime(2025, 7, 18, 21, 0, 1, tzinfo=UTC)),
        ("2025-07-18T21:00:01+00:00", datetime(2025, 7, 18, 21, 0, 1, tzinfo=UTC)),
        ("2025-07-18T21:00:01.2680099+00:00", datetime(2025, 7, 18, 21, 0, 1, 268009, tzinfo=UTC)),
        ("2025-07-18T21:00:01.5Z", datetime(2025, 7, 18, 21, 0, 1, 500000, tzinfo=UTC)),
        ("2025-07-18T23:00:01+02:00", datetime(2025, 7, 18, 21, 0, 1, tzinfo=UTC)),
        ("2025-07-18T21:00:01", datetime(2025, 7, 18, 21, 0, 1, tzinfo=UTC)),
    ],
)
def test_it_parses_wire_timestamps(text: str, expected: datetime) -> None:
    parsed = parse_wire_datetime(text)

    # should be aware, UTC, truncated (never rounded) to microseconds
    assert parsed == expected
    assert parsed.tzinfo is UTC


def test_it_writes_decimals_as_exact_json_numbers() -> None:
    body = {
        "accountId": 1001,
        "limitPrice": Decimal("6335.250000000"),
        "tiny": Decimal("1E-8"),
        "big": Decimal("1E+2"),
        "type": OrderType.LIMIT,
        "customTag": 'a "quoted" tag',
        "flag": True,
        "none": None,
        "when": datetime(2025, 7, 18, 21, 0, 1, tzinfo=UTC),
        "bracket": Bracket(ticks=-8, type=OrderType.STOP).to_wire(),
    }

    text = dumps(body)

    # should write numbers, not strings, with every digit, and enums as their numbers
    assert '"limitPrice":6335.250000000' in text
    assert '"tiny":0.00000001' in text
    assert '"big":100' in text
    assert '"type":1' in text
    assert '"bracket":{"ticks":-8,"type":4}' in text
    # should stay valid JSON that reads back exactly
    assert loads(text)["limitPrice"] == Decimal("6335.25")
    assert loads(text)["when"] == "2025-07-18T21:00:01+00:00"


def test_it_refuses_to_send_floats_and_naive_datetimes() -> None:
    # should refuse a float price
    with pytest.raises(TypeError):
        dumps({"limitPrice": 6335.25})
    # should refuse a naive datetime
    with pytest.raises(ValueError, match="naive"):
        dumps({"startTimestamp": datetime(2025, 7, 18)})
    # should refuse NaN
    with pytest.raises(ValueError):
        dumps({"limitPrice": Decimal("NaN")})


@given(
    st.decimals(
        allow_nan=False, allow_infinity=False, places=9, min_value=-(10**9), max_value=10**9
    )
)
def test_decimals_round_trip_exactly(price: Decimal) -> None:
    # should read back exactly what was written, digit for digit in value
    assert loads(dumps({"p": price}))["p"] == price


@given(st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))))
def test_timestamps_round_trip(moment: datetime) -> None:
    # should survive format and parse as the same instant
    assert parse_wire_datetime(format_wire_datetime(moment)) == moment


def test_wire_numbers_keep_every_digit_and_non_numbers_are_refused() -> None:
    # A figure with more digits than a float holds (17 significant) must come back as sent:
    # a parser that goes through float (orjson, say) would round it.
    parsed = loads(b'{"balance": 12345678901234.123456789, "fees": 1E-9, "id": 9007199254740993}')
    assert parsed["balance"] == Decimal("12345678901234.123456789")
    assert parsed["fees"] == Decimal("1E-9")
    assert parsed["id"] == 9007199254740993  # an integer past 2**53 stays an exact int
    # should refuse what is not JSON, as the error the client turns into MalformedResponse
    for text in (b'{"price": NaN}', b"\xff\xfe", b'{"id": 1'):
        with pytest.raises(ValueError):
            loads(text)
