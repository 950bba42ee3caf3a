"""UserHubClient against the simulator's user hub over real WebSockets: subscriptions, typed
events, reconnect and re-subscribe after drops and Close messages, stall detection, token
renewal, and a stop() that never hangs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from projectx.client import ProjectXClient
from projectx.config import GatewayConfig
from projectx.enums import EventAction, OrderSide, OrderStatus, OrderType
from projectx.hub import UserHubClient
from projectx.models import Account, Order, Position, Trade
from projectx.ratelimit import SlidingWindowRateLimiter
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_API_KEY, DEMO_USERNAME, GatewaySimulator
from projectx.simulator.testing import running_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(15)]

MNQ = "CON.F.US.MNQ.Z26"
WITHIN = 5.0  # seconds any expected hub state may take; real runs take milliseconds


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def simulator() -> Iterator[GatewaySimulator]:
    # Fast server pings, so a healthy but quiet connection is never mistaken for a stall.
    with running_simulator(ping_interval=0.2) as sim:
        yield sim


@pytest.fixture
async def client(simulator: GatewaySimulator) -> AsyncIterator[ProjectXClient]:
    config = GatewayConfig(
        api_url=simulator.base_url,
        user_hub_url=simulator.user_hub_url,
        username=DEMO_USERNAME,
        api_key=DEMO_API_KEY,
    )
    async with ProjectXClient(config, rate_limiter=SlidingWindowRateLimiter()) as client:
        yield client


@dataclass
class Recorder:
    """Collects what the hub hands to its callbacks, and lets a test wait for it."""

    events: list[tuple[str, Any, EventAction | None]] = field(default_factory=list)
    connected: int = 0
    disconnect_reasons: list[str] = field(default_factory=list)
    connections_seen_on_connect: list[dict[str, Any]] = field(default_factory=list)
    simulator: GatewaySimulator | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def on_order(self, order: Order, action: EventAction | None) -> None:
        self.events.append(("order", order, action))
        await self._note()

    async def on_trade(self, trade: Trade, action: EventAction | None) -> None:
        self.events.append(("trade", trade, action))
        await self._note()

    async def on_position(self, position: Position, action: EventAction | None) -> None:
        self.events.append(("position", position, action))
        await self._note()

    async def on_account(self, account: Account, action: EventAction | None) -> None:
        self.events.append(("account", account, action))
        await self._note()

    async def on_connected(self) -> None:
        self.connected += 1
        if self.simulator is not None:
            [connection] = self.simulator.hub_connections()
            self.connections_seen_on_connect.append(connection)
        await self._note()

    async def on_disconnected(self, reason: str) -> None:
        self.disconnect_reasons.append(reason)
        await self._note()

    async def wait_for(self, condition: Any) -> None:
        async with asyncio.timeout(WITHIN), self.changed:
            await self.changed.wait_for(condition)

    def of_kind(self, kind: str) -> list[tuple[Any, EventAction | None]]:
        return [(model, action) for name, model, action in self.events if name == kind]


def hub_for(
    simulator: GatewaySimulator,
    client: ProjectXClient,
    recorder: Recorder,
    **options: Any,
) -> UserHubClient:
    """A hub reporting to ``recorder``; ``options`` override any argument, callbacks included."""
    recorder.simulator = simulator
    arguments: dict[str, Any] = {
        "on_order": recorder.on_order,
        "on_trade": recorder.on_trade,
        "on_position": recorder.on_position,
        "on_account": recorder.on_account,
        "on_connected": recorder.on_connected,
        "on_disconnected": recorder.on_disconnected,
        "reconnect_delay_initial": 0.02,
        "stale_after": None,
    }
    arguments.update(options)
    return UserHubClient(simulator.user_hub_url, client.get_token, [DEMO_ACCOUNT_ID], **arguments)


async def buy_at_market(client: ProjectXClient) -> int:
    return await client.place_order(
        account_id=DEMO_ACCOUNT_ID,
        contract_id=MNQ,
        type=OrderType.MARKET,
        side=OrderSide.BID,
        size=1,
    )


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    """Simulator controls that wait on its loop run in a thread, so ours keeps serving."""
    return await asyncio.to_thread(function, *args, **kwargs)


@pytest.mark.parametrize("skip_negotiation", [False, True], ids=["negotiated", "skip-negotiation"])
async def test_it_subscribes_and_delivers_typed_events(
    simulator: GatewaySimulator, client: ProjectXClient, skip_negotiation: bool
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder, skip_negotiation=skip_negotiation) as hub:
        async with asyncio.timeout(WITHIN):
            await hub.wait_until_subscribed()
        order_id = await buy_at_market(client)
        await recorder.wait_for(lambda: recorder.of_kind("position"))
        await recorder.wait_for(
            lambda: any(
                order.status is OrderStatus.FILLED for order, _ in recorder.of_kind("order")
            )
        )

    # should connect the way it was told, and subscribe to the account feed and to the
    # orders, positions and trades of each account before on_connected runs
    [connection] = recorder.connections_seen_on_connect
    assert connection["negotiated"] is not skip_negotiation
    assert connection["subscriptions"] == ["account", "order:1001", "position:1001", "trade:1001"]
    # should hand over typed models with the envelope's action
    orders = recorder.of_kind("order")
    assert all(isinstance(order, Order) and order.id == order_id for order, _ in orders)
    assert (orders[0][0].status, orders[0][1]) == (OrderStatus.PENDING, EventAction.CREATE)
    assert (orders[-1][0].status, orders[-1][1]) == (OrderStatus.FILLED, EventAction.UPDATE)
    [(trade, _)] = recorder.of_kind("trade")
    assert trade.order_id == order_id
    assert isinstance(trade.price, Decimal)
    [(position, _)] = recorder.of_kind("position")
    assert position.size == 1
    # should report itself stopped
    assert not hub.connected
    assert recorder.disconnect_reasons == ["stopped"]


async def test_it_resubscribes_and_catches_up_after_a_dropped_connection(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder) as hub:
        await recorder.wait_for(lambda: recorder.connected == 1)

        dropped = await in_thread(simulator.faults.drop_hub_connections)
        await recorder.wait_for(lambda: recorder.connected == 2)
        order_id = await buy_at_market(client)
        await recorder.wait_for(lambda: recorder.of_kind("trade"))

        health = hub.health()

    # should notice the drop, reconnect, re-subscribe before on_connected, and receive again
    assert dropped == 1
    assert len(recorder.disconnect_reasons) == 2  # the drop, then the stop
    assert recorder.connections_seen_on_connect[1]["subscriptions"] == [
        "account",
        "order:1001",
        "position:1001",
        "trade:1001",
    ]
    assert recorder.of_kind("trade")[0][0].order_id == order_id
    assert health.connections == 2
    assert health.connected and health.subscribed


async def test_it_reconnects_after_a_close_message_with_an_error(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder):
        await recorder.wait_for(lambda: recorder.connected == 1)

        await in_thread(simulator.faults.close_hub_connections, "Simulated server error.")
        await recorder.wait_for(lambda: recorder.connected == 2)

    # should carry the server's error into the reason, and come back
    assert "Simulated server error." in recorder.disconnect_reasons[0]


async def test_a_silent_stall_is_detected_and_forces_a_reconnect(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder, stale_after=0.6, subscribe_timeout=0.5) as hub:
        await recorder.wait_for(lambda: recorder.connected == 1)

        simulator.faults.stall_hub()
        await recorder.wait_for(lambda: recorder.disconnect_reasons)
        # should not look healthy while stalled
        assert not hub.subscribed
        simulator.faults.resume_hub()
        await recorder.wait_for(lambda: recorder.connected >= 2)

    # should name the stall as the reason it reconnected
    assert recorder.disconnect_reasons[0].startswith("stale feed")


async def test_force_reconnect_starts_a_new_subscribed_connection(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder) as hub:
        await recorder.wait_for(lambda: recorder.connected == 1)
        [first] = simulator.hub_connections()

        hub.force_reconnect("listener asked")
        await recorder.wait_for(lambda: recorder.connected == 2)
        [second] = await in_thread(
            simulator.wait_for_hub,
            lambda connections: (
                len(connections) == 1 and connections[0]["connectionId"] != first["connectionId"]
            ),
        )

    # should have replaced the connection, not added one
    assert recorder.disconnect_reasons[0] == "listener asked"
    assert second["subscriptions"] == first["subscriptions"]


async def test_a_refused_token_is_renewed_on_reconnect(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder):
        await recorder.wait_for(lambda: recorder.connected == 1)
        first_token = client.session_token

        simulator.expire_tokens()
        await in_thread(simulator.faults.drop_hub_connections)
        await recorder.wait_for(lambda: recorder.connected == 2)

    # should have told the provider its token was refused, which logged in afresh
    assert first_token is not None and client.session_token is not None
    assert client.session_token.value != first_token.value


async def test_stop_is_bounded_even_when_the_server_never_answers_the_handshake(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    await client.login_key()
    simulator.faults.stall_hub()
    hub = hub_for(simulator, client, recorder, stop_timeout=2.0)
    await hub.start()
    await asyncio.sleep(0.3)  # mid-handshake, waiting on a server that says nothing

    started = time.monotonic()
    await hub.stop()

    # should return promptly and leave nothing connected
    assert time.monotonic() - started < 2.0
    assert not hub.connected
    assert recorder.connected == 0


async def test_stop_is_bounded_while_the_broker_is_unreachable(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    await client.login_key()
    simulator.faults.refuse_connections()
    hub = hub_for(simulator, client, recorder, stop_timeout=2.0)
    await hub.start()
    await asyncio.sleep(0.3)  # a few refused attempts, backing off

    started = time.monotonic()
    await hub.stop()

    assert time.monotonic() - started < 2.0
    assert recorder.connected == 0


async def test_a_raising_event_callback_does_not_cost_the_connection(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    seen: list[OrderStatus] = []

    async def buggy_on_order(order: Order, action: EventAction | None) -> None:
        seen.append(order.status)
        await recorder._note()
        raise RuntimeError("listener bug")

    async with hub_for(simulator, client, recorder, on_order=buggy_on_order) as hub:
        await recorder.wait_for(lambda: recorder.connected == 1)
        await buy_at_market(client)
        await recorder.wait_for(lambda: OrderStatus.FILLED in seen)
        health = hub.health()

    # should have delivered every order event on the one, still open, connection
    assert seen == [OrderStatus.PENDING, OrderStatus.FILLED]
    assert health.connections == 1 and health.connected


async def test_a_failed_catch_up_reconnects_so_it_runs_again(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    attempts: list[int] = []

    async def catch_up_failing_once() -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:
            raise ConnectionError("database unavailable")
        await recorder.on_connected()

    async with hub_for(simulator, client, recorder, on_connected=catch_up_failing_once):
        await recorder.wait_for(lambda: recorder.connected == 1)

    # should have reconnected and run the catch-up a second time
    assert attempts == [1, 2]
    assert "database unavailable" in recorder.disconnect_reasons[0]


async def test_routine_drops_of_a_healthy_connection_do_not_escalate_the_backoff(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with hub_for(simulator, client, recorder, reconnect_delay_initial=0.05):
        await recorder.wait_for(lambda: recorder.connected == 1)
        for drops in range(1, 7):
            started = time.monotonic()
            await in_thread(simulator.faults.drop_hub_connections)
            await recorder.wait_for(lambda drops=drops: recorder.connected == drops + 1)
            reconnected_after = time.monotonic() - started

    # should come back at the initial pace after the sixth drop too (escalating, the sixth
    # delay would be 0.05 * 2**6 s, at least 1.6 s with jitter)
    assert reconnected_after < 1.0
