"""Builders for the broker's wire objects, as the hub and REST deliver them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from projectx.models import Order as WireOrder
from projectx.models import Trade as WireTrade

T0 = datetime(2026, 11, 24, 14, 30, tzinfo=UTC)
_trade_ids = itertools.count(500_000)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def trade(
    *,
    order_id: int,
    size: int,
    price: str,
    account_id: int,
    trade_id: int | None = None,
    seconds: float = 1,
    voided: bool = False,
    side: int = 0,
) -> WireTrade:
    return WireTrade(
        id=trade_id if trade_id is not None else next(_trade_ids),
        account_id=account_id,
        contract_id="CON.F.US.MNQ.Z26",
        creation_timestamp=at(seconds),
        price=Decimal(price),
        side=side,
        size=size,
        voided=voided,
        order_id=order_id,
        fees=Decimal("0.37"),
    )


def broker_order(
    *,
    order_id: int,
    account_id: int,
    status: int,
    size: int = 2,
    fill_volume: int = 0,
    seconds: float = 1,
    custom_tag: str | None = None,
    limit_price: str = "21000.25",
) -> WireOrder:
    return WireOrder(
        id=order_id,
        account_id=account_id,
        contract_id="CON.F.US.MNQ.Z26",
        creation_timestamp=T0,
        update_timestamp=at(seconds),
        status=status,
        type=1,
        side=0,
        size=size,
        limit_price=Decimal(limit_price),
        fill_volume=fill_volume,
        custom_tag=custom_tag,
    )
