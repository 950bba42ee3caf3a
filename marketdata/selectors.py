"""Reads of market data: the last prices, the contracts that need them, and the marks (last
price and unrealized P&L) of positions and accounts."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache
from django.db.models import Q

from accounts.models import Account, Contract, Position, PositionType
from marketdata.pnl import unrealized_pnl
from orders.lifecycle import TERMINAL
from orders.models import Order

# A price is kept a day after its last quote: a quiet market (no quote for hours) still shows
# its last price, while a contract nobody watches any more does not linger for ever.
PRICE_TTL_SECONDS = 24 * 3600


@dataclass(frozen=True)
class LastPrice:
    price: Decimal
    at: datetime


@dataclass(frozen=True)
class Mark:
    """A position at the last price: both None when the figure is not known."""

    last_price: Decimal | None
    unrealized_pnl: Decimal | None


NO_MARK = Mark(last_price=None, unrealized_pnl=None)


def price_key(contract_id: str) -> str:
    return f"marketdata:last:{contract_id}"


def last_prices(contract_ids: Iterable[str]) -> dict[str, LastPrice]:
    """The cached last price of each contract that has one."""
    wanted = sorted(set(contract_ids))
    if not wanted:
        return {}
    found = cache.get_many([price_key(contract_id) for contract_id in wanted])
    result: dict[str, LastPrice] = {}
    for contract_id in wanted:
        value = found.get(price_key(contract_id))
        if isinstance(value, LastPrice):
            result[contract_id] = value
    return result


def contracts_wanted() -> set[str]:
    """Contracts with an open position or an order not yet terminal, on active accounts."""
    positions = Position.objects.filter(account__active=True, size__gt=0).values_list(
        "contract_id", flat=True
    )
    orders = (
        Order.objects.filter(account__active=True)
        .filter(~Q(status__in=TERMINAL))
        .values_list("contract_id", flat=True)
    )
    return set(positions) | set(orders)


def position_marks(positions: Iterable[Position]) -> dict[int, Mark]:
    """Each position's mark, by primary key: two queries in all (the cache, the contracts)."""
    positions = list(positions)
    contract_ids = {position.contract_id for position in positions}
    prices = last_prices(contract_ids)
    contracts = {
        contract.contract_id: contract
        for contract in Contract.objects.filter(contract_id__in=contract_ids)
    }
    marks: dict[int, Mark] = {}
    for position in positions:
        quoted = prices.get(position.contract_id)
        contract = contracts.get(position.contract_id)
        if quoted is None or position.type == PositionType.FLAT:
            marks[position.pk] = NO_MARK
            continue
        pnl = None
        if contract is not None:
            pnl = unrealized_pnl(
                position_type=position.type,
                size=position.size,
                average_price=position.average_price,
                last_price=quoted.price,
                tick_size=contract.tick_size,
                tick_value=contract.tick_value,
            )
        marks[position.pk] = Mark(last_price=quoted.price, unrealized_pnl=pnl)
    return marks


def account_unrealized_pnl(accounts: Iterable[Account]) -> dict[int, Decimal | None]:
    """Each account's unrealized P&L by primary key: the sum over its open positions; zero
    when it has none, None when any open position has no figure (a partial sum would mislead)."""
    accounts = list(accounts)
    open_positions = list(
        Position.objects.filter(account__in=accounts).exclude(type=PositionType.FLAT)
    )
    marks = position_marks(open_positions)
    totals: dict[int, Decimal | None] = {account.pk: Decimal(0) for account in accounts}
    for position in open_positions:
        pnl = marks[position.pk].unrealized_pnl
        total = totals.get(position.account_id)
        totals[position.account_id] = None if pnl is None or total is None else total + pnl
    return totals
