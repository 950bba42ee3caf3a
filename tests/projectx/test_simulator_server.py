"""Running the simulator: background thread, inside a loop, as a program; thread safety."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import aiohttp
import httpx
import pytest

from projectx.simulator import (
    DEMO_ACCOUNT_ID,
    DEMO_API_KEY,
    DEMO_CONTRACT_ID,
    DEMO_USERNAME,
    GatewaySimulator,
)
from projectx.simulator.testing import RawHubClient, api_client, login

pytestmark = pytest.mark.timeout(30)

REPOSITORY = Path(__file__).resolve().parents[2]


def test_background_thread_start_and_stop() -> None:
    simulator = GatewaySimulator.with_demo_data()
    with simulator:
        assert simulator.base_url.startswith("http://127.0.0.1:")
        assert simulator.user_hub_url == f"{simulator.base_url}/hubs/user"
        assert simulator.user_hub_ws_url.startswith("ws://127.0.0.1:")
        assert login(simulator)
        port = simulator.port
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/Status/ping")
    simulator.stop()  # a second stop is harmless


def test_empty_simulator_and_explicit_setup() -> None:
    simulator = GatewaySimulator(port=0)
    simulator.add_user("trader", "api-key-1")
    simulator.add_account(
        id=7001, name="PRAC-7001", balance=Decimal("50000"), can_trade=True, simulated=True
    )
    simulator.add_contract(
        id="CON.F.US.MNQ.Z26", name="MNQZ6", tick_size=Decimal("0.25"), tick_value=Decimal("0.5")
    )
    simulator.set_price("CON.F.US.MNQ.Z26", Decimal("21000.00"))
    with simulator:
        token = login(simulator, "trader", "api-key-1")
        with api_client(simulator, token) as client:
            accounts = client.post("Account/search", json={"onlyActiveAccounts": True}).json()
        assert [account["id"] for account in accounts["accounts"]] == [7001]


def test_start_async_inside_a_running_loop() -> None:
    async def scenario() -> None:
        async with GatewaySimulator.with_demo_data(ping_interval=0.1) as simulator:
            token = simulator.issue_token(DEMO_USERNAME)
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{simulator.api_url}/Status/ping") as response,
            ):
                assert await response.text() == "pong"
            async with await RawHubClient.connect(simulator.user_hub_url, token) as hub:
                await hub.call("SubscribeOrders", DEMO_ACCOUNT_ID)
                assert (await hub.receive())["type"] == 6
                # Hub actions run directly when called on the simulator's own loop.
                assert simulator.faults.close_hub_connections("bye") == 1
                close = await hub.receive_until(lambda message: message["type"] == 7)
                assert close["error"] == "bye"
            simulator.set_price(DEMO_CONTRACT_ID, Decimal("21000.25"))

    asyncio.run(scenario())


def test_demo_data() -> None:
    simulator = GatewaySimulator.with_demo_data()
    assert simulator.broker.check_api_key(DEMO_USERNAME, DEMO_API_KEY)
    assert simulator.broker.account(DEMO_ACCOUNT_ID) is not None
    assert simulator.price(DEMO_CONTRACT_ID) == Decimal("21000.00")
    assert len(simulator.broker.available_contracts()) >= 3


def test_concurrent_orders_from_many_threads(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    stop_moving = threading.Event()

    def move_prices() -> None:
        ticks = 0
        # A new price every millisecond for as long as orders arrive: a tight loop would hold
        # the broker's lock (and the GIL) so long that the server thread starves and the
        # clients time out, which tests the machine's load rather than the broker.
        while not stop_moving.wait(0.001):
            ticks = (ticks + 1) % 8
            simulator.set_price(DEMO_CONTRACT_ID, Decimal("21000") + Decimal("0.25") * ticks)

    def place_orders(worker: int) -> list[int]:
        with api_client(simulator, simulator_token) as client:
            ids = []
            for number in range(10):
                body = {
                    "accountId": DEMO_ACCOUNT_ID,
                    "contractId": DEMO_CONTRACT_ID,
                    "type": 2,
                    "side": number % 2,
                    "size": 1,
                    "customTag": f"w{worker}-{number}",
                }
                ids.append(client.post("Order/place", json=body).json()["orderId"])
            return ids

    mover = threading.Thread(target=move_prices)
    mover.start()
    try:
        with ThreadPoolExecutor(max_workers=6) as pool:
            placed = [order_id for ids in pool.map(place_orders, range(6)) for order_id in ids]
    finally:
        stop_moving.set()
        mover.join()
    assert len(placed) == len(set(placed)) == 60
    assert len(simulator.broker.orders(DEMO_ACCOUNT_ID)) == 60
    assert len(simulator.broker.trades(DEMO_ACCOUNT_ID)) == 60
    assert simulator.broker.positions(DEMO_ACCOUNT_ID) == []  # 30 buys, 30 sells


def test_command_line_program() -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "projectx.simulator", "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
        cwd=REPOSITORY,
    )
    try:
        assert process.stdout is not None
        banner = []
        for line in process.stdout:
            banner.append(line)
            if "Ctrl-C" in line:
                break
        text = "".join(banner)
        assert "demo-api-key" in text and "Username  demo" in text and str(DEMO_ACCOUNT_ID) in text
        rest_line = next(line for line in banner if line.strip().startswith("REST"))
        api_url = rest_line.split()[1]
        assert httpx.get(f"{api_url}/Status/ping").text == "pong"
        assert "/hubs/user" in text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_a_stopped_simulator_starts_again_on_the_same_port() -> None:
    simulator = GatewaySimulator.with_demo_data()
    with simulator:
        port = simulator.port
        token = simulator.issue_token(DEMO_USERNAME)

        async def connect_and_leave() -> None:
            async with await RawHubClient.connect(simulator.user_hub_url, token) as hub:
                await hub.call("SubscribeAccounts")

        asyncio.run(connect_and_leave())
    with simulator:
        assert simulator.port == port
        assert httpx.get(f"{simulator.api_url}/Status/ping").text == "pong"
        asyncio.run(connect_and_leave())
