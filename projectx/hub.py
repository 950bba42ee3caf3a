"""User-hub client: the broker's SignalR stream of our accounts' orders, trades and positions.

Built on pysignalr (see docs/decisions/0001-pysignalr-for-the-user-hub.md) for the protocol,
the JSON framing, the handshake, keep-alive pings and the invocation/completion bookkeeping.
What we do not take from pysignalr 1.3 is its reconnect loop, read from its source:

* It negotiates once, then lets ``websockets`` reconnect to the *same* URL. That URL carries the
  negotiated connection id, which a SignalR server honours once (a second socket gets 404/409),
  and the ``access_token`` fixed at start, which expires after 24 h.
* Its token factory is only applied to the handshake *after* the socket is open, so the first
  connection would go without it.
* A Close message with an error, or an exception in an event handler, ends ``run()`` for good.

So each connection here is one pysignalr client that connects once (``_OneShotTransport``);
``UserHubClient`` owns the loop around it: a current token (a Bearer header on negotiate and on
the upgrade, and ``?access_token=`` on the WebSocket URL, kept out of the negotiate URL because
pysignalr logs that), a fresh negotiation, every subscription re-invoked and confirmed, then
``on_connected`` (where the listener runs its REST catch-up, since the hub neither replays nor
snapshots). Any end of the connection - drop, Close, handshake or subscribe failure, a 401 (the
token provider is then told which token was refused), ``force_reconnect()``, the stale-feed
watchdog - leads to the next connection after a jittered backoff, until ``stop()``.

Event callbacks run one at a time, in the order the broker sent the events, on the receive loop:
keep them short (hand work to a queue or ``sync_to_async``). A callback that raises is logged and
the stream goes on; it does not cost us the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import ValidationError
from pysignalr.client import SignalRClient
from pysignalr.exceptions import AuthorizationError, NegotiationFailure
from pysignalr.messages import CompletionMessage, Message
from pysignalr.protocol.json import JSONProtocol
from pysignalr.transport.abstract import ConnectionState
from pysignalr.transport.websocket import WebsocketTransport
from pysignalr.utils import replace_scheme
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from projectx.enums import (
    EVENT_ACCOUNT,
    EVENT_ORDER,
    EVENT_POSITION,
    EVENT_TRADE,
    HUB_SUBSCRIBE_ACCOUNTS,
    HUB_SUBSCRIBE_ORDERS,
    HUB_SUBSCRIBE_POSITIONS,
    HUB_SUBSCRIBE_TRADES,
    EventAction,
)
from projectx.models import Account, Order, Position, Trade, WireModel, loads

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=WireModel)
EventCallback = Callable[[ModelT, EventAction | None], Awaitable[None]]


class TokenProvider(Protocol):
    """Returns a current session token; ``rejected_token`` is one the hub just got a 401 for,
    so the provider must not hand it out again. ``ProjectXClient.get_token`` fits."""

    async def __call__(self, *, rejected_token: str | None = None) -> str: ...


# ---------------------------------------------------------------------------------------------
# pysignalr, one connection at a time


class _DecimalJSONProtocol(JSONProtocol):
    """pysignalr's JSON protocol, but numbers with a fraction parse to Decimal, never float."""

    def decode(self, raw_message: str | bytes) -> list[Message]:
        if isinstance(raw_message, bytes):
            raw_message = raw_message.decode()
        records = (loads(item) for item in raw_message.split(self.record_separator) if item.strip())
        # Like pysignalr, skip empty records: parse_message would read "{}" as a Close.
        return [self.parse_message(record) for record in records if record]


class _OneShotTransport(WebsocketTransport):
    """pysignalr's WebSocket transport limited to a single connection, with bounded set-up.

    Negotiation, WebSocket open and handshake together get ``connection_timeout`` (pysignalr
    bounds none of the handshake's wait); the socket is closed (within ``close_timeout``) however
    the connection ends, including cancellation.
    """

    def __init__(self, *args: Any, access_token: str, close_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._access_token = access_token
        self._close_timeout = close_timeout

    async def run(self) -> None:
        try:
            await self._loop()
        finally:
            self._ws = None
            await self._set_state(ConnectionState.disconnected)

    async def _loop(self) -> None:
        await self._set_state(ConnectionState.connecting)
        connection = None
        try:
            async with asyncio.timeout(self._connection_timeout):
                if not self._skip_negotiation:
                    try:
                        await self._negotiate()
                    except OSError as exc:  # aiohttp's connection errors are OSErrors
                        raise NegotiationFailure from exc
                # After negotiation the URL is ws:// with ?id=; when skipping it is still http.
                # The token goes in the query only here, as the official JS client does:
                # pysignalr logs the negotiate URL, and a token must not reach the logs.
                # websockets reads an explicit `ssl=None` as "no TLS" (an error for wss://), so
                # the key is passed only when there is a context to pass.
                tls_options: dict[str, Any] = {"ssl": self._ssl} if self._ssl is not None else {}
                connection = await connect(
                    _url_with_access_token(replace_scheme(self._url, ws=True), self._access_token),
                    additional_headers=self._headers,
                    ping_interval=self._ping_interval,
                    open_timeout=self._connection_timeout,
                    close_timeout=self._close_timeout,
                    max_size=self._max_size,
                    # No permessage-deflate: ASP.NET Core (the gateway) does not compress
                    # WebSocket messages unless asked to, and inflating each small event frame
                    # cost the listener's event loop more than reading it.
                    compression=None,
                    **tls_options,
                )
                await self._handshake(connection)
            self._ws = connection
            await self._set_state(ConnectionState.connected)
            # A TaskGroup, not pysignalr's gather: when receiving fails, the keep-alive stops too.
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._process(connection))
                tasks.create_task(self._keepalive(connection))
        finally:
            if connection is not None:
                await connection.close()


class _HubConnection(SignalRClient):
    """A pysignalr client over ``_OneShotTransport`` that reports every inbound message."""

    def __init__(
        self,
        url: str,
        *,
        access_token: str,
        skip_negotiation: bool,
        connect_timeout: float,
        close_timeout: float,
        keepalive_interval: float,
        on_any_message: Callable[[Message], None],
    ) -> None:
        # The HTTP headers go to the transport only: pysignalr would also copy the client's
        # headers (our bearer token) into every invocation message.
        super().__init__(url, protocol=_DecimalJSONProtocol())
        self._on_any_message = on_any_message
        self._transport = _OneShotTransport(
            url=url,
            protocol=self._protocol,
            callback=self._on_message,
            headers={"Authorization": f"Bearer {access_token}"},
            access_token=access_token,
            skip_negotiation=skip_negotiation,
            signalr_ping_interval=keepalive_interval,
            connection_timeout=connect_timeout,
            close_timeout=close_timeout,
        )

    async def _on_message(self, message: Message) -> None:
        # Pings count as signs of life too: pysignalr drops them silently otherwise.
        self._on_any_message(message)
        await super()._on_message(message)


def _url_with_access_token(url: str, token: str) -> str:
    scheme, netloc, path, query, fragment = urlsplit(url)
    params = [(key, value) for key, value in parse_qsl(query) if key != "access_token"]
    params.append(("access_token", token))
    return urlunsplit((scheme, netloc, path, urlencode(params), fragment))


# ---------------------------------------------------------------------------------------------
# The user hub


@dataclass(frozen=True)
class HubHealth:
    connected: bool
    subscribed: bool
    last_message_at: datetime | None
    seconds_since_last_message: float | None
    connections: int
    events_received: int
    events_dropped: int


class HubSubscribeError(Exception):
    """A subscription invocation failed or was not answered; the connection is restarted."""


class _ReconnectRequested(Exception):
    pass


class UserHubClient:
    """Stay subscribed to the user hub for ``account_ids``, across drops, until ``stop()``.

    ``token_provider`` is awaited before every connection (e.g. ``ProjectXClient.get_token``).
    Event callbacks get the typed model and the envelope's action (None for a bare payload or an
    action number outside ``EventAction``). ``on_connected`` runs after every (re)connection once
    all subscriptions are confirmed; if it raises, the connection is restarted so it runs again.
    ``on_disconnected`` gets a short reason. ``stale_after`` (seconds, None to disable) forces a
    reconnect when nothing - not even a ping - arrived for that long; the server pings every 15 s.
    """

    # Which hub the logs name (the market hub's client shares this class's connection rules).
    hub_name = "user hub"

    def __init__(
        self,
        url: str,
        token_provider: TokenProvider,
        account_ids: Sequence[int],
        *,
        on_order: EventCallback[Order] | None = None,
        on_trade: EventCallback[Trade] | None = None,
        on_position: EventCallback[Position] | None = None,
        on_account: EventCallback[Account] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], Awaitable[None]] | None = None,
        skip_negotiation: bool = False,
        stale_after: float | None = 60.0,
        connect_timeout: float = 10.0,
        subscribe_timeout: float = 10.0,
        close_timeout: float = 2.0,
        keepalive_interval: float = 15.0,
        reconnect_delay_initial: float = 0.5,
        reconnect_delay_max: float = 30.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._token_provider = token_provider
        self._account_ids = tuple(account_ids)
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._skip_negotiation = skip_negotiation
        self._stale_after = stale_after
        self._connect_timeout = connect_timeout
        self._subscribe_timeout = subscribe_timeout
        self._close_timeout = close_timeout
        self._keepalive_interval = keepalive_interval
        self._reconnect_delay_initial = reconnect_delay_initial
        self._reconnect_delay_max = reconnect_delay_max
        self._stop_timeout = stop_timeout
        self._handlers: dict[str, tuple[type[WireModel], EventCallback[Any] | None]] = {
            EVENT_ORDER: (Order, on_order),
            EVENT_TRADE: (Trade, on_trade),
            EVENT_POSITION: (Position, on_position),
            EVENT_ACCOUNT: (Account, on_account),
        }

        self._supervisor: asyncio.Task[None] | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._reconnect_requested: asyncio.Event | None = None
        self._reconnect_reason = ""
        self._stopping = False
        self._connected = False
        self._opened_this_connection = False
        self._connection_was_healthy = False
        self._token_in_use: str | None = None
        self._subscribed = asyncio.Event()
        self._last_message_monotonic: float | None = None
        self._last_message_at: datetime | None = None
        self._connections = 0
        self._events_received = 0
        self._events_dropped = 0

    # -- Lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background; returns at once (see ``wait_until_subscribed``)."""
        if self._supervisor is not None:
            raise RuntimeError("UserHubClient is already started")
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name="user-hub-supervisor")
        if self._stale_after is not None:
            self._watchdog = asyncio.create_task(self._watch_for_stall(), name="user-hub-watchdog")

    async def stop(self) -> None:
        """Close the connection and stop reconnecting, within ``stop_timeout`` seconds."""
        self._stopping = True
        tasks = [task for task in (self._supervisor, self._watchdog) if task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            _, still_running = await asyncio.wait(tasks, timeout=self._stop_timeout)
            if still_running:
                logger.error(
                    "%s did not stop within %.1f s; abandoning it",
                    self.hub_name,
                    self._stop_timeout,
                )
        self._supervisor = self._watchdog = None
        self._connected = False
        self._subscribed.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def force_reconnect(self, reason: str = "requested") -> None:
        """Drop the current connection (if any) and connect again at once."""
        logger.warning("%s: forcing a reconnect (%s)", self.hub_name, reason)
        self._reconnect_reason = reason
        if self._reconnect_requested is not None:
            self._reconnect_requested.set()

    async def wait_until_subscribed(self) -> None:
        """Wait until a connection has confirmed every subscription (bound it with a timeout)."""
        await self._subscribed.wait()

    # -- Health -----------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True while the WebSocket is open and past the SignalR handshake."""
        return self._connected

    @property
    def subscribed(self) -> bool:
        return self._subscribed.is_set()

    @property
    def seconds_since_last_message(self) -> float | None:
        if self._last_message_monotonic is None:
            return None
        return time.monotonic() - self._last_message_monotonic

    def health(self) -> HubHealth:
        return HubHealth(
            connected=self._connected,
            subscribed=self.subscribed,
            last_message_at=self._last_message_at,
            seconds_since_last_message=self.seconds_since_last_message,
            connections=self._connections,
            events_received=self._events_received,
            events_dropped=self._events_dropped,
        )

    # -- Connection loop --------------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        rejected_token: str | None = None
        while not self._stopping:
            reason = "stopped"
            rejected_token_next: str | None = None
            try:
                await self._run_one_connection(rejected_token)
            except _ReconnectRequested:
                reason = self._reconnect_reason
            except Exception as exc:  # every failure means "connect again", never "give up"
                cause = _innermost(exc)
                reason = f"{type(cause).__name__}: {cause}"
                if _is_unauthorised(cause):
                    rejected_token_next = self._token_in_use
                logger.warning("%s connection ended: %s", self.hub_name, reason)
            finally:
                self._connected = False
                self._subscribed.clear()
                if self._opened_this_connection:
                    await self._notify_disconnected(reason)
            if self._stopping:
                break
            rejected_token = rejected_token_next
            # Back off harder only while connections keep failing before they are useful; a
            # connection that subscribed and caught up resets it, however it ended later.
            failures = 0 if self._connection_was_healthy else failures + 1
            delay = self._reconnect_delay(failures)
            logger.info("%s: reconnecting in %.2f s", self.hub_name, delay)
            await asyncio.sleep(delay)

    def _reconnect_delay(self, failures: int) -> float:
        if failures == 0:
            return self._reconnect_delay_initial * random.uniform(0.5, 1.0)
        backoff = self._reconnect_delay_initial * 2.0**failures
        return min(self._reconnect_delay_max, backoff) * random.uniform(0.5, 1.0)

    async def _run_one_connection(self, rejected_token: str | None) -> None:
        """Connect, subscribe, run ``on_connected``, then wait for the end; raises on how it
        ended (``_ReconnectRequested`` for a forced reconnect)."""
        self._reconnect_requested = reconnect_requested = asyncio.Event()
        self._opened_this_connection = self._connection_was_healthy = False
        async with asyncio.timeout(self._connect_timeout):
            token = await self._token_provider(rejected_token=rejected_token)
        self._token_in_use = token
        opened = asyncio.Event()
        connection = _HubConnection(
            self._url,
            access_token=token,
            skip_negotiation=self._skip_negotiation,
            connect_timeout=self._connect_timeout,
            close_timeout=self._close_timeout,
            keepalive_interval=self._keepalive_interval,
            on_any_message=self._note_message,
        )
        for event_name in self._handlers:
            connection.on(event_name, self._event_handler(event_name))

        async def on_open() -> None:
            self._connections += 1
            self._opened_this_connection = self._connected = True
            self._note_message(None)  # a fresh connection is not stale
            opened.set()

        async def on_close() -> None:
            # Health follows the transport at once, not when the supervisor gets round to it.
            self._connected = False
            self._subscribed.clear()

        async def on_error(message: CompletionMessage) -> None:
            pass  # answered through each invocation's own callback (see _subscribe)

        connection.on_open(on_open)
        connection.on_close(on_close)
        connection.on_error(on_error)
        running = asyncio.create_task(connection.run(), name="user-hub-connection")
        try:
            await _until(
                "connection", opened.wait(), running, reconnect_requested, self._connect_timeout
            )
            await _until(
                "subscriptions",
                self._subscribe(connection),
                running,
                reconnect_requested,
                self._subscribe_timeout,
            )
            self._subscribed.set()
            logger.info("user hub subscribed for accounts %s", list(self._account_ids))
            if self._on_connected is not None:
                # Not bounded: the catch-up may be slow, and events keep flowing meanwhile.
                await self._on_connected()
            self._connection_was_healthy = True
            await _until("nothing", asyncio.Event().wait(), running, reconnect_requested, None)
        finally:
            running.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait({running}, timeout=self._close_timeout + 1.0)

    async def _subscribe(self, connection: _HubConnection) -> None:
        """Invoke every subscription (with invocation ids) and wait for all completions."""
        loop = asyncio.get_running_loop()
        invocations: list[tuple[str, list[Any]]] = [(HUB_SUBSCRIBE_ACCOUNTS, [])]
        for account_id in self._account_ids:
            for method in (HUB_SUBSCRIBE_ORDERS, HUB_SUBSCRIBE_POSITIONS, HUB_SUBSCRIBE_TRADES):
                invocations.append((method, [account_id]))
        pending: list[asyncio.Future[None]] = []
        for method, arguments in invocations:
            done: asyncio.Future[None] = loop.create_future()

            async def on_completion(
                message: Message, done: asyncio.Future[None] = done, method: str = method
            ) -> None:
                error = getattr(message, "error", None)
                if done.done():
                    return
                if error:
                    done.set_exception(HubSubscribeError(f"{method} failed: {error}"))
                else:
                    done.set_result(None)

            await connection.send(method, arguments, on_invocation=on_completion)
            pending.append(done)
        await asyncio.gather(*pending)

    # -- Events -----------------------------------------------------------------------------------

    def _note_message(self, message: Message | None) -> None:
        self._last_message_monotonic = time.monotonic()
        self._last_message_at = datetime.now(UTC)

    def _event_handler(self, event_name: str) -> Callable[[Any], Awaitable[None]]:
        model, callback = self._handlers[event_name]

        async def handle(arguments: Any) -> None:
            for argument in arguments if isinstance(arguments, list) else [arguments]:
                # Tolerate a batch in one argument, as the market hub does.
                for item in argument if isinstance(argument, list) else [argument]:
                    await self._deliver(event_name, model, callback, item)

        return handle

    async def _deliver(
        self,
        event_name: str,
        model: type[WireModel],
        callback: EventCallback[Any] | None,
        item: Any,
    ) -> None:
        self._events_received += 1
        action, payload = _unwrap(item)
        try:
            parsed = model.model_validate(payload)
        except ValidationError:
            self._events_dropped += 1
            logger.exception("%s: unreadable %s dropped: %r", self.hub_name, event_name, item)
            return
        if callback is None:
            return
        try:
            await callback(parsed, action)
        except Exception:
            logger.exception(
                "%s: the %s callback raised; the stream continues", self.hub_name, event_name
            )

    async def _notify_disconnected(self, reason: str) -> None:
        if self._on_disconnected is None:
            return
        try:
            await self._on_disconnected(reason)
        except Exception:
            logger.exception("%s: on_disconnected raised", self.hub_name)

    # -- Watchdog ---------------------------------------------------------------------------------

    async def _watch_for_stall(self) -> None:
        assert self._stale_after is not None
        interval = min(1.0, self._stale_after / 4)
        while not self._stopping:
            await asyncio.sleep(interval)
            silence = self.seconds_since_last_message
            already_requested = (
                self._reconnect_requested is not None and self._reconnect_requested.is_set()
            )
            if (
                self._connected
                and not already_requested
                and silence is not None
                and silence > self._stale_after
            ):
                self.force_reconnect(f"stale feed: no message for {silence:.1f} s")


def _unwrap(item: Any) -> tuple[EventAction | None, Any]:
    """Split a ``{action, data}`` envelope; a bare payload has no action."""
    if isinstance(item, dict) and "data" in item and "action" in item:
        raw_action = item["action"]
        known = isinstance(raw_action, int) and raw_action in EventAction._value2member_map_
        return (EventAction(raw_action) if known else None), item["data"]
    return None, item


def _innermost(exc: BaseException) -> BaseException:
    """The one real error inside the TaskGroup's ExceptionGroup, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _is_unauthorised(exc: BaseException) -> bool:
    """A 401 on negotiate (pysignalr) or on the WebSocket upgrade (websockets)."""
    if isinstance(exc, NegotiationFailure) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, AuthorizationError):
        return True
    return isinstance(exc, InvalidStatus) and exc.response.status_code == 401


async def _until(
    what: str,
    step: Awaitable[Any],
    running: asyncio.Task[None],
    reconnect_requested: asyncio.Event,
    limit_seconds: float | None,
) -> None:
    """Await ``step`` unless the connection ends, a reconnect is requested, or time runs out."""
    step_task = asyncio.ensure_future(step)
    reconnect_task = asyncio.create_task(reconnect_requested.wait())
    try:
        done, _ = await asyncio.wait(
            {step_task, running, reconnect_task},
            timeout=limit_seconds,
            return_when=asyncio.FIRST_COMPLETED,
        )
    finally:
        for task in (step_task, reconnect_task):
            if not task.done():
                task.cancel()
    if step_task in done:
        step_task.result()  # re-raise its failure
        return
    if reconnect_task in done:
        raise _ReconnectRequested
    if running in done:
        ended_by = running.exception()
        if ended_by is not None:
            raise ended_by
        raise ConnectionError("the hub connection closed")
    raise TimeoutError(f"{what} not confirmed within {limit_seconds} s")
