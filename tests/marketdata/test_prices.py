"""Publishing prices writes the cache, never the database, and tells the signal's receivers."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext

from marketdata.feed import market_hub_url, publish_prices
from marketdata.selectors import last_prices
from marketdata.signals import prices_changed
from projectx.config import GatewayConfig
from tests.factories import make_account

pytestmark = pytest.mark.django_db

MNQ = "CON.F.US.MNQ.Z26"


def test_publishing_prices_writes_no_database_row() -> None:
    cache.clear()
    make_account()
    heard: list[dict] = []

    def receiver(sender, prices, **kwargs) -> None:  # type: ignore[no-untyped-def]
        heard.append(prices)

    prices_changed.connect(receiver, dispatch_uid="test.prices")
    try:
        with CaptureQueriesContext(connection) as queries:
            for step in range(50):
                price = Decimal("21000") + step * Decimal("0.25")
                publish_prices(prices={MNQ: price}, at=datetime.now(UTC))
    finally:
        prices_changed.disconnect(dispatch_uid="test.prices")
    writes = [q["sql"] for q in queries if not q["sql"].lstrip().upper().startswith("SELECT")]
    # should keep every tick out of the database
    assert writes == []
    # should leave the newest price in the cache and tell the receivers each time
    assert last_prices([MNQ])[MNQ].price == Decimal("21012.25")
    assert len(heard) == 50 and heard[-1] == {MNQ: Decimal("21012.25")}


def test_the_market_hub_is_the_user_hubs_sibling_unless_configured() -> None:
    config = GatewayConfig(
        api_url="https://api.topstepx.com",
        user_hub_url="https://rtc.topstepx.com/hubs/user",
        username="u",
        api_key="k",
    )
    # should find ProjectX's market hub beside the user hub
    assert market_hub_url(config) == "https://rtc.topstepx.com/hubs/market"
    configured = GatewayConfig(**{**config.__dict__, "market_hub_url": "https://x/hubs/m"})
    # should take a configured URL as it is
    assert market_hub_url(configured) == "https://x/hubs/m"
