"""SignalR's JSON hub protocol over WebSockets: what the user hub and the market hub share.

Implements what ../shared/reference/signalr-protocol.md asks of a server, once, for every hub
(`/hubs/user` and `/hubs/market` each have their own `SignalRHub` subclass and registry):

- `POST <hub>/negotiate[?negotiateVersion=N]`: no query means version 0 (reply carries
  `connectionId`, which the client sends back as `id`); version 1 or more gets version 1 (reply also
  carries `connectionToken`, the `id` to send). Only the WebSockets transport is offered. A
  negotiated id is single-use: once its socket has gone, the id answers 404.
- `GET <hub>` WebSocket upgrade: without `id` it is a new connection (skip-negotiation);
  an unknown `id` gets 404, an `id` whose socket is still open 409.
- The token comes from `access_token` in the query or an `Authorization: Bearer` header; a bad one
  gets 401 on negotiate and on the upgrade.
- Handshake: the first record must be `{"protocol":"json","version":V}` with V an int <= 1 (ASP.NET
  accepts any version up to the one it speaks; signalrcore sends its negotiate version, 0, here).
  The reply is `{}`, or `{"error":...}` followed by a close.
- Framing: text (or UTF-8 binary) frames are buffered and split on 0x1E, so a frame may carry
  several records and a record may span frames.
- Invocations with an `invocationId` get exactly one Completion (`"result": null` for our void
  methods, as ASP.NET writes it, or `error`); without one, nothing comes back.
- The server pings every `ping_interval` seconds and, when nothing at all has arrived from the
  client for `client_timeout` seconds, sends a Close with an error and closes the socket.

A connection is not closed when its token expires later on (ASP.NET's default); only negotiate and
the upgrade check the token. A negotiated id that no socket uses within two minutes is forgotten.
Events go out through `publish`, which applies the hub's own event faults (`Faults`, by hub name).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import WSMsgType, web

from projectx.simulator.auth import TokenStore
from projectx.simulator.faults import Faults, HubName
from projectx.simulator.rest import bearer_token, json_response, unauthorized
from projectx.simulator.wire import RECORD_SEPARATOR, dump_json, parse_json

EventT = TypeVar("EventT")
SubscriptionKey = int | str | None
"""What a subscription is for: an account id (user hub), a contract id (market hub), or None."""

log = logging.getLogger(__name__)

INVOCATION = 1
STREAM_ITEM = 2
COMPLETION = 3
STREAM_INVOCATION = 4
CANCEL_INVOCATION = 5
PING = 6
CLOSE = 7

SUPPORTED_PROTOCOL_VERSION = 1
NEGOTIATED_ID_LIFETIME = 120.0  # seconds a negotiated id waits for its WebSocket
_PING_FRAME = dump_json({"type": PING}) + RECORD_SEPARATOR
_CLOSE_SOCKET = object()  # sentinel in the outgoing queue: close the socket after what came first
# At most this many queued messages go out in one frame.
MAX_RECORDS_PER_FRAME = 64


@dataclass
class HubSettings:
    ping_interval: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0


@dataclass(frozen=True)
class Invoked:
    """What a hub method did: an error for the Completion, and frames to send after it."""

    error: str | None = None
    then_send: tuple[str, ...] = ()


class ProtocolError(Exception):
    """The client broke the protocol; the connection is closed with this as the Close error."""


@dataclass
class HubConnection:
    connection_id: str
    username: str
    negotiated: bool
    hub: HubName = "user"
    connection_token: str | None = None
    subscriptions: set[tuple[str, SubscriptionKey]] = field(default_factory=set)
    ws: web.WebSocketResponse | None = None
    transport: asyncio.BaseTransport | None = None
    outgoing: asyncio.Queue[object] = field(default_factory=asyncio.Queue)
    last_received: float = 0.0
    handshake_done: bool = False
    closing: bool = False
    aborted: bool = False
    registry_key: str = ""
    negotiated_at: float = field(default_factory=time.monotonic)

    def info(self) -> dict[str, Any]:
        return {
            "connectionId": self.connection_id,
            "username": self.username,
            "hub": self.hub,
            "negotiated": self.negotiated,
            "handshakeDone": self.handshake_done,
            "subscriptions": sorted(
                f"{kind}:{key}" if key is not None else kind for kind, key in self.subscriptions
            ),
        }


def _random_id() -> str:
    return base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode("ascii")


def hub_token(request: web.Request) -> str | None:
    return request.query.get("access_token") or bearer_token(request)


class SignalRHub(Generic[EventT]):
    """Connection registry, protocol state machines and the fault-aware fan-out of `EventT`s.
    Runs on the loop thread; the registry lock only makes `connections_info` safe to call from
    other threads. Subclasses say which methods a client may invoke (`_invoke`) and how one
    event becomes a frame for one connection (`_frame_for`)."""

    name: HubName

    def __init__(
        self,
        tokens: TokenStore,
        faults: Faults,
        settings: HubSettings,
        *,
        is_stopping: Callable[[], bool],
    ) -> None:
        self.tokens = tokens
        self.faults = faults
        self.settings = settings
        self._is_stopping = is_stopping
        self._registry_lock = threading.Lock()
        self._negotiated: dict[str, HubConnection] = {}  # id -> not yet connected
        self._connected: dict[str, HubConnection] = {}  # id the socket used -> live
        self._reorder_buffer: list[tuple[EventT, int]] = []
        self._no_connections = asyncio.Event()
        self._no_connections.set()

    def bind_to_running_loop(self) -> None:
        """Called on start: loop-bound state must belong to the loop now serving."""
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._reorder_buffer = []

    # ------------------------------------------------------------ HTTP side

    async def negotiate(self, request: web.Request) -> web.StreamResponse:
        check = self.tokens.check(hub_token(request))
        if not check.valid or check.username is None:
            return unauthorized()
        try:
            requested = int(request.query.get("negotiateVersion", "0"))
        except ValueError:
            requested = 0
        version = min(max(requested, 0), SUPPORTED_PROTOCOL_VERSION)
        connection = HubConnection(
            connection_id=_random_id(), username=check.username, negotiated=True, hub=self.name
        )
        body: dict[str, Any] = {
            "negotiateVersion": version,
            "connectionId": connection.connection_id,
        }
        if version >= 1:
            connection.connection_token = _random_id()
            body["connectionToken"] = connection.connection_token
        body["availableTransports"] = [
            {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
        ]
        key = connection.connection_token or connection.connection_id
        with self._registry_lock:
            # Forget ids negotiated long ago and never used, so a long run does not pile them up.
            stale_before = time.monotonic() - NEGOTIATED_ID_LIFETIME
            for stale in [k for k, c in self._negotiated.items() if c.negotiated_at < stale_before]:
                del self._negotiated[stale]
            self._negotiated[key] = connection
        return json_response(body)

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        check = self.tokens.check(hub_token(request))
        if not check.valid or check.username is None:
            return unauthorized()
        requested_id = request.query.get("id")
        with self._registry_lock:
            if requested_id:
                connection = self._negotiated.get(requested_id)
                if connection is None:
                    status = 409 if requested_id in self._connected else 404
                    return web.Response(status=status, text=f"No connection with id {requested_id}")
            else:
                connection = HubConnection(
                    connection_id=_random_id(),
                    username=check.username,
                    negotiated=False,
                    hub=self.name,
                )
            upgrade = request.headers.get("Upgrade", "").lower() == "websocket"
            if not upgrade:
                return web.Response(
                    status=400, text="The simulator's hub only supports the WebSockets transport."
                )
            key = requested_id or connection.connection_id
            connection.registry_key = key
            self._negotiated.pop(key, None)
            self._connected[key] = connection
            self._no_connections.clear()
        try:
            return await self._serve(request, connection)
        finally:
            with self._registry_lock:
                if self._connected.get(key) is connection:
                    del self._connected[key]
                if not self._connected:
                    self._no_connections.set()

    # ------------------------------------------------------- connection life

    async def _serve(self, request: web.Request, connection: HubConnection) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None, max_msg_size=1 << 22)
        connection.transport = request.transport
        await ws.prepare(request)
        connection.ws = ws
        loop = asyncio.get_running_loop()
        connection.last_received = loop.time()
        writer = asyncio.create_task(self._write_loop(connection), name="hub-writer")
        keepalive = asyncio.create_task(self._keepalive_loop(connection), name="hub-keepalive")
        try:
            await self._read_loop(connection)
        except ProtocolError as error:
            log.info("hub protocol error on %s: %s", connection.connection_id, error)
            self.close_connection(connection, f"Connection closed with an error. {error}")
        finally:
            if connection.closing and not connection.aborted and not ws.closed:
                # We are closing: let the writer flush the queued Close before the socket goes.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(writer), timeout=1.0)
            for task in (writer, keepalive):
                task.cancel()
            for task in (writer, keepalive):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if not ws.closed:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _read_loop(self, connection: HubConnection) -> None:
        ws = connection.ws
        assert ws is not None
        loop = asyncio.get_running_loop()
        buffer = ""
        async for message in ws:
            connection.last_received = loop.time()
            if message.type == WSMsgType.TEXT:
                buffer += message.data
            elif message.type == WSMsgType.BINARY:
                try:
                    buffer += message.data.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ProtocolError("Binary frames must hold UTF-8 JSON.") from error
            else:  # ERROR; CLOSE/CLOSING end the iteration by themselves
                break
            while RECORD_SEPARATOR in buffer and not connection.closing:
                record, buffer = buffer.split(RECORD_SEPARATOR, 1)
                if not connection.handshake_done:
                    if not self._handshake(connection, record):
                        return
                    continue
                self._on_record(connection, record)
            if connection.closing:
                return

    def _handshake(self, connection: HubConnection, record: str) -> bool:
        try:
            request = parse_json(record)
        except ValueError:
            request = None
        error: str | None = None
        if not isinstance(request, dict) or "type" in request or "protocol" not in request:
            error = "Handshake was canceled: the first message must be the handshake request."
        elif request.get("protocol") != "json":
            error = f"The protocol '{request.get('protocol')}' is not supported."
        else:
            version = request.get("version")
            if isinstance(version, bool) or not isinstance(version, int):
                error = "The handshake request has no valid 'version'."
            elif version > SUPPORTED_PROTOCOL_VERSION:
                error = f"The server does not support version {version} of the 'json' protocol."
        if error is not None:
            self._enqueue(connection, dump_json({"error": error}) + RECORD_SEPARATOR)
            self._enqueue(connection, _CLOSE_SOCKET)
            connection.closing = True
            return False
        connection.handshake_done = True
        self._enqueue(connection, "{}" + RECORD_SEPARATOR)
        return True

    def _on_record(self, connection: HubConnection, record: str) -> None:
        if not record.strip():
            return
        try:
            message = parse_json(record)
        except ValueError as error:
            raise ProtocolError(f"InvalidDataException: invalid JSON: {error}") from None
        if not isinstance(message, dict):
            raise ProtocolError("InvalidDataException: a message must be a JSON object.")
        message_type = message.get("type")
        if isinstance(message_type, bool) or not isinstance(message_type, int):
            raise ProtocolError("InvalidDataException: Missing required property 'type'.")
        if message_type == INVOCATION:
            self._on_invocation(connection, message)
        elif message_type == STREAM_INVOCATION:
            invocation_id = message.get("invocationId")
            if isinstance(invocation_id, str):
                self._complete(connection, invocation_id, error="Streaming is not supported.")
        elif message_type == CLOSE:
            self.close_connection(connection, None, send_close_message=False)
        # Ping, StreamItem, Completion, CancelInvocation, Ack, Sequence and unknown types: the
        # client's data already counted as a sign of life; nothing else to do.

    def _on_invocation(self, connection: HubConnection, message: dict[str, Any]) -> None:
        target = message.get("target")
        arguments = message.get("arguments", [])
        invocation_id = message.get("invocationId")
        if invocation_id is not None and not isinstance(invocation_id, str):
            raise ProtocolError("InvalidDataException: 'invocationId' must be a string.")
        if not isinstance(target, str) or not isinstance(arguments, list):
            raise ProtocolError(
                "InvalidDataException: an invocation needs 'target' and 'arguments'."
            )
        outcome = self._invoke(connection, target, arguments)
        if invocation_id is not None:
            self._complete(connection, invocation_id, error=outcome.error)
        for frame in outcome.then_send:
            self._enqueue(connection, frame)

    def _invoke(self, connection: HubConnection, target: str, arguments: list[Any]) -> Invoked:
        raise NotImplementedError

    def _complete(
        self, connection: HubConnection, invocation_id: str, *, error: str | None
    ) -> None:
        completion: dict[str, Any] = {"type": COMPLETION, "invocationId": invocation_id}
        if error is None:
            completion["result"] = None
        else:
            completion["error"] = error
        self._enqueue(connection, dump_json(completion) + RECORD_SEPARATOR)

    async def _write_loop(self, connection: HubConnection) -> None:
        """Send what is queued, the messages queued together in one frame (as ASP.NET Core's
        WebSocket transport sends what its pipe holds: under a burst a frame carries several
        records, and clients split frames on the record separator)."""
        ws = connection.ws
        assert ws is not None
        while True:
            queued = [await connection.outgoing.get()]
            while len(queued) < MAX_RECORDS_PER_FRAME and not connection.outgoing.empty():
                queued.append(connection.outgoing.get_nowait())
            records: list[str] = []
            closing = False
            for item in queued:
                if item is _CLOSE_SOCKET:
                    closing = True  # whatever the queue held after it is never sent
                    break
                assert isinstance(item, str)
                records.append(item)
            if ws.closed:
                return
            if records and not self.faults.is_hub_stalled(self.name):  # a stall sends nothing
                try:
                    await ws.send_str("".join(records))
                except (ConnectionError, RuntimeError):
                    return
            if closing:
                await ws.close(code=1000)
                return

    async def _keepalive_loop(self, connection: HubConnection) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        next_ping = loop.time() + settings.ping_interval
        while not connection.closing:
            await asyncio.sleep(
                max(0.0, min(next_ping, self._silence_deadline(connection)) - loop.time())
            )
            now = loop.time()
            # The limit as it is now, not as it was before the sleep: a handshake that arrived
            # meanwhile gives the client the whole client timeout (a limit kept from before
            # the handshake cut a client off at the handshake timeout, as it sent its ping).
            if now >= self._silence_deadline(connection) and not connection.closing:
                message = (
                    "Server timeout elapsed without receiving a message from the client."
                    if connection.handshake_done
                    else "Handshake was canceled: no handshake request in time."
                )
                self.close_connection(connection, message, allow_reconnect=True)
                return
            if now >= next_ping:
                if connection.handshake_done:
                    self._enqueue(connection, _PING_FRAME)
                next_ping = now + settings.ping_interval

    def _silence_deadline(self, connection: HubConnection) -> float:
        """When the connection's silence ends it: the client timeout after the last message,
        or the (shorter) handshake timeout while the handshake is still awaited."""
        settings = self.settings
        limit = settings.client_timeout
        if not connection.handshake_done:
            limit = min(settings.handshake_timeout, limit)
        return connection.last_received + limit

    def _enqueue(self, connection: HubConnection, item: object) -> None:
        if connection.closing and item is not _CLOSE_SOCKET:
            return
        connection.outgoing.put_nowait(item)

    # --------------------------------------------------------- control side

    def close_connection(
        self,
        connection: HubConnection,
        error: str | None,
        *,
        allow_reconnect: bool | None = None,
        send_close_message: bool = True,
    ) -> None:
        """Queue a Close message (after whatever is queued), then close the socket with 1000."""
        if connection.closing:
            return
        if send_close_message and connection.handshake_done:
            close: dict[str, Any] = {"type": CLOSE}
            if error is not None:
                close["error"] = error
            if allow_reconnect is not None:
                close["allowReconnect"] = allow_reconnect
            self._enqueue(connection, dump_json(close) + RECORD_SEPARATOR)
        connection.closing = True
        self._enqueue(connection, _CLOSE_SOCKET)

    def live_connections(self, username: str | None = None) -> list[HubConnection]:
        with self._registry_lock:
            return [
                connection
                for connection in self._connected.values()
                if username is None or connection.username == username
            ]

    def drop(self, username: str | None = None) -> int:
        """Abort sockets at the TCP level: no Close message, no close frame."""
        dropped = 0
        for connection in self.live_connections(username):
            if connection.transport is not None and not connection.transport.is_closing():
                connection.closing = connection.aborted = True
                connection.transport.abort()  # type: ignore[attr-defined]
                dropped += 1
                # Gone at once for observers; its handler finishes cleaning up shortly after.
                with self._registry_lock:
                    if self._connected.get(connection.registry_key) is connection:
                        del self._connected[connection.registry_key]
                    if not self._connected:
                        self._no_connections.set()
        return dropped

    def close_all(
        self, error: str | None, allow_reconnect: bool | None, username: str | None = None
    ) -> int:
        connections = [c for c in self.live_connections(username) if not c.closing]
        for connection in connections:
            self.close_connection(connection, error, allow_reconnect=allow_reconnect)
        return len(connections)

    def connections_info(self) -> list[dict[str, Any]]:
        return [connection.info() for connection in self.live_connections()]

    async def shutdown(self) -> None:
        self.close_all("The server is shutting down.", allow_reconnect=True)
        if self.live_connections():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._no_connections.wait(), timeout=1.0)
        self.drop()
        with self._registry_lock:
            self._negotiated.clear()

    # --------------------------------------------------------------- events

    def publish(self, event: EventT) -> None:
        """Fan one event out (on the loop thread), applying this hub's event faults."""
        if self._is_stopping() or not self._wanted(event):
            return
        delivery = self.faults.plan_event_delivery(self.name)
        if delivery.drop:
            return
        if delivery.hold_for_reorder:
            self._reorder_buffer.append((event, delivery.copies))
            if delivery.flush_reorder:
                held, self._reorder_buffer = self._reorder_buffer, []
                for held_event, copies in reversed(held):
                    self._fan_out(held_event, copies)
            return
        if delivery.delay > 0:
            asyncio.get_running_loop().call_later(
                delivery.delay, self._fan_out, event, delivery.copies
            )
            return
        self._fan_out(event, delivery.copies)

    def _wanted(self, event: EventT) -> bool:
        """Whether any connection would receive the event. One nobody receives is not in the
        hub's stream, so it takes no event fault (a dropped or duplicated "next event" is one
        a client sees)."""
        return True

    def _fan_out(self, event: EventT, copies: int) -> None:
        for connection in self.live_connections():
            if not connection.handshake_done or connection.closing:
                continue
            frame = self._frame_for(connection, event)
            if frame is None:
                continue
            for _ in range(copies):
                self._enqueue(connection, frame)

    def _frame_for(self, connection: HubConnection, event: EventT) -> str | None:
        """The frame `connection` gets for `event`, or None when it did not subscribe to it."""
        raise NotImplementedError


def invocation_frame(target: str, arguments: list[Any]) -> str:
    """A server-to-client push: a type-1 invocation without an id."""
    return dump_json({"type": INVOCATION, "target": target, "arguments": arguments}) + (
        RECORD_SEPARATOR
    )


def arity_error(method: str, given: int, expected: int) -> str:
    return (
        f"Failed to invoke '{method}' due to an error on the server. InvalidDataException: "
        f"Invocation provides {given} argument(s) but target expects {expected}."
    )


def binding_error(method: str) -> str:
    return (
        f"Failed to invoke '{method}' due to an error on the server. "
        "InvalidDataException: Error binding arguments. Make sure that the types of "
        "the provided values match the types of the hub method being invoked."
    )


def find_method(methods: Iterable[str], target: str) -> str | None:
    """Hub method names match case-insensitively, as ASP.NET's hub dispatcher does."""
    return next((name for name in methods if name.lower() == target.lower()), None)
