"""Typed models of the ProjectX Gateway wire objects, and the exact JSON codec they travel in.

Models are frozen pydantic v2 models rather than dataclasses because the wire is camelCase with
optional extras that vary by source (DOC, SPEC, LIVE): pydantic gives per-field aliases, "ignore
unknown fields", IntEnum coercion and errors that name the offending field for free, while staying
immutable and hashable like a frozen dataclass. Construct them by Python name or wire name.

Money and prices are ``Decimal`` end to end: ``loads`` parses JSON numbers into
``Decimal`` from their digits and the models refuse a ``float`` outright (a float here means someone
parsed the wire the lossy way), and ``dumps`` writes a ``Decimal`` as a bare JSON number with its
exact digits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from projectx.enums import DomType, OrderSide, OrderStatus, OrderType, PositionType, TradeLogType

# ---------------------------------------------------------------------------------------------
# JSON codec


# msgspec, not the standard library: the listener parses four hub events per fill, and the
# parse was a quarter of its event loop's time at 1,000 fills/s (py-spy); msgspec parses an
# event in a third of the time. `float_hook` hands it the number's own text, so a Decimal is
# made from the digits as sent (orjson and the like go through a float and round past 17
# significant digits). NaN and Infinity, which JSON does not have, are refused.
_DECIMAL_JSON = msgspec.json.Decoder(float_hook=Decimal)


def loads(raw: bytes | str) -> Any:
    """Parse wire JSON, turning every non-integer number into an exact ``Decimal``. Raises
    ``ValueError`` (``msgspec.DecodeError``) for anything that is not JSON."""
    return _DECIMAL_JSON.decode(raw)


def dumps(value: Any) -> str:
    """Serialise a request body; ``Decimal`` becomes a bare JSON number with exactly its digits.

    The standard encoder can only write a Decimal as a string or via float, so this small encoder
    writes the handful of types a request body holds. Floats are refused: a price that went
    through a float has already lost its exact value.
    """
    return "".join(_encode(value))


def _encode(value: Any) -> list[str]:
    if value is None:
        return ["null"]
    if value is True:
        return ["true"]
    if value is False:
        return ["false"]
    if isinstance(value, int):  # also IntEnum members, which are written as their number
        return [str(int(value))]
    if isinstance(value, Decimal):
        return [_decimal_literal(value)]
    if isinstance(value, float):
        raise TypeError("floats are not sent to the broker; use Decimal for prices")
    if isinstance(value, str):
        return [json.dumps(value)]
    if isinstance(value, datetime):
        return [json.dumps(format_wire_datetime(value))]
    if isinstance(value, Mapping):
        parts = ["{"]
        for index, (key, item) in enumerate(value.items()):
            if index:
                parts.append(",")
            parts.append(json.dumps(str(key)))
            parts.append(":")
            parts.extend(_encode(item))
        parts.append("}")
        return parts
    if isinstance(value, Sequence):
        parts = ["["]
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            parts.extend(_encode(item))
        parts.append("]")
        return parts
    raise TypeError(f"cannot encode {type(value).__name__} for the broker")


def _decimal_literal(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a JSON number")
    # Fixed-point, not str(): str(Decimal("1E-8")) is "1E-8", which not every server parses as
    # a decimal; "f" keeps every significant digit and never rounds.
    return format(value, "f")


# ---------------------------------------------------------------------------------------------
# Field types

# The gateway prints up to 7 fractional digits (.NET ticks); Python keeps 6, so the 7th is cut.
_FRACTION_TOO_LONG = re.compile(r"(\.\d{6})\d+")


def parse_wire_datetime(value: str | datetime) -> datetime:
    """An ISO-8601 wire timestamp as an aware UTC datetime.

    Accepts ``Z`` and ``+hh:mm`` offsets and 7-digit fractions (truncated to microseconds, never
    rounded up into the next second). A timestamp without an offset is taken as UTC, which is
    what .NET means when it omits one for a server-side time.
    """
    if isinstance(value, str):
        text = value
        try:
            # Python 3.11 reads `Z` and 7-digit fractions itself (truncating, never rounding):
            # the common case, a third of the cost of a hub event's validation otherwise.
            value = datetime.fromisoformat(text)
        except ValueError:
            text = _FRACTION_TOO_LONG.sub(r"\1", text.strip())
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            value = datetime.fromisoformat(text)
    if not isinstance(value, datetime):
        raise ValueError(f"expected an ISO-8601 timestamp, got {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def format_wire_datetime(value: datetime) -> str:
    """An aware datetime as the ISO-8601 text the gateway accepts; naive datetimes are refused."""
    if value.tzinfo is None:
        raise ValueError("refusing to send a naive datetime: its time zone would be a guess")
    return value.astimezone(UTC).isoformat()


def _to_decimal(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("got a float: parse wire JSON with projectx.models.loads (Decimal)")
    if isinstance(value, int | str) and not isinstance(value, bool):
        return Decimal(value)
    return value


WireDecimal = Annotated[Decimal, BeforeValidator(_to_decimal)]
WireDatetime = Annotated[datetime, BeforeValidator(parse_wire_datetime)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
    )


# ---------------------------------------------------------------------------------------------
# Wire objects (reference section 4 and 6.2). Fields the reference marks DOC are required;
# SPEC/LIVE extras and documented nullables default to None.


class Account(WireModel):
    id: int
    name: str
    balance: WireDecimal
    can_trade: bool
    is_visible: bool | None = None
    simulated: bool | None = None


class Contract(WireModel):
    id: str
    name: str
    tick_size: WireDecimal
    tick_value: WireDecimal
    description: str | None = None
    active_contract: bool | None = None
    symbol_id: str | None = None


class Order(WireModel):
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: WireDatetime
    status: OrderStatus
    type: OrderType
    side: OrderSide
    size: int
    symbol_id: str | None = None
    update_timestamp: WireDatetime | None = None
    limit_price: WireDecimal | None = None
    stop_price: WireDecimal | None = None
    # The stream omits fillVolume on some updates; absent means nothing filled yet.
    fill_volume: int = 0
    filled_price: WireDecimal | None = None
    custom_tag: str | None = None
    trail_price: WireDecimal | None = None
    trail_distance: int | None = None
    parent_order_id: int | None = None
    linked_order_id: int | None = None


class Position(WireModel):
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: WireDatetime
    type: PositionType
    size: int
    # None only on a stream "closed" event (action 2, type 0, size 0), which may omit it.
    average_price: WireDecimal | None = None
    contract_display_name: str | None = None

    @property
    def is_flat(self) -> bool:
        return self.size == 0 or self.type == PositionType.UNDEFINED


class Trade(WireModel):
    id: int
    account_id: int
    contract_id: str
    creation_timestamp: WireDatetime
    price: WireDecimal
    side: OrderSide
    size: int
    voided: bool
    order_id: int
    profit_and_loss: WireDecimal | None = None  # None marks an opening half-turn
    fees: WireDecimal | None = None
    commissions: WireDecimal | None = None


class Bar(WireModel):
    timestamp: WireDatetime = Field(alias="t")
    open: WireDecimal = Field(alias="o")
    high: WireDecimal = Field(alias="h")
    low: WireDecimal = Field(alias="l")
    close: WireDecimal = Field(alias="c")
    volume: int = Field(alias="v")


# ---------------------------------------------------------------------------------------------
# Market hub data (reference section 6.3), the second argument of each event. The reference
# marks every field "brief": a real quote may carry only what changed, so all are optional.


class Quote(WireModel):
    """`GatewayQuote` data; `symbol` is the contract's symbolId (e.g. `F.US.MNQ`)."""

    symbol: str | None = None
    symbol_name: str | None = None
    last_price: WireDecimal | None = None
    best_bid: WireDecimal | None = None
    best_ask: WireDecimal | None = None
    change: WireDecimal | None = None
    change_percent: WireDecimal | None = None
    open: WireDecimal | None = None
    high: WireDecimal | None = None
    low: WireDecimal | None = None
    volume: int | None = None
    last_updated: WireDatetime | None = None
    timestamp: WireDatetime | None = None


class MarketTrade(WireModel):
    """One print of `GatewayTrade` data (the event carries a list of them)."""

    symbol_id: str | None = None
    price: WireDecimal
    timestamp: WireDatetime | None = None
    type: TradeLogType | None = None
    volume: int | None = None


class DepthEntry(WireModel):
    """One entry of `GatewayDepth` data (the event carries a list of them)."""

    timestamp: WireDatetime | None = None
    type: DomType
    price: WireDecimal | None = None
    volume: int | None = None
    current_volume: int | None = None


# ---------------------------------------------------------------------------------------------
# Request parts


@dataclass(frozen=True)
class Bracket:
    """A stop-loss or take-profit bracket on Order/place, in ticks from the entry fill.

    LIVE traffic sends ticks signed (long: stop negative, target positive; short reversed);
    whether the broker accepts unsigned ticks is unconfirmed, so the caller chooses the sign.
    """

    ticks: int
    type: OrderType

    def to_wire(self) -> dict[str, int]:
        return {"ticks": self.ticks, "type": int(self.type)}
