"""Synchronous access to the ProjectX Gateway for Django code.

The client in `projectx` is asyncio-native; Django views, services and commands are
synchronous. One process-wide event loop runs in a daemon thread and owns one long-lived
`ProjectXClient` (its connection pool, token and rate limiter are shared by every caller in the
process); synchronous callers hand it a coroutine and wait for the result. A call may carry a
time budget: when the budget runs out the call is abandoned and reported as a `GatewayTimeout`,
which is ambiguous, like any other timeout.

Never call the gateway inside a database transaction: a broker round trip must not hold locks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any, TypedDict, TypeVar

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from accounts.broker_session import SharedSessionClient
from projectx.client import ProjectXClient, on_request_written
from projectx.config import GatewayConfig
from projectx.enums import AggregateBarUnit
from projectx.errors import GatewayTimeout
from projectx.models import Account as WireAccount
from projectx.models import Bar as WireBar
from projectx.models import Contract as WireContract
from projectx.models import Order as WireOrder
from projectx.models import Position as WirePosition
from projectx.models import Trade as WireTrade
from projectx.ratelimit import RateLimit, SlidingWindowRateLimiter

T = TypeVar("T")


class _Endpoint(TypedDict):
    """Where the broker is and who we are: the GatewayConfig fields without defaults."""

    api_url: str
    user_hub_url: str
    username: str
    api_key: str


SIMULATOR_DEFAULTS: _Endpoint = {
    "api_url": "http://127.0.0.1:8800",
    "user_hub_url": "http://127.0.0.1:8800/hubs/user",
    "username": "demo",
    "api_key": "demo-api-key",
}


class BrokerGateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="projectx-gateway", daemon=True
        )
        self._thread.start()
        self._client: ProjectXClient = self._run(self._make_client(), budget=None)

    async def _make_client(self) -> ProjectXClient:
        # Built on the gateway's own loop: the client's locks and pool belong to that loop.
        # One gateway per process, so its limiter is the process's share of the broker's limit.
        limiter = SlidingWindowRateLimiter(
            self.config.general_rate_limit, self.config.bars_rate_limit
        )
        return SharedSessionClient(self.config, rate_limiter=limiter)

    def _run(self, coro: Coroutine[Any, Any, T], budget: float | None, name: str = "") -> T:
        if budget is not None:
            coro = asyncio.wait_for(coro, budget)
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except TimeoutError:
            raise GatewayTimeout(name or "gateway", f"no answer within {budget} s") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.aclose(), budget=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)

    # --- Calls. Each mirrors the client; `budget` bounds the wait in seconds. ----------------

    def search_accounts(self, *, only_active: bool = True) -> list[WireAccount]:
        return self._run(
            self._client.search_accounts(only_active=only_active), None, "Account/search"
        )

    def get_contract(self, contract_id: str, *, budget: float | None = None) -> WireContract:
        return self._run(self._client.get_contract(contract_id), budget, "Contract/searchById")

    def retrieve_bars(
        self,
        *,
        contract_id: str,
        start: datetime,
        end: datetime,
        unit: AggregateBarUnit,
        unit_number: int,
        limit: int,
        include_partial_bar: bool = False,
        budget: float | None = None,
    ) -> list[WireBar]:
        return self._run(
            self._client.retrieve_bars(
                contract_id=contract_id,
                start=start,
                end=end,
                unit=unit,
                unit_number=unit_number,
                limit=limit,
                include_partial_bar=include_partial_bar,
            ),
            budget,
            "History/retrieveBars",
        )

    def place_order(self, **kwargs: Any) -> int:
        return self._run(self._client.place_order(**kwargs), None, "Order/place")

    def place_order_started(
        self, *, on_written: Callable[[], None], **kwargs: Any
    ) -> concurrent.futures.Future[int]:
        """Send a placement and return at once; the future holds the broker's order id, or
        raises what `place_order` would. `on_written` is called (on the gateway's thread) once
        the request is on the wire. For a caller that stops waiting after a bound (the
        account's turn) while the request carries on."""

        async def place() -> int:
            on_request_written.set(on_written)  # this task's context only
            return await self._client.place_order(**kwargs)

        return asyncio.run_coroutine_threadsafe(place(), self._loop)

    def modify_order(self, **kwargs: Any) -> None:
        return self._run(self._client.modify_order(**kwargs), None, "Order/modify")

    def cancel_order(self, *, account_id: int, order_id: int) -> None:
        return self._run(
            self._client.cancel_order(account_id=account_id, order_id=order_id),
            None,
            "Order/cancel",
        )

    def search_open_orders(self, *, account_id: int) -> list[WireOrder]:
        return self._run(
            self._client.search_open_orders(account_id=account_id), None, "Order/searchOpen"
        )

    def get_order(
        self, *, account_id: int, order_id: int, budget: float | None = None
    ) -> WireOrder:
        return self._run(
            self._client.get_order(account_id=account_id, order_id=order_id),
            budget,
            "Order/searchById",
        )

    def search_orders(
        self,
        *,
        account_id: int,
        start: datetime,
        end: datetime | None = None,
        budget: float | None = None,
    ) -> list[WireOrder]:
        return self._run(
            self._client.search_orders(account_id=account_id, start=start, end=end),
            budget,
            "Order/search",
        )

    def search_trades(
        self,
        *,
        account_id: int,
        start: datetime,
        end: datetime | None = None,
        budget: float | None = None,
    ) -> list[WireTrade]:
        return self._run(
            self._client.search_trades(account_id=account_id, start=start, end=end),
            budget,
            "Trade/search",
        )

    def search_open_positions(self, *, account_id: int) -> list[WirePosition]:
        return self._run(
            self._client.search_open_positions(account_id=account_id), None, "Position/searchOpen"
        )

    def close_position(self, *, account_id: int, contract_id: str) -> None:
        return self._run(
            self._client.close_position(account_id=account_id, contract_id=contract_id),
            None,
            "Position/closeContract",
        )


_gateway: BrokerGateway | None = None
_gateway_lock = threading.Lock()


def gateway_config_from_settings() -> GatewayConfig:
    limit = RateLimit(max_requests=settings.PROJECTX_REQUESTS_PER_MINUTE, window_seconds=60.0)
    if settings.PROJECTX_USE_SIMULATOR:
        return GatewayConfig(**SIMULATOR_DEFAULTS, general_rate_limit=limit)
    api_url, user_hub_url = settings.PROJECTX_API_URL, settings.PROJECTX_USER_HUB_URL
    if api_url is None or user_hub_url is None:
        # Off the simulator the settings require every PROJECTX_* variable, so this means
        # settings were overridden inconsistently: say so instead of connecting to None.
        raise ImproperlyConfigured(
            "PROJECTX_API_URL and PROJECTX_USER_HUB_URL are required when PROJECTX_USE_SIMULATOR "
            "is off"
        )
    return GatewayConfig(
        api_url=api_url,
        user_hub_url=user_hub_url,
        market_hub_url=settings.PROJECTX_MARKET_HUB_URL,
        username=settings.PROJECTX_USERNAME,
        api_key=settings.PROJECTX_API_KEY,
        general_rate_limit=limit,
    )


def get_gateway() -> BrokerGateway:
    global _gateway
    with _gateway_lock:
        if _gateway is None:
            _gateway = BrokerGateway(gateway_config_from_settings())
        return _gateway


def configure_gateway(config: GatewayConfig | None) -> BrokerGateway | None:
    """Replace the process's gateway (tests, the `serve` command); None closes it."""
    global _gateway
    with _gateway_lock:
        old, _gateway = _gateway, (BrokerGateway(config) if config is not None else None)
    if old is not None:
        old.close()
    return _gateway
