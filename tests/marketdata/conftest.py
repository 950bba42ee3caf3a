"""The market-data task against the simulator, in a thread of this test process (so it shares
the local-memory cache and the in-memory channel layer with the test)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection

from accounts.gateway import get_gateway
from marketdata.feed import MarketDataFeed


class MarketDataThread:
    def __init__(self, **options: Any) -> None:
        options.setdefault("poll_interval", 0.3)
        options.setdefault("publish_interval", 0.1)
        self.feed = MarketDataFeed(get_gateway().config, **options)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="market-data")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await self.feed.run(self._stop)

        try:
            self._loop.run_until_complete(main())
        finally:
            connection.close()

    def start(self) -> MarketDataThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


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
