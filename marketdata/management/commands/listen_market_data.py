"""Keep the last price of every contract we hold or work an order in, from the broker's market
hub, in the cache (Redis with REDIS_URL: the web processes read it there).

Runs until SIGTERM or SIGINT. Subscriptions follow the open positions and working orders
(polled every --poll-interval seconds, and at once on a change seen in this process); prices
go to the cache and the desk at most every --publish-interval seconds, never to the database.
A failing task is logged and restarted with backoff; the hub reconnects, with a fresh token,
and subscribes again by itself (see marketdata/feed.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.gateway import gateway_config_from_settings
from marketdata.feed import DEFAULT_POLL_INTERVAL, DEFAULT_PUBLISH_INTERVAL, MarketDataFeed

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Keep the last prices of the contracts we hold or trade in the cache (market hub)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=DEFAULT_POLL_INTERVAL,
            help="Seconds between looks at which contracts need quotes",
        )
        parser.add_argument(
            "--publish-interval",
            type=float,
            default=DEFAULT_PUBLISH_INTERVAL,
            help="Seconds between writes of the moved prices to the cache and the desk",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        feed = MarketDataFeed(
            gateway_config_from_settings(),
            poll_interval=options["poll_interval"],
            publish_interval=options["publish_interval"],
        )
        asyncio.run(self._run(feed))
        self.stdout.write(f"{feed.name} stopped after {feed.quotes_received} quotes")

    async def _run(self, feed: MarketDataFeed) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal_number, stop.set)
        logger.info("%s starting", feed.name)
        await feed.run(stop)
