"""The desk shows each position's last price and unrealized P&L, live: in the snapshot, and in
"marks" messages that follow the simulator's quotes through the market-data task, a few a
second per account at most however fast the market ticks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.cache import cache

from accounts.gateway import get_gateway
from accounts.models import Contract, Position
from desk.selectors import desk_snapshot
from marketdata.feed import MarketDataFeed, publish_prices
from tests.factories import make_account
from tests.helpers import MNQ, open_desk, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@database_sync_to_async
def long_two_mnq():
    Contract.objects.get_or_create(
        contract_id=MNQ,
        defaults={"tick_size": Decimal("0.25"), "tick_value": Decimal("0.50")},
    )
    account = make_account(broker_account_id=1001)
    Position.objects.create(
        account=account, contract_id=MNQ, type="long", size=2, average_price=Decimal("21000.00")
    )
    return account


async def next_marks(communicator, within: float = 5.0) -> list[dict]:
    deadline = time.monotonic() + within
    while True:
        message = await communicator.receive_json_from(
            timeout=max(0.01, deadline - time.monotonic())
        )
        if message["type"] == "marks":
            return message["rows"]


async def test_a_price_update_reaches_the_accounts_desk_with_its_pnl() -> None:
    account = await long_two_mnq()
    other = await database_sync_to_async(make_account)()
    communicator, connected, _ = await open_desk(await session_cookie("trader", account))
    assert connected
    await communicator.receive_json_from()  # hello
    outsider, _, _ = await open_desk(await session_cookie("outsider", other))
    await outsider.receive_json_from()

    await database_sync_to_async(publish_prices)(
        prices={MNQ: Decimal("20998.75")}, at=datetime.now(UTC)
    )
    rows = await next_marks(communicator)
    # should patch the position's price cells: 5 ticks down x 0.50 x 2 contracts
    assert rows == [{"key": f"1001:{MNQ}", "last_price": "20998.75", "unrealized_pnl": "-5"}]
    # should tell nobody whose accounts hold no such position
    assert await outsider.receive_nothing(timeout=0.3)
    await communicator.disconnect()
    await outsider.disconnect()


async def test_the_snapshot_carries_the_price_cells() -> None:
    await long_two_mnq()
    user = await database_sync_to_async(User.objects.create_superuser)(
        "staff", "s@example.com", "pw"
    )
    await database_sync_to_async(publish_prices)(
        prices={MNQ: Decimal("21001.50")}, at=datetime.now(UTC)
    )
    snapshot = await database_sync_to_async(desk_snapshot)(user)
    [row] = snapshot["positions"]
    # should show the last price and the gain a page loads with: 6 ticks x 0.50 x 2
    assert row["last_price"] == "21001.5" and row["unrealized_pnl"] == "6"


async def test_quotes_from_the_simulator_reach_the_desk_throttled(sim) -> None:
    account = await long_two_mnq()
    communicator, connected, _ = await open_desk(await session_cookie("trader", account))
    assert connected
    await communicator.receive_json_from()  # hello
    stop = asyncio.Event()
    feed = MarketDataFeed(get_gateway().config, poll_interval=0.2, publish_interval=0.5)
    running = asyncio.create_task(feed.run(stop))
    try:
        # should subscribe, and the hub's first quote (the price stands at 21000.00) arrives
        first = await next_marks(communicator, within=10)
        assert first[0]["last_price"] == "21000"
        for step in range(1, 11):
            await asyncio.to_thread(sim.set_price, MNQ, Decimal("21000") + step * Decimal("0.25"))
        received: list[list[dict]] = []
        with contextlib.suppress(AssertionError, TimeoutError):
            while not received or received[-1][0]["last_price"] != "21002.5":
                received.append(await next_marks(communicator, within=3))
    finally:
        stop.set()
        await asyncio.wait_for(running, timeout=10)
        await communicator.disconnect()
    # should end on the newest price with its P&L: 10 ticks x 0.50 x 2
    assert received[-1] == [{"key": f"1001:{MNQ}", "last_price": "21002.5", "unrealized_pnl": "10"}]
    # should have coalesced ten quotes into a few messages (one per 0.5 s publish interval)
    assert len(received) <= 3, received
