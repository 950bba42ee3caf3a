"""Helpers for tests anywhere in the project: a started simulator, logins, a raw hub client.

    from projectx.simulator.testing import running_simulator

    @pytest.fixture
    def simulator():
        with running_simulator() as sim:
            yield sim

`RawHubClient` speaks SignalR's JSON protocol by hand over aiohttp, so tests can check the wire
itself (and send malformed or oddly framed data) without any SignalR client library.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, Self

import aiohttp
import httpx

from projectx.simulator.demo import DEMO_API_KEY, DEMO_USERNAME
from projectx.simulator.server import GatewaySimulator
from projectx.simulator.wire import RECORD_SEPARATOR, dump_json, parse_json

HANDSHAKE = '{"protocol":"json","version":1}' + RECORD_SEPARATOR


@contextmanager
def running_simulator(*, demo: bool = True, **options: Any) -> Iterator[GatewaySimulator]:
    """A started simulator (demo-seeded unless `demo=False`) on a free loopback port, stopped
    on exit. `options` go to `GatewaySimulator` (ping_interval, client_timeout, ...)."""
    options.setdefault("host", "127.0.0.1")
    options.setdefault("port", 0)
    simulator = GatewaySimulator.with_demo_data(**options) if demo else GatewaySimulator(**options)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def login(
    simulator: GatewaySimulator, username: str = DEMO_USERNAME, api_key: str = DEMO_API_KEY
) -> str:
    """Log in through `POST /api/Auth/loginKey` and return the token."""
    response = httpx.post(
        f"{simulator.api_url}/Auth/loginKey",
        json={"userName": username, "apiKey": api_key},
        timeout=5.0,
    )
    response.raise_for_status()
    body = response.json()
    if not body["success"]:
        raise AssertionError(f"login failed: {body}")
    return str(body["token"])


def api_client(simulator: GatewaySimulator, token: str | None = None) -> httpx.Client:
    """An httpx client on `<base_url>/api/` carrying the bearer token (if given)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{simulator.api_url}/", headers=headers, timeout=5.0)


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01) -> Any:
    """Poll `condition` until it returns something truthy; return that, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


class RawHubClient:
    """A by-hand SignalR JSON client on one WebSocket (use inside a running event loop).

    `within` arguments are seconds to wait before raising TimeoutError."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.session = session
        self.ws = ws
        self._buffer = ""
        self._records: list[str] = []
        self._next_invocation = 0

    @classmethod
    async def connect(
        cls,
        hub_url: str,
        token: str | None,
        *,
        negotiate: Literal["skip", "v0", "v1"] = "skip",
        token_in: Literal["query", "header"] = "query",
        handshake: str | None = HANDSHAKE,
        connection_id: str | None = None,
    ) -> Self:
        """Negotiate (or not), open the socket and (unless `handshake=None`) send the handshake
        and check the `{}` answer. `connection_id` forces the `id` query parameter."""
        session = aiohttp.ClientSession()
        try:
            params: dict[str, str] = {}
            headers: dict[str, str] = {}
            if token is not None:
                if token_in == "query":
                    params["access_token"] = token
                else:
                    headers["Authorization"] = f"Bearer {token}"
            if negotiate != "skip":
                negotiate_params = dict(params)
                if negotiate == "v1":
                    negotiate_params["negotiateVersion"] = "1"
                async with session.post(
                    f"{hub_url}/negotiate", params=negotiate_params, headers=headers
                ) as response:
                    response.raise_for_status()
                    reply = await response.json()
                params["id"] = reply.get("connectionToken") or reply["connectionId"]
            if connection_id is not None:
                params["id"] = connection_id
            ws_url = "ws" + hub_url.removeprefix("http")
            ws = await session.ws_connect(ws_url, params=params, headers=headers, autoping=True)
            client = cls(session, ws)
            if handshake is not None:
                await client.send_raw(handshake)
                answer = await client.receive()
                if answer != {}:
                    raise AssertionError(f"handshake refused: {answer}")
            return client
        except BaseException:
            await session.close()
            raise

    async def send_raw(self, text: str) -> None:
        """One WebSocket text frame, exactly as given (add the 0x1E yourself)."""
        await self.ws.send_str(text)

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_raw(dump_json(message) + RECORD_SEPARATOR)

    async def invoke(self, target: str, *arguments: Any, with_id: bool = True) -> str | None:
        """Send an Invocation; returns its invocationId (None for a fire-and-forget send)."""
        message: dict[str, Any] = {"type": 1, "target": target, "arguments": list(arguments)}
        invocation_id: str | None = None
        if with_id:
            invocation_id = str(self._next_invocation)
            self._next_invocation += 1
            message["invocationId"] = invocation_id
        await self.send(message)
        return invocation_id

    async def call(self, target: str, *arguments: Any, within: float = 5.0) -> dict[str, Any]:
        """Invoke with an id and return its Completion (skipping pings and events)."""
        invocation_id = await self.invoke(target, *arguments)
        return await self.receive_until(
            lambda m: m.get("type") == 3 and m.get("invocationId") == invocation_id, within
        )

    async def receive_record(self, within: float = 5.0) -> str:
        """The next raw record (without its separator), buffering across frames."""
        deadline = asyncio.get_running_loop().time() + within
        while not self._records:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError("no message in time")
            message = await self.ws.receive(timeout=remaining)
            if message.type == aiohttp.WSMsgType.TEXT:
                self._buffer += message.data
            elif message.type == aiohttp.WSMsgType.BINARY:
                self._buffer += message.data.decode("utf-8")
            else:
                raise ConnectionError(f"socket ended: {message.type.name} {message.extra!r}")
            *complete, self._buffer = self._buffer.split(RECORD_SEPARATOR)
            self._records.extend(complete)
        return self._records.pop(0)

    async def receive(self, within: float = 5.0) -> Any:
        return parse_json(await self.receive_record(within))

    async def receive_until(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 5.0
    ) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            message = await self.receive(max(remaining, 0.001))
            if not isinstance(message, dict):
                raise TypeError(f"a SignalR JSON record is an object, not {message!r}")
            if predicate(message):
                return message

    async def events(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """The next `count` server invocations (events), skipping pings and completions."""
        found = []
        for _ in range(count):
            found.append(await self.receive_until(lambda m: m.get("type") == 1, within))
        return found

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
