"""Conformance: the third-party `signalrcore` client (used by the ProjectX Python SDK community)
connects to the simulator with and without negotiation, subscribes and gets the user events, and
on the market hub gets a contract's quotes, trades and depth.

signalrcore is thread-based and its `stop()` can hang after a reconnect, so every stop runs in a
daemon thread with a deadline: these tests never hang the suite.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from signalrcore.hub.base_hub_connection import BaseHubConnection
from signalrcore.hub_connection_builder import HubConnectionBuilder

from projectx.enums import EVENT_ORDER, EVENT_POSITION, EVENT_TRADE, OrderStatus
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import api_client, running_simulator

pytestmark = pytest.mark.timeout(30)

SUBSCRIPTIONS = ("SubscribeOrders", "SubscribeTrades", "SubscribePositions")
WANTED_EVENTS = (EVENT_ORDER, EVENT_TRADE, EVENT_POSITION)


class Recorder:
    """Collects (event name, argument) pairs from signalrcore's receive thread."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()

    def handler(self, name: str) -> Any:
        def record(arguments: list[Any]) -> None:
            self.events.put((name, arguments[0]))

        return record

    def until_all_seen(self, names: tuple[str, ...], timeout: float = 5.0) -> list[tuple[str, Any]]:
        seen: list[tuple[str, Any]] = []
        while not set(names) <= {name for name, _ in seen}:
            seen.append(self.events.get(timeout=timeout))
        return seen


def subscribe(hub: BaseHubConnection) -> None:
    for method in SUBSCRIPTIONS:
        hub.invoke(method, [DEMO_ACCOUNT_ID])


@contextmanager
def connected_hub(
    simulator: GatewaySimulator, token: str, *, skip_negotiation: bool, recorder: Recorder
) -> Iterator[BaseHubConnection]:
    options = {"access_token_factory": lambda: token, "skip_negotiation": skip_negotiation}
    hub = (
        HubConnectionBuilder()
        .with_url(simulator.user_hub_url, options=options)
        .with_automatic_reconnect(
            {"type": "raw", "keep_alive_interval": 1, "reconnect_interval": 0.2, "max_attempts": 20}
        )
        .configure_logging(logging.CRITICAL)
        .build()
    )
    opened = threading.Event()
    hub.on_open(opened.set)
    # signalrcore calls on_reconnect once it is connected again: subscriptions must be redone.
    hub.on_reconnect(lambda: threading.Thread(target=subscribe, args=(hub,), daemon=True).start())
    for name in WANTED_EVENTS:
        hub.on(name, recorder.handler(name))
    hub.start()
    try:
        assert opened.wait(5), "signalrcore never opened"
        yield hub
    finally:
        # stop() joins a reader thread that only wakes on incoming data (the simulator's fast
        # pings wake it) and can hang after a reconnect: never wait for it forever.
        stopper = threading.Thread(target=hub.stop, daemon=True)
        stopper.start()
        stopper.join(3)


def place_market(simulator: GatewaySimulator, token: str, side: int = 0) -> int:
    with api_client(simulator, token) as client:
        body = client.post(
            "Order/place",
            json={
                "accountId": DEMO_ACCOUNT_ID,
                "contractId": DEMO_CONTRACT_ID,
                "type": 2,
                "side": side,
                "size": 1,
            },
        ).json()
    assert body["success"], body
    return int(body["orderId"])


@pytest.fixture
def fast_pinging_simulator() -> Iterator[GatewaySimulator]:
    with running_simulator(ping_interval=0.2, client_timeout=5.0) as simulator:
        yield simulator


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiate", "skip-negotiation"])
def test_signalrcore_receives_order_trade_and_position(
    fast_pinging_simulator: GatewaySimulator, skip_negotiation: bool
) -> None:
    simulator = fast_pinging_simulator
    simulator_token = simulator.issue_token("demo")
    recorder = Recorder()
    with connected_hub(
        simulator, simulator_token, skip_negotiation=skip_negotiation, recorder=recorder
    ) as hub:
        subscribe(hub)
        simulator.wait_for_subscription(f"position:{DEMO_ACCOUNT_ID}")
        (connection,) = simulator.hub_connections()
        assert connection["negotiated"] is not skip_negotiation

        order_id = place_market(simulator, simulator_token)
        seen = recorder.until_all_seen(WANTED_EVENTS)
        orders = [argument for name, argument in seen if name == EVENT_ORDER]
        assert orders[0] == {"action": 0, "data": orders[0]["data"]}
        assert orders[0]["data"]["id"] == order_id
        assert orders[0]["data"]["status"] == OrderStatus.PENDING
        trade = next(argument for name, argument in seen if name == EVENT_TRADE)
        assert trade["data"]["orderId"] == order_id and trade["action"] == 0
        position = next(argument for name, argument in seen if name == EVENT_POSITION)
        assert position["data"]["size"] == 1 and position["data"]["accountId"] == DEMO_ACCOUNT_ID


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiate", "skip-negotiation"])
def test_signalrcore_reconnects_after_a_drop(
    fast_pinging_simulator: GatewaySimulator, skip_negotiation: bool
) -> None:
    simulator = fast_pinging_simulator
    token = simulator.issue_token("demo")
    recorder = Recorder()
    with connected_hub(
        simulator, token, skip_negotiation=skip_negotiation, recorder=recorder
    ) as hub:
        subscribe(hub)
        (first,) = simulator.wait_for_subscription(f"order:{DEMO_ACCOUNT_ID}")
        assert simulator.faults.drop_hub_connections() == 1
        simulator.wait_for_hub(
            lambda connections: any(
                c["connectionId"] != first["connectionId"]
                and f"trade:{DEMO_ACCOUNT_ID}" in c["subscriptions"]
                for c in connections
            ),
            timeout=10,
        )
        order_id = place_market(simulator, token)
        seen = recorder.until_all_seen(WANTED_EVENTS)
        assert any(
            name == EVENT_ORDER and argument["data"]["id"] == order_id for name, argument in seen
        )


MARKET_EVENTS = ("GatewayQuote", "GatewayTrade", "GatewayDepth")


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiate", "skip-negotiation"])
def test_signalrcore_receives_quotes_trades_and_depth(
    fast_pinging_simulator: GatewaySimulator, skip_negotiation: bool
) -> None:
    simulator = fast_pinging_simulator
    token = simulator.issue_token("demo")
    received: queue.Queue[tuple[str, list[Any]]] = queue.Queue()
    hub = (
        HubConnectionBuilder()
        .with_url(
            simulator.market_hub_url,
            options={"access_token_factory": lambda: token, "skip_negotiation": skip_negotiation},
        )
        .configure_logging(logging.CRITICAL)
        .build()
    )
    opened = threading.Event()
    hub.on_open(opened.set)
    for name in MARKET_EVENTS:
        hub.on(name, lambda arguments, name=name: received.put((name, arguments)))
    hub.start()
    try:
        assert opened.wait(5), "signalrcore never opened"
        for method in (
            "SubscribeContractQuotes",
            "SubscribeContractTrades",
            "SubscribeContractMarketDepth",
        ):
            hub.send(method, [DEMO_CONTRACT_ID])
        simulator.wait_for_subscription(f"depth:{DEMO_CONTRACT_ID}", hub="market")
        simulator.market.step(DEMO_CONTRACT_ID, 2)
        seen: dict[str, list[Any]] = {}
        while not set(MARKET_EVENTS) <= set(seen):
            name, arguments = received.get(timeout=5)
            seen[name] = arguments
        # Should: each event has two arguments, the contract id and its data.
        assert all(arguments[0] == DEMO_CONTRACT_ID for arguments in seen.values())
        assert seen["GatewayQuote"][1]["symbol"] == "F.US.MNQ"
        assert seen["GatewayTrade"][1][0]["symbolId"] == "F.US.MNQ"
        assert [entry["type"] for entry in seen["GatewayDepth"][1]][:2] == [6, 4]
    finally:
        stopper = threading.Thread(target=hub.stop, daemon=True)
        stopper.start()
        stopper.join(3)
