"""How the user hub turns one event's arguments into typed callbacks: the `{action, data}`
envelope and the bare payload, batches, unknown actions, unreadable payloads, exact prices.

These drive the hub's per-event handler directly, because the simulator always sends the
wrapped form; everything that needs a connection is in test_hub_simulator.py.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from projectx.enums import EVENT_ORDER, EVENT_POSITION, EventAction, OrderStatus
from projectx.hub import UserHubClient, _DecimalJSONProtocol, _url_with_access_token
from projectx.models import Order, Position

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(5)]

ORDER_PAYLOAD: dict[str, Any] = {
    "id": 2934939764,
    "accountId": 1001,
    "contractId": "CON.F.US.MYM.M26",
    "creationTimestamp": "2026-05-01T14:30:00.1234567+00:00",
    "status": 6,
    "type": 2,
    "side": 0,
    "size": 15,
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Received:
    def __init__(self) -> None:
        self.orders: list[tuple[Order, EventAction | None]] = []
        self.positions: list[tuple[Position, EventAction | None]] = []

    async def on_order(self, order: Order, action: EventAction | None) -> None:
        self.orders.append((order, action))

    async def on_position(self, position: Position, action: EventAction | None) -> None:
        self.positions.append((position, action))


async def never_called(*, rejected_token: str | None = None) -> str:
    raise AssertionError("no connection in these tests")


def hub_with(received: Received) -> UserHubClient:
    return UserHubClient(
        "http://127.0.0.1:1/hubs/user",
        never_called,
        [1001],
        on_order=received.on_order,
        on_position=received.on_position,
    )


async def test_it_unwraps_the_envelope_and_passes_the_action() -> None:
    received = Received()
    hub = hub_with(received)

    await hub._event_handler(EVENT_ORDER)([{"action": 1, "data": ORDER_PAYLOAD}])

    [(order, action)] = received.orders
    # should parse the data into an Order and keep the action
    assert order.id == 2934939764
    assert order.status is OrderStatus.PENDING
    assert action is EventAction.UPDATE


async def test_it_accepts_a_bare_payload_without_an_action() -> None:
    received = Received()
    hub = hub_with(received)

    await hub._event_handler(EVENT_ORDER)([ORDER_PAYLOAD])

    # should deliver the same model, with no action
    [(order, action)] = received.orders
    assert order.size == 15
    assert action is None


async def test_it_delivers_each_item_of_a_batch_in_order() -> None:
    received = Received()
    hub = hub_with(received)
    second = {**ORDER_PAYLOAD, "status": 2, "fillVolume": 15}

    await hub._event_handler(EVENT_ORDER)(
        [[{"action": 0, "data": ORDER_PAYLOAD}, {"action": 1, "data": second}]]
    )

    # should keep the broker's order
    assert [order.status for order, _ in received.orders] == [
        OrderStatus.PENDING,
        OrderStatus.FILLED,
    ]


async def test_an_unknown_action_is_passed_as_none() -> None:
    received = Received()
    hub = hub_with(received)
    position = {
        "id": 7,
        "accountId": 1001,
        "contractId": "CON.F.US.MYM.M26",
        "creationTimestamp": "2026-05-01T14:30:00Z",
        "type": 0,
        "size": 0,
    }

    await hub._event_handler(EVENT_POSITION)([{"action": 9, "data": position}])
    await hub._event_handler(EVENT_POSITION)([{"action": 2, "data": position}])

    # should not guess an action it does not know; a delete stays a delete
    assert [action for _, action in received.positions] == [None, EventAction.DELETE]
    assert received.positions[1][0].is_flat


async def test_an_unreadable_event_is_dropped_and_counted_and_the_next_one_delivered() -> None:
    received = Received()
    hub = hub_with(received)

    await hub._event_handler(EVENT_ORDER)([{"action": 1, "data": {"id": "not an order"}}])
    await hub._event_handler(EVENT_ORDER)([{"action": 1, "data": ORDER_PAYLOAD}])

    # should count the bad one and go on
    assert hub.health().events_dropped == 1
    assert hub.health().events_received == 2
    assert len(received.orders) == 1


async def test_a_raising_callback_does_not_stop_the_stream() -> None:
    delivered: list[int] = []

    async def flaky(order: Order, action: EventAction | None) -> None:
        delivered.append(order.id)
        if len(delivered) == 1:
            raise RuntimeError("listener bug")

    hub = UserHubClient("http://127.0.0.1:1/hubs/user", never_called, [1001], on_order=flaky)

    await hub._event_handler(EVENT_ORDER)([ORDER_PAYLOAD])
    await hub._event_handler(EVENT_ORDER)([{**ORDER_PAYLOAD, "id": 2}])

    # should have logged the first failure and delivered the second event
    assert delivered == [2934939764, 2]


def test_hub_frames_parse_prices_as_decimal() -> None:
    frame = (
        '{"type":1,"target":"GatewayUserTrade","arguments":[{"action":0,"data":'
        '{"price":21000.250000000}}]}\x1e{"type":6}\x1e'
    )

    invocation, ping = _DecimalJSONProtocol().decode(frame)

    # should never let a price become a float, and keep pings
    assert invocation.arguments[0]["data"]["price"] == Decimal("21000.25")  # type: ignore[attr-defined]
    assert isinstance(invocation.arguments[0]["data"]["price"], Decimal)  # type: ignore[attr-defined]
    assert ping.type == 6  # type: ignore[attr-defined]


def test_the_access_token_replaces_any_in_the_url() -> None:
    url = _url_with_access_token("wss://rtc.test/hubs/user?id=abc&access_token=old", "new")

    # should keep other parameters and carry exactly one, current token
    assert url == "wss://rtc.test/hubs/user?id=abc&access_token=new"
