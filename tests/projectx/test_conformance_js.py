"""Conformance: Microsoft's own JavaScript SignalR client (@microsoft/signalr, under Node) connects
to the simulator with and without negotiation, subscribes, receives the user events, and
reconnects and re-subscribes after the simulator drops it; on the market hub it subscribes to a
contract and receives quotes, trades and depth.

Needs `npm ci` in tests/js. Without tests/js/node_modules the tests skip, except under CI=true
where a missing client is a failure.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from projectx.enums import EVENT_ORDER, EVENT_POSITION, EVENT_TRADE, OrderStatus
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import api_client

pytestmark = pytest.mark.timeout(60)

JS_DIRECTORY = Path(__file__).resolve().parents[1] / "js"
SCRIPT = JS_DIRECTORY / "conformance.mjs"
MARKET_SCRIPT = JS_DIRECTORY / "market_conformance.mjs"
CLIENT_PACKAGE = JS_DIRECTORY / "node_modules" / "@microsoft" / "signalr" / "package.json"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
WANTED_EVENTS = {EVENT_ORDER, EVENT_TRADE, EVENT_POSITION}


def _require_node_client() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not CLIENT_PACKAGE.exists():
        problem = "tests/js/node_modules is missing: run `npm ci` in tests/js"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"@microsoft/signalr conformance cannot run: {problem} (CI=true)")
        pytest.skip(f"@microsoft/signalr conformance skipped: {problem}")
    assert node is not None
    return node


class NodeClient:
    """The conformance.mjs process and its JSON-lines output."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.strip():
                self.lines.put(json.loads(line))

    def next(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        while True:
            try:
                record = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(
                    f"no {kind!r} from the JS client; saw {self.seen}; stderr: {self.stderr()}"
                ) from None
            self.seen.append(record)
            if record["kind"] == "error":
                raise AssertionError(f"JS client error: {record}; stderr: {self.stderr()}")
            if record["kind"] == kind:
                return record

    def events_until_all_seen(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while not {event["target"] for event in events} >= WANTED_EVENTS:
            events.append(self.next("event"))
        return events

    def stderr(self) -> str:
        if self.process.poll() is None or self.process.stderr is None:
            return "(still running)"
        return self.process.stderr.read()


@contextmanager
def node_client(
    simulator: GatewaySimulator,
    token: str,
    *,
    skip_negotiation: bool,
    script: Path = SCRIPT,
    hub_url: str | None = None,
    subject: str = str(DEMO_ACCOUNT_ID),
) -> Iterator[NodeClient]:
    node = _require_node_client()
    command = [node, str(script), hub_url or simulator.user_hub_url, token, subject]
    if skip_negotiation:
        command.append("--skip-negotiation")
    process = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=JS_DIRECTORY,
    )
    try:
        yield NodeClient(process)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)


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


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiate", "skip-negotiation"])
def test_js_client_receives_events_and_survives_a_drop(
    simulator: GatewaySimulator, simulator_token: str, skip_negotiation: bool
) -> None:
    with node_client(simulator, simulator_token, skip_negotiation=skip_negotiation) as client:
        client.next("connected")
        client.next("subscribed")
        (connection,) = simulator.hub_connections()
        assert connection["negotiated"] is not skip_negotiation
        assert set(connection["subscriptions"]) == {
            "account",
            f"order:{DEMO_ACCOUNT_ID}",
            f"position:{DEMO_ACCOUNT_ID}",
            f"trade:{DEMO_ACCOUNT_ID}",
        }

        order_id = place_market(simulator, simulator_token)
        events = client.events_until_all_seen()
        first = events[0]
        assert first["target"] == EVENT_ORDER
        assert first["argument"]["action"] == 0
        assert first["argument"]["data"]["id"] == order_id
        assert first["argument"]["data"]["status"] == OrderStatus.PENDING
        trade = next(e["argument"] for e in events if e["target"] == EVENT_TRADE)
        assert trade["data"]["orderId"] == order_id
        position = next(e["argument"] for e in events if e["target"] == EVENT_POSITION)
        assert position["data"]["size"] == 1

        # The JS client reconnects (re-negotiating when it negotiated) and re-subscribes.
        assert simulator.faults.drop_hub_connections() == 1
        client.next("reconnected")
        client.next("subscribed")
        order_id = place_market(simulator, simulator_token, side=1)
        events = client.events_until_all_seen()
        assert events[0]["argument"]["data"]["id"] == order_id
        closing = next(e["argument"] for e in events if e["target"] == EVENT_POSITION)
        assert closing["action"] == 2 and closing["data"]["size"] == 0

        assert client.process.stdin is not None
        client.process.stdin.close()
        client.next("stopped")
        assert client.process.wait(10) == 0


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiate", "skip-negotiation"])
def test_js_client_receives_quotes_trades_and_depth(
    simulator: GatewaySimulator, simulator_token: str, skip_negotiation: bool
) -> None:
    with node_client(
        simulator,
        simulator_token,
        skip_negotiation=skip_negotiation,
        script=MARKET_SCRIPT,
        hub_url=simulator.market_hub_url,
        subject=DEMO_CONTRACT_ID,
    ) as client:
        client.next("connected")
        client.next("subscribed")
        prices = simulator.market.step(DEMO_CONTRACT_ID, 3)
        seen: dict[str, dict[str, Any]] = {}
        while not {"GatewayQuote", "GatewayTrade", "GatewayDepth"} <= set(seen):
            event = client.next("event")
            assert event["contractId"] == DEMO_CONTRACT_ID
            seen[event["target"]] = event
        # Should: the JS client hands both arguments over: quote data an object, trades and
        # depth lists, with the fields of reference 6.3.
        quote = seen["GatewayQuote"]["data"]
        assert quote["symbol"] == "F.US.MNQ" and quote["bestAsk"] > quote["bestBid"]
        (trade,) = seen["GatewayTrade"]["data"]
        assert set(trade) == {"symbolId", "price", "timestamp", "type", "volume"}
        depth = seen["GatewayDepth"]["data"]
        assert depth[0]["type"] == 6 and len(depth) == 11
        # Should: the third trade is the step's last price.
        while trade["price"] != float(prices[DEMO_CONTRACT_ID]):
            event = client.next("event")
            if event["target"] == "GatewayTrade":
                (trade,) = event["data"]

        assert client.process.stdin is not None
        client.process.stdin.close()
        client.next("stopped")
        assert client.process.wait(10) == 0
