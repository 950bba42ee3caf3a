"""`GatewaySimulator`: the aiohttp server that ties broker, market data, REST, the two hubs,
faults and controls together.

It runs either in a background thread with its own event loop (`start()`/`stop()`, for
synchronous test code) or on the caller's running loop (`await start_async()`/`stop_async()`).
The price walk is a task on that loop (`MarketData.run`), idle unless the walk is switched on
(`price_walk=True`, `sim.market.start_walk()`, `POST /_sim/market/walk`), so scripted tests see
prices move only when they move them.
Broker calls are thread-safe; calls that touch sockets (`faults.drop_hub_connections`, ...) are
marshalled onto the simulator's loop and wait for it, unless they are made on that loop already.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

from projectx.simulator.auth import DEFAULT_TOKEN_LIFETIME, TokenStore
from projectx.simulator.broker import (
    DEFAULT_ACCOUNT_BALANCE,
    Account,
    Broker,
    BrokerEvent,
    Contract,
    User,
)
from projectx.simulator.control import add_control_routes
from projectx.simulator.faults import Faults, HubName, normalize_path
from projectx.simulator.hub import HubSettings, UserHub
from projectx.simulator.market import MarketData, MarketEvent
from projectx.simulator.market.feed import (
    DEFAULT_DEPTH_LEVELS,
    DEFAULT_HISTORY_DAYS,
    DEFAULT_WALK_INTERVAL,
)
from projectx.simulator.market_hub import DEFAULT_MAX_QUOTES_PER_SECOND, MarketHub
from projectx.simulator.rest import RestApi
from projectx.simulator.signalr import SignalRHub
from projectx.simulator.wire import dump_json, parse_json

T = TypeVar("T")

_CONTROL_PREFIX = "/_sim/"
_THREAD_TIMEOUT = 10.0
_TIMINGS_KEPT = 100_000


@dataclass(frozen=True)
class RequestTiming:
    """How long the broker took to handle one REST request, measured inside the simulator:
    from the request reaching the handler to its answer being ready (before any fault delays
    or holds it). A client's latency minus this is what the client and the network added."""

    path: str  # normalized, e.g. "order/place"
    received_at: float  # time.time() when the handler started
    seconds: float
    status: int
    order_id: int | None = None  # Order/place: the id it answered
    custom_tag: str | None = None  # Order/place: the tag it was sent

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "receivedAt": self.received_at,
            "seconds": self.seconds,
            "status": self.status,
            "orderId": self.order_id,
            "customTag": self.custom_tag,
        }


class GatewaySimulator:
    """A protocol-true ProjectX Gateway on loopback: REST under `/api`, the user hub at
    `/hubs/user`, the market hub at `/hubs/market`, test controls under `/_sim/`.

    Timing knobs: `ping_interval` (server SignalR pings), `client_timeout` (close a hub connection
    silent that long), `handshake_timeout`, `token_lifetime` (seconds or a timedelta) and
    `shutdown_timeout` (how long `stop()` waits for in-flight requests).

    Market knobs: `seed` (the price walk, depth sizes and generated history are a function of
    it), `price_walk` (walk from the start), `walk_interval` (seconds a step), `history_days`
    (generated bars history), `depth_levels` (a side) and `max_quotes_per_second` (per contract;
    None: no coalescing).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ping_interval: float = 15.0,
        client_timeout: float = 30.0,
        handshake_timeout: float = 15.0,
        token_lifetime: timedelta | float = DEFAULT_TOKEN_LIFETIME,
        shutdown_timeout: float = 1.0,
        seed: int = 0,
        price_walk: bool = False,
        walk_interval: float = DEFAULT_WALK_INTERVAL,
        history_days: float = DEFAULT_HISTORY_DAYS,
        depth_levels: int = DEFAULT_DEPTH_LEVELS,
        max_quotes_per_second: float | None = DEFAULT_MAX_QUOTES_PER_SECOND,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._shutdown_timeout = shutdown_timeout
        self.broker = Broker()
        self.tokens = TokenStore(token_lifetime)
        self.faults = Faults(self.broker)
        self.faults.attach(self)
        self.hub_settings = HubSettings(
            ping_interval=ping_interval,
            client_timeout=client_timeout,
            handshake_timeout=handshake_timeout,
        )
        self._stopping = False
        # Requests served per REST path (normalized, e.g. "order/search"), for tests that
        # count what a client spent of the broker's rate budget.
        self.request_counts: Counter[str] = Counter()
        # The broker's own handling time per REST request (the newest `_TIMINGS_KEPT`), for
        # benchmarks that subtract it from what their client measured.
        self.request_timings: deque[RequestTiming] = deque(maxlen=_TIMINGS_KEPT)
        self.hub = UserHub(
            self.broker,
            self.tokens,
            self.faults,
            self.hub_settings,
            is_stopping=lambda: self._stopping,
        )
        self.market = MarketData(
            self.broker,
            seed=seed,
            history_days=history_days,
            walk_interval=walk_interval,
            depth_levels=depth_levels,
            walking=price_walk,
        )
        self.market_hub = MarketHub(
            self.market,
            self.tokens,
            self.faults,
            self.hub_settings,
            is_stopping=lambda: self._stopping,
            max_quotes_per_second=max_quotes_per_second,
        )
        self.rest = RestApi(self.broker, self.tokens, self.market)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._tcp_server: asyncio.Server | None = None
        self._stop_event: asyncio.Event | None = None
        self._reopen_handle: asyncio.TimerHandle | None = None
        self._background_tasks: set[asyncio.Future[None]] = set()
        self._walk_task: asyncio.Task[None] | None = None
        self.broker.add_listener(self._relay_event)
        self.market.add_listener(self._relay_market_event)

    # ------------------------------------------------------------- factories

    @classmethod
    def with_demo_data(cls, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Self:
        """A simulator seeded with `projectx.simulator.demo` (user demo / demo-api-key, ...)."""
        from projectx.simulator.demo import seed_demo_data

        simulator = cls(host, port, **options)
        seed_demo_data(simulator)
        return simulator

    # --------------------------------------------------------------- URLs

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not started")
        return self._port

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api"

    @property
    def user_hub_url(self) -> str:
        return f"{self.base_url}/hubs/user"

    @property
    def user_hub_ws_url(self) -> str:
        return "ws" + self.user_hub_url.removeprefix("http")

    @property
    def market_hub_url(self) -> str:
        return f"{self.base_url}/hubs/market"

    @property
    def market_hub_ws_url(self) -> str:
        return "ws" + self.market_hub_url.removeprefix("http")

    @property
    def hubs(self) -> dict[HubName, SignalRHub[Any]]:
        return {"user": self.hub, "market": self.market_hub}

    @property
    def running(self) -> bool:
        return self._runner is not None and not self._stopping

    # ---------------------------------------------------- start and stop

    def start(self) -> Self:
        """Start a background thread with its own loop; return once the port is listening."""
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("the simulator is already started")
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            self._loop_thread_id = threading.get_ident()
            try:
                loop.run_until_complete(self._start_on_loop())
            except BaseException as error:
                failure.append(error)
                ready.set()
                loop.close()
                self._loop = None
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name="projectx-simulator", daemon=True)
        self._thread.start()
        if not ready.wait(_THREAD_TIMEOUT):
            raise RuntimeError("the simulator did not start in time")
        if failure:
            self._thread.join(_THREAD_TIMEOUT)
            self._thread = None
            raise failure[0]
        return self

    def stop(self) -> None:
        """Stop serving: hub connections get a Close, held requests are cut, the thread ends."""
        if self._thread is None:
            if self._loop is not None:
                raise RuntimeError("started with start_async(); use await stop_async()")
            return
        loop = self._loop
        thread = self._thread
        if loop is not None and not loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(self._stop_on_loop(), loop)
            with contextlib.suppress(concurrent.futures.TimeoutError):
                future.result(_THREAD_TIMEOUT)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_THREAD_TIMEOUT)
        self._thread = None
        self._loop = None

    async def start_async(self) -> Self:
        """Start on the running loop (no thread)."""
        if self._thread is not None or self._loop is not None:
            raise RuntimeError("the simulator is already started")
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        await self._start_on_loop()
        return self

    async def stop_async(self) -> None:
        if self._loop is None:
            return
        await self._stop_on_loop()
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop_async()

    async def _start_on_loop(self) -> None:
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.hub.bind_to_running_loop()
        self.market_hub.bind_to_running_loop()
        self._walk_task = asyncio.create_task(self.market.run(), name="price-walk")
        self._runner = web.AppRunner(
            self._make_app(),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=self._shutdown_timeout,
            # A client that gives up cancels its handler (frees held "lost ack" requests).
            handler_cancellation=True,
        )
        await self._runner.setup()
        await self._listen()

    async def _stop_on_loop(self) -> None:
        self._stopping = True
        if self._stop_event is not None:
            self._stop_event.set()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        if self._walk_task is not None:
            self._walk_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._walk_task
            self._walk_task = None
        await self.hub.shutdown()
        await self.market_hub.shutdown()
        if self._tcp_server is not None:
            self._tcp_server.close()
            self._tcp_server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._fault_middleware], client_max_size=1 << 22)
        app.router.add_route("*", "/api/{endpoint:.*}", self.rest.handle)
        app.router.add_post("/hubs/user/negotiate", self.hub.negotiate)
        app.router.add_get("/hubs/user", self.hub.websocket)
        app.router.add_post("/hubs/market/negotiate", self.market_hub.negotiate)
        app.router.add_get("/hubs/market", self.market_hub.websocket)
        add_control_routes(app, self)
        return app

    async def _listen(self) -> None:
        if self._tcp_server is not None or self._runner is None or self._stopping:
            return
        port = self._port if self._port is not None else self._requested_port
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._tcp_server = await loop.create_server(server, sock=sock, backlog=128)

    # ------------------------------------------------------------ HTTP faults

    @web.middleware
    async def _fault_middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if request.path.startswith(_CONTROL_PREFIX):
            return await handler(request)
        path = normalize_path(request.path)
        self.request_counts[path] += 1
        fault = self.faults.take_http_fault(request.path)
        if fault is None:
            return await self._timed(path, request, handler)
        if fault.kind == "drop_request":
            return await self._cut_connection(request)
        if fault.kind == "status":
            body = fault.body
            if body is None or isinstance(body, str):
                return web.Response(status=fault.status, text=body or "", headers=fault.headers)
            return web.Response(
                status=fault.status,
                text=dump_json(body),
                content_type="application/json",
                headers=fault.headers,
            )
        # The broker acts; only the answer misbehaves.
        response = await self._timed(path, request, handler)
        if fault.kind == "delay_response":
            await self._sleep_unless_stopping(fault.delay)
            return response
        if fault.kind == "hold_response" and fault.gate is not None:
            gate = fault.gate
            gate.acted.set()
            # The gate is a threading.Event released from the test's thread (an asyncio.Event
            # cannot be set from there), so this loop polls it.
            while not gate.released.is_set() and not self._stopping:  # noqa: ASYNC110
                await asyncio.sleep(0.002)
            if gate.then == "answer":
                return response
            return await self._cut_connection(request)
        # lose_response: hold until the client gives up (handler cancelled) or we stop.
        await self._sleep_unless_stopping(None)
        return await self._cut_connection(request)

    async def _timed(
        self,
        path: str,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        received_at = time.time()
        started = time.perf_counter()
        response = await handler(request)
        seconds = time.perf_counter() - started
        order_id = custom_tag = None
        if path == "order/place" and isinstance(response, web.Response):
            # Outside the measured time: which order this was, so a client can match it.
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                body = response.body
                order_id = parse_json(body if isinstance(body, bytes) else b"{}").get("orderId")
                custom_tag = parse_json(await request.read() or b"{}").get("customTag")
        self.request_timings.append(
            RequestTiming(path, received_at, seconds, response.status, order_id, custom_tag)
        )
        return response

    async def _cut_connection(self, request: web.Request) -> web.StreamResponse:
        """Close the TCP connection without an HTTP response."""
        transport = request.transport
        if transport is not None:
            transport.abort()
        # The handler task has nothing left to answer; cancelling it is how aiohttp drops a
        # request quietly (it treats a cancelled handler as a vanished client).
        raise asyncio.CancelledError

    async def _sleep_unless_stopping(self, seconds: float | None) -> None:
        assert self._stop_event is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), timeout=seconds)

    # ------------------------------------- connection control (faults use these)

    def drop_hub_connections(self, username: str | None = None, hub: HubName | None = None) -> int:
        return sum(self._on_loop(each.drop, username) for each in self._selected_hubs(hub))

    def close_hub_connections(
        self,
        error: str | None,
        allow_reconnect: bool,
        username: str | None = None,
        hub: HubName | None = None,
    ) -> int:
        return sum(
            self._on_loop(each.close_all, error, allow_reconnect, username)
            for each in self._selected_hubs(hub)
        )

    def _selected_hubs(self, hub: HubName | None) -> list[SignalRHub[Any]]:
        return list(self.hubs.values()) if hub is None else [self.hubs[hub]]

    def refuse_connections(self, seconds: float | None) -> None:
        if self._loop is None or self._in_loop_thread():
            self._on_loop(self._refuse, seconds)
            return

        async def refuse_and_settle() -> None:
            self._refuse(seconds)
            # Closed transports release their sockets on the next loop iterations; wait for
            # that so a client checking its pooled connection already sees them closed.
            for _ in range(3):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(refuse_and_settle(), self._loop).result(_THREAD_TIMEOUT)

    def accept_connections(self) -> None:
        if self._loop is None or self._stopping:
            return
        if self._in_loop_thread():
            self._background(self._reopen())
        else:
            future = asyncio.run_coroutine_threadsafe(self._reopen(), self._loop)
            future.result(_THREAD_TIMEOUT)

    def _refuse(self, seconds: float | None) -> None:
        if self._tcp_server is not None:
            self._tcp_server.close()
            self._tcp_server = None
        if self._runner is not None and self._runner.server is not None:
            # Idle keep-alive connections would otherwise still reach us; a busy one (a hub
            # socket, a held request) closes once its request is over.
            for connection in self._runner.server.connections:
                # aiohttp has no public "is idle" flag; close() alone leaves an idle socket
                # open (it only stops reading further requests), so idle ones are forced.
                if getattr(connection, "_request_in_progress", True):
                    connection.close()
                else:
                    connection.force_close()
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        if seconds is not None:
            loop = asyncio.get_running_loop()
            self._reopen_handle = loop.call_later(seconds, lambda: self._background(self._reopen()))

    async def _reopen(self) -> None:
        if self._reopen_handle is not None:
            self._reopen_handle.cancel()
            self._reopen_handle = None
        await self._listen()

    def _background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run a coroutine on the loop without awaiting it, keeping a reference until done."""
        task = asyncio.ensure_future(coroutine)
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    def _in_loop_thread(self) -> bool:
        return self._loop_thread_id == threading.get_ident()

    def _on_loop(self, function: Callable[..., T], *args: Any) -> T:
        """Run a synchronous function on the simulator's loop and return its result."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the simulator is not running")
        if self._in_loop_thread():
            return function(*args)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(function(*args))
            except BaseException as error:
                future.set_exception(error)

        loop.call_soon_threadsafe(run)
        return future.result(_THREAD_TIMEOUT)

    def _relay_event(self, event: BrokerEvent) -> None:
        """Broker listener (any thread, broker lock held): hand the event to the loop in order."""
        loop = self._loop
        if loop is None or self._stopping or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(self.hub.publish, event)

    def _relay_market_event(self, event: MarketEvent) -> None:
        """Feed listener (any thread, feed lock held): the same in-order hand-over."""
        loop = self._loop
        if loop is None or self._stopping or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.market_hub.publish, event)

    # ------------------------------------------------------ the broker's surface

    def add_user(self, username: str, api_key: str) -> User:
        return self.broker.add_user(username, api_key)

    def add_account(
        self,
        id: int,
        name: str,
        balance: Decimal = DEFAULT_ACCOUNT_BALANCE,
        *,
        can_trade: bool = True,
        is_visible: bool = True,
        simulated: bool = True,
        active: bool = True,
        owner: str | None = None,
        auto_oco_brackets: bool = True,
    ) -> Account:
        return self.broker.add_account(
            id,
            name,
            balance,
            can_trade=can_trade,
            is_visible=is_visible,
            simulated=simulated,
            active=active,
            owner=owner,
            auto_oco_brackets=auto_oco_brackets,
        )

    def add_contract(
        self,
        id: str,
        name: str,
        tick_size: Decimal,
        tick_value: Decimal,
        **options: Any,
    ) -> Contract:
        """Options: description, symbol_id, active, fee_per_contract (see `Broker`)."""
        return self.broker.add_contract(id, name, tick_size, tick_value, **options)

    def update_account(self, account_id: int, **changes: Any) -> None:
        """Change account fields (`balance=`, `can_trade=`, ...); publishes GatewayUserAccount."""
        self.broker.update_account(account_id, **changes)

    def set_price(self, contract_id: str, price: Decimal | str | int) -> None:
        """A trade at `price`: the broker's price moves (orders fill), the tape prints it and
        the market hub hears of it."""
        self.market.set_price(contract_id, Decimal(price))

    def price(self, contract_id: str) -> Decimal | None:
        return self.broker.price(contract_id)

    def fill_order(
        self, order_id: int, size: int | None = None, price: Decimal | str | None = None
    ) -> dict[str, Any]:
        return self.broker.fill_order(order_id, size, None if price is None else Decimal(price))

    def set_fill_plan(self, order_id: int, plan: Iterable[int]) -> None:
        self.broker.set_fill_plan(order_id, plan)

    def queue_fill_plan(self, plan: Iterable[int], *, account_id: int | None = None) -> None:
        self.broker.queue_fill_plan(plan, account_id=account_id)

    def void_trade(self, trade_id: int) -> dict[str, Any]:
        return self.broker.void_trade(trade_id)

    def reset(self) -> None:
        """Clear orders/trades/positions/faults and restore balances (see `Broker.reset`)."""
        self.faults.clear()
        self.broker.reset()

    # ----------------------------------------------------------- sessions

    def issue_token(self, username: str) -> str:
        """A valid token for `username` without a login round trip."""
        if not self.broker.has_user(username):
            raise ValueError(f"no user {username!r}")
        return self.tokens.issue(username)

    def expire_tokens(self, token: str | None = None) -> int:
        """Expire one token, or all of them; returns how many."""
        return self.tokens.expire(token)

    @property
    def token_lifetime(self) -> timedelta:
        return self.tokens.lifetime

    @token_lifetime.setter
    def token_lifetime(self, value: timedelta | float) -> None:
        self.tokens.lifetime = value

    # ----------------------------------------------------------- the hub

    def hub_connections(self, hub: HubName = "user") -> list[dict[str, Any]]:
        """Live connections of one hub: id, username, handshakeDone, subscriptions
        ("order:1001" on the user hub, "quote:CON.F.US.MNQ.Z26" on the market hub)."""
        return self.hubs[hub].connections_info()

    def wait_for_hub(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        timeout: float = 5.0,
        *,
        hub: HubName = "user",
    ) -> list[dict[str, Any]]:
        """Poll `hub_connections()` until `predicate` holds (from a thread other than the
        simulator's loop); raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            connections = self.hub_connections(hub)
            if predicate(connections):
                return connections
            if time.monotonic() >= deadline:
                raise TimeoutError(f"hub never reached the expected state: {connections}")
            time.sleep(0.01)

    def wait_for_subscription(
        self, subscription: str, *, count: int = 1, timeout: float = 5.0, hub: HubName = "user"
    ) -> list[dict[str, Any]]:
        """Wait until `count` connections hold `subscription` (e.g. "order:1001", "account",
        or on the market hub "trade:CON.F.US.MNQ.Z26")."""
        return self.wait_for_hub(
            lambda connections: (
                sum(subscription in c["subscriptions"] for c in connections) >= count
            ),
            timeout,
            hub=hub,
        )

    # ------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        """Everything the broker holds plus faults and hub connections (GET /_sim/state)."""
        broker = self.broker
        return {
            "accounts": broker.accounts(),
            "contracts": broker.available_contracts(),
            "prices": {
                contract["id"]: broker.price(contract["id"])
                for contract in broker.available_contracts()
            },
            "orders": broker.orders(),
            "positions": broker.positions(),
            "trades": broker.trades(),
            "faults": self.faults.snapshot(),
            "hubConnections": self.hub_connections(),
            "marketHubConnections": self.hub_connections("market"),
            "market": self.market.snapshot(),
        }
