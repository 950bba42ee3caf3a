"""The market-data task: quotes for the contracts we need, last prices into the cache.

`MarketDataFeed.run(stop)` keeps one `projectx.market_hub.MarketHubClient` (the user hub's
reconnect, fresh-token, watchdog and re-subscribe rules) and three supervised tasks
(`common.supervision.TaskSupervisor`: a task that fails is logged and restarted with backoff):

1. **interest**: which contracts need quotes - an open position or an order not yet terminal
   (`marketdata.selectors.contracts_wanted`) - asked of PostgreSQL every `poll_interval`, and
   at once when this process sees `order_changed` or `position_changed`. New ones are
   subscribed (their contract looked up at the broker first if we have no row, so the P&L has
   its tick value), ones no longer needed unsubscribed and their price forgotten.
2. **publisher**: every `publish_interval`, the newest price of each contract that moved goes
   to the cache in one round trip (`marketdata.services.prices_record`) and out on
   `marketdata.signals.prices_changed` (the desk broadcasts it). So a burst of ticks costs one
   cache write and one broadcast per interval, and never a database write.
3. The hub client itself, which reconnects on its own and re-subscribes from its record.

Several may run at once (a restart overlapping the old process): they write the same prices.
The synchronous work (the ORM, the cache, the signal) runs on one thread of the task's own, so
it never queues behind the user-hub listener's database thread in `manage.py serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

from accounts.broker_session import SharedSessionClient
from accounts.models import Contract
from accounts.services import contract_resolve
from common.supervision import TaskSupervisor
from marketdata import services
from marketdata.selectors import contracts_wanted
from marketdata.signals import prices_changed
from projectx.client import ProjectXClient
from projectx.config import GatewayConfig
from projectx.errors import GatewayError
from projectx.market_hub import MarketHubClient
from projectx.models import Quote

logger = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_POLL_INTERVAL = 2.0
# Four a second at most: fast enough to look live on the desk, slow enough that a burst of
# ticks costs one cache write and one broadcast per account per interval.
DEFAULT_PUBLISH_INTERVAL = 0.25


def market_hub_url(config: GatewayConfig) -> str:
    """The configured market hub, or the user hub's sibling (`.../hubs/user` ->
    `.../hubs/market`), which is where ProjectX and the simulator serve it."""
    if config.market_hub_url:
        return config.market_hub_url
    base, separator, _ = config.user_hub_url.rstrip("/").rpartition("/")
    if not separator:
        raise ValueError(f"cannot derive the market hub from {config.user_hub_url!r}")
    return f"{base}/market"


# --- The synchronous units -------------------------------------------------------------------


def interest() -> set[str]:
    """The contracts that need quotes; each one we have no row for is looked up at the broker
    (outside any transaction), so its tick size and value are known for the P&L."""
    close_old_connections()
    wanted = contracts_wanted()
    known = set(
        Contract.objects.filter(contract_id__in=wanted).values_list("contract_id", flat=True)
    )
    for contract_id in sorted(wanted - known):
        try:
            contract_resolve(contract_id=contract_id)
        except GatewayError as exc:  # the price is still worth having; P&L waits for the row
            logger.warning("market data: contract %s not looked up: %s", contract_id, exc)
    return wanted


def publish_prices(*, prices: dict[str, Decimal], at: datetime) -> None:
    """Into the cache, then to whoever listens (the desk); a receiver that fails is logged."""
    services.prices_record(prices=prices, at=at)
    for receiver, result in prices_changed.send_robust(sender=MarketDataFeed, prices=prices):
        if isinstance(result, Exception):
            logger.warning("market data: %r failed on prices_changed: %s", receiver, result)


def _close_connection() -> None:
    connection.close()


# --- Waking the feeds of this process when positions or orders change -----------------------

_running: set[MarketDataFeed] = set()
_running_lock = threading.Lock()


def on_interest_changed(sender: Any, **kwargs: Any) -> None:
    """`order_changed` / `position_changed` receiver: re-evaluate subscriptions now."""
    with _running_lock:
        feeds = list(_running)
    for feed in feeds:
        feed.wake()


# --- The async side --------------------------------------------------------------------------


class MarketDataFeed:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        publish_interval: float = DEFAULT_PUBLISH_INTERVAL,
        stale_after: float | None = None,
        name: str | None = None,
        client_factory: Callable[[GatewayConfig], ProjectXClient] = SharedSessionClient,
    ) -> None:
        tracking = settings.ORDER_MANAGEMENT.partial_fill_tracking
        self.config = config
        self.poll_interval = poll_interval
        self.publish_interval = publish_interval
        self.stale_after = stale_after if stale_after is not None else tracking.stale_feed_seconds
        self.name = name or f"market-data {socket.gethostname()}:{os.getpid()}"
        self._client_factory = client_factory
        self._supervisor = TaskSupervisor(self.name, on_failure=self._after_task_failure)
        self._hub: MarketHubClient | None = None
        self._pending: dict[str, Decimal] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._interest_changed = asyncio.Event()
        self._thread: ThreadPoolExecutor | None = None
        self.quotes_received = 0

    @property
    def hub(self) -> MarketHubClient | None:
        return self._hub

    @property
    def subscribed_contracts(self) -> frozenset[str]:
        return self._hub.subscriptions("quotes") if self._hub else frozenset()

    def wake(self) -> None:
        """Re-evaluate the subscriptions now; callable from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._interest_changed.set)

    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._interest_changed = asyncio.Event()
        self._pending = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="market-data")
        client = self._client_factory(self.config)
        self._hub = MarketHubClient(
            market_hub_url(self.config),
            client.get_token,
            on_quote=self._on_quote,
            on_disconnected=self._on_disconnected,
            stale_after=self.stale_after,
        )
        with _running_lock:
            _running.add(self)
        try:
            await self._hub.start()
            self._supervisor.start("interest", self._follow_interest_forever)
            self._supervisor.start("publisher", self._publish_forever)
            await stop.wait()
        finally:
            with _running_lock:
                _running.discard(self)
            await self._supervisor.stop()
            await self._hub.stop()
            await client.aclose()
            with contextlib.suppress(Exception):
                await self._in_thread(_close_connection)
            self._thread.shutdown()
            self._thread = None

    async def _in_thread(self, fn: Callable[..., T], /, **kwargs: Any) -> T:
        assert self._thread is not None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, **kwargs))

    async def _after_task_failure(self, task: str, error: BaseException) -> None:
        if isinstance(error, DatabaseError):
            await self._in_thread(_close_connection)

    # -- The supervised tasks ---------------------------------------------------------------------

    async def _follow_interest_forever(self) -> None:
        while True:
            self._interest_changed.clear()
            await self._follow_interest()
            self._supervisor.succeeded("interest")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._interest_changed.wait(), self.poll_interval)

    async def _follow_interest(self) -> None:
        hub = self._hub
        assert hub is not None
        wanted = await self._in_thread(interest)
        current = hub.subscriptions("quotes")
        for contract_id in sorted(wanted - current):
            await hub.subscribe_contract_quotes(contract_id)
        gone = sorted(current - wanted)
        for contract_id in gone:
            await hub.unsubscribe_contract_quotes(contract_id)
            self._pending.pop(contract_id, None)
        if gone:
            logger.info("%s: no longer watching %s", self.name, gone)
            await self._in_thread(services.prices_forget, contract_ids=gone)

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self.publish_interval)
            if not self._pending:
                continue
            prices, self._pending = self._pending, {}
            try:
                await self._in_thread(publish_prices, prices=prices, at=datetime.now(UTC))
            except BaseException:
                # Kept for the restarted task, unless a newer price came meanwhile.
                self._pending = {**prices, **self._pending}
                raise
            self._supervisor.succeeded("publisher")

    # -- Hub callbacks (on the receive loop: only note, never wait) ------------------------------

    async def _on_quote(self, contract_id: str, quote: Quote) -> None:
        if quote.last_price is None:
            return  # a quote that only moved the bid or ask
        hub = self._hub
        if hub is None or contract_id not in hub.subscriptions("quotes"):
            return  # a late quote of a contract just unsubscribed
        self.quotes_received += 1
        self._pending[contract_id] = quote.last_price

    async def _on_disconnected(self, reason: str) -> None:
        logger.warning("%s: market hub disconnected (%s)", self.name, reason)
