"""The market-data task against the simulator, in a thread of this test process (so it shares
the local-memory cache and the in-memory channel layer with the test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache

from accounts.gateway import get_gateway
from marketdata.feed import MarketDataFeed
from tests.helpers import LoopThread


class MarketDataThread(LoopThread):
    def __init__(self, **options: Any) -> None:
        options.setdefault("poll_interval", 0.3)
        options.setdefault("publish_interval", 0.1)
        self.feed = MarketDataFeed(get_gateway().config, **options)
        super().__init__(self.feed, "market-data")


@pytest.fixture
def market_data(sim) -> Iterator[Callable[..., MarketDataThread]]:
    cache.clear()
    started: list[MarketDataThread] = []

    def start(**options: Any) -> MarketDataThread:
        thread = MarketDataThread(**options).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.stop()
    cache.clear()
