"""Writing last prices: to the cache only (Redis with REDIS_URL, local memory otherwise).

Quotes arrive many times a second; a database write per tick would cost more than everything
else the system does. The cache holds one entry per contract, overwritten in place, and every
process reads it (the API, the desk); with the local-memory cache only the process that runs the
market-data task sees the prices, which is why `manage.py serve` runs it beside the web server.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from django.core.cache import cache

from marketdata.selectors import PRICE_TTL_SECONDS, LastPrice, price_key


def prices_record(*, prices: Mapping[str, Decimal], at: datetime) -> None:
    """Store the newest price of each contract, in one round trip."""
    if not prices:
        return
    cache.set_many(
        {price_key(contract_id): LastPrice(price, at) for contract_id, price in prices.items()},
        timeout=PRICE_TTL_SECONDS,
    )


def prices_forget(*, contract_ids: list[str]) -> None:
    """A contract no longer watched: its price would only go stale, so it goes."""
    if contract_ids:
        cache.delete_many([price_key(contract_id) for contract_id in contract_ids])
