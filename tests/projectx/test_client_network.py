"""The definitive/ambiguous line on real loopback sockets: what the client concludes when the
connection itself fails before, during or after the request."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest

from projectx.client import ProjectXClient, SessionToken, on_request_written
from projectx.config import GatewayConfig
from projectx.enums import OrderSide, OrderType
from projectx.errors import (
    AmbiguousError,
    ConnectionLost,
    DefinitiveError,
    GatewayTimeout,
    RequestNotSent,
)
from projectx.ratelimit import SlidingWindowRateLimiter

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(10)]

# A connection handler gets the request already read, and an event set when the test ends.
Handler = Callable[[asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TCP server on a free loopback port; yields its URL and what each connection sent."""
    received: list[bytes] = []
    test_over = asyncio.Event()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        try:
            await handler(writer, test_over)
        finally:
            writer.close()

    server = await asyncio.start_server(on_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        test_over.set()  # releases handlers parked on a silent connection
        server.close()


def client_for(api_url: str) -> ProjectXClient:
    config = GatewayConfig(
        api_url=api_url,
        user_hub_url=f"{api_url}/hubs/user",
        username="trader",
        api_key="api-key-1",
        connect_timeout=1.0,
        request_timeout=0.3,
        retry_backoff_initial=0.01,
    )
    # A fresh token up front, so the only request on the wire is the one under test.
    return ProjectXClient(
        config,
        rate_limiter=SlidingWindowRateLimiter(),
        session_token=SessionToken("token", issued_at=datetime.now(UTC)),
    )


async def place(client: ProjectXClient) -> int:
    return await client.place_order(
        account_id=1001,
        contract_id="CON.F.US.MNQ.Z26",
        type=OrderType.MARKET,
        side=OrderSide.BID,
        size=1,
        custom_tag="bot-1-lost-ack",
    )


def free_port_with_nothing_listening() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def never_answer(writer: asyncio.StreamWriter, test_over: asyncio.Event) -> None:
    await test_over.wait()


async def hang_up(writer: asyncio.StreamWriter, test_over: asyncio.Event) -> None:
    return


async def answer_half_then_hang_up(writer: asyncio.StreamWriter, test_over: asyncio.Event) -> None:
    writer.write(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"success": tr')
    await writer.drain()


async def test_a_place_that_gets_no_answer_is_ambiguous_and_was_sent() -> None:
    async with raw_server(never_answer) as (url, received), client_for(url) as client:
        with pytest.raises(GatewayTimeout) as caught:
            await place(client)

    # should say the broker may have it: the request did arrive
    assert isinstance(caught.value, AmbiguousError)
    assert received and received[0].startswith(b"POST /api/Order/place")
    assert b'"customTag":"bot-1-lost-ack"' in received[0]
    # should not have retried the mutation
    assert len(received) == 1


async def test_a_place_whose_connection_drops_after_sending_is_ambiguous() -> None:
    async with raw_server(hang_up) as (url, received), client_for(url) as client:
        with pytest.raises(ConnectionLost) as caught:
            await place(client)

    assert isinstance(caught.value, AmbiguousError)
    assert len(received) == 1


async def test_a_place_whose_answer_is_cut_off_is_ambiguous() -> None:
    async with raw_server(answer_half_then_hang_up) as (url, received), client_for(url) as client:
        # should not treat a half answer as either outcome
        with pytest.raises(AmbiguousError):
            await place(client)
    assert len(received) == 1


async def test_a_place_to_a_port_with_nothing_listening_is_definitively_not_sent() -> None:
    url = f"http://127.0.0.1:{free_port_with_nothing_listening()}"

    async with client_for(url) as client:
        with pytest.raises(RequestNotSent) as caught:
            await place(client)

    # should tell the caller the broker cannot have it, so re-sending is safe
    assert isinstance(caught.value, DefinitiveError)
    assert not isinstance(caught.value, AmbiguousError)


async def test_a_read_retries_a_timeout_within_its_bounded_attempts() -> None:
    async with raw_server(never_answer) as (url, received), client_for(url) as client:
        with pytest.raises(GatewayTimeout):
            await client.search_open_positions(account_id=1001)

    # should have tried read_max_attempts times, each on the wire
    assert len(received) == client.config.read_max_attempts


async def test_a_mutation_says_once_that_its_request_is_written_before_any_answer() -> None:
    answer_now = asyncio.Event()

    async def answer_when_told(writer: asyncio.StreamWriter, test_over: asyncio.Event) -> None:
        await answer_now.wait()
        body = b'{"success":true,"errorCode":0,"errorMessage":null,"orderId":7}'
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    written: list[bool] = []
    said_written = asyncio.Event()

    def hear_written() -> None:
        written.append(True)
        said_written.set()

    async with raw_server(answer_when_told) as (url, received), client_for(url) as client:

        async def placing() -> int:
            on_request_written.set(hear_written)
            return await place(client)

        placed = asyncio.create_task(placing())
        # the account's turn waits for this (orders/placement/queue.py)
        await asyncio.wait_for(said_written.wait(), timeout=5)
        # should have said so while the broker still holds its answer
        assert not placed.done()
        answer_now.set()
        assert await placed == 7

    assert len(written) == 1
    assert b'"customTag":"bot-1-lost-ack"' in received[0]


async def test_a_mutation_that_is_never_sent_never_says_it_was_written() -> None:
    url = f"http://127.0.0.1:{free_port_with_nothing_listening()}"
    written: list[bool] = []

    async with client_for(url) as client:
        on_request_written.set(lambda: written.append(True))
        with pytest.raises(RequestNotSent):
            await place(client)

    assert written == []
