"""Fault injection: each fault, seen from a plain HTTP client and a raw hub client."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest

from projectx.enums import EVENT_ORDER, EVENT_TRADE, OrderStatus, PlaceOrderErrorCode
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import RawHubClient, api_client, running_simulator, wait_until

pytestmark = pytest.mark.timeout(30)

MARKET = {
    "accountId": DEMO_ACCOUNT_ID,
    "contractId": DEMO_CONTRACT_ID,
    "type": 2,
    "side": 0,
    "size": 1,
}
ACCOUNTS = {"onlyActiveAccounts": True}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def held_orders(simulator: GatewaySimulator) -> int:
    return len(simulator.broker.orders(DEMO_ACCOUNT_ID))


async def subscribed_client(simulator: GatewaySimulator, token: str) -> RawHubClient:
    client = await RawHubClient.connect(simulator.user_hub_url, token)
    await client.call("SubscribeOrders", DEMO_ACCOUNT_ID)
    await client.call("SubscribeTrades", DEMO_ACCOUNT_ID)
    return client


async def place_in_thread(simulator: GatewaySimulator, token: str, **extra: Any) -> Any:
    def place() -> Any:
        with api_client(simulator, token) as client:
            return client.post("Order/place", json={**MARKET, **extra}).json()

    return await asyncio.to_thread(place)


# ------------------------------------------------------------------------------ HTTP


def test_fail_requests_answers_unprocessed_for_count_requests(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    simulator.faults.fail_requests(503, path="Order/place", count=2, body={"title": "down"})
    for _ in range(2):
        response = simulator_api.post("Order/place", json=MARKET)
        assert response.status_code == 503 and response.json() == {"title": "down"}
    assert held_orders(simulator) == 0
    assert simulator_api.post("Account/search", json=ACCOUNTS).status_code == 200  # other path
    assert simulator_api.post("Order/place", json=MARKET).json()["success"]
    assert held_orders(simulator) == 1


def test_fail_every_path_until_cleared(
    simulator: GatewaySimulator, simulator_api: httpx.Client, simulator_token: str
) -> None:
    simulator.faults.fail_requests(500, count=None)
    assert simulator_api.post("Account/search", json=ACCOUNTS).status_code == 500
    assert simulator_api.get("Status/ping").status_code == 500
    negotiate = httpx.post(
        f"{simulator.user_hub_url}/negotiate", params={"access_token": simulator_token}
    )
    assert negotiate.status_code == 500
    # The control endpoints are never faulted, so a test can always clear.
    state = httpx.get(f"{simulator.base_url}/_sim/state")
    assert state.status_code == 200 and state.json()["faults"]["http"][0]["status"] == 500
    simulator.faults.clear()
    assert simulator_api.post("Account/search", json=ACCOUNTS).status_code == 200


def test_wildcard_paths_and_rate_limit(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    simulator.faults.rate_limit(path="order/*", count=2, retry_after=1.5)
    limited = simulator_api.post("Order/searchOpen", json={"accountId": DEMO_ACCOUNT_ID})
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1.5"
    assert simulator_api.post("Order/place", json=MARKET).status_code == 429
    assert simulator_api.post("Order/place", json=MARKET).status_code == 200


def test_hub_negotiate_can_fail(simulator: GatewaySimulator, simulator_token: str) -> None:
    simulator.faults.fail_requests(503, path="hubs/user/negotiate")
    url = f"{simulator.user_hub_url}/negotiate"
    assert httpx.post(url, params={"access_token": simulator_token}).status_code == 503
    assert httpx.post(url, params={"access_token": simulator_token}).status_code == 200


def test_lost_ack_creates_the_order_and_sends_events_but_no_response(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    simulator.faults.lose_response(path="Order/place")

    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)

        def place() -> tuple[type[BaseException], float]:
            started = time.monotonic()
            with api_client(simulator, simulator_token) as client:
                try:
                    client.post("Order/place", json={**MARKET, "customTag": "lost"}, timeout=0.5)
                except httpx.HTTPError as error:
                    return type(error), time.monotonic() - started
            raise AssertionError("the lost ack was answered")

        error_type, waited = await asyncio.to_thread(place)
        assert error_type is httpx.ReadTimeout and waited >= 0.5
        targets = [event["target"] for event in await hub.events(3)]
        assert targets == [EVENT_ORDER, EVENT_TRADE, EVENT_ORDER]
        await hub.close()

    run(scenario)
    (order,) = simulator.broker.orders(DEMO_ACCOUNT_ID)
    assert order["customTag"] == "lost" and order["status"] == OrderStatus.FILLED
    # Re-sending with the same tag cannot create a second order.
    with api_client(simulator, simulator_token) as client:
        retry = client.post("Order/place", json={**MARKET, "customTag": "lost"}).json()
    assert retry["errorCode"] == PlaceOrderErrorCode.ORDER_REJECTED
    assert held_orders(simulator) == 1


def test_a_held_lost_ack_is_cut_when_the_simulator_stops() -> None:
    with running_simulator() as simulator:
        token = simulator.issue_token("demo")
        simulator.faults.lose_response(path="Order/place")
        outcome: list[BaseException] = []

        def place() -> None:
            with api_client(simulator, token) as client:
                try:
                    client.post("Order/place", json=MARKET, timeout=20)
                except httpx.HTTPError as error:
                    outcome.append(error)

        thread = threading.Thread(target=place)
        thread.start()
        wait_until(lambda: held_orders(simulator) == 1)
        started = time.monotonic()
        simulator.stop()
        thread.join(5)
        assert time.monotonic() - started < 3
        assert outcome and isinstance(outcome[0], httpx.RemoteProtocolError)


def test_delayed_response_after_the_broker_acted(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    simulator.faults.delay_response(0.4, path="Order/place")
    seen_during_delay: list[int] = []

    def watch() -> None:
        time.sleep(0.2)
        seen_during_delay.append(held_orders(simulator))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    response = simulator_api.post("Order/place", json=MARKET)
    assert response.json()["success"] and time.monotonic() - started >= 0.4
    watcher.join()
    assert seen_during_delay == [1]


def test_dropped_request_never_reaches_the_broker(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    simulator.faults.drop_requests(path="Order/place")
    # The connection is cut without an answer: an end of stream, or a reset when the kernel
    # still held unread bytes of the request as the simulator closed it (seen under load).
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        simulator_api.post("Order/place", json=MARKET)
    assert held_orders(simulator) == 0
    assert simulator_api.post("Order/place", json=MARKET).json()["success"]


def test_refused_connections_then_recovery(
    simulator: GatewaySimulator, simulator_api: httpx.Client
) -> None:
    assert simulator_api.post("Account/search", json=ACCOUNTS).status_code == 200  # pool warm
    simulator.faults.refuse_connections(0.5)
    with pytest.raises(httpx.ConnectError):
        simulator_api.post("Order/place", json=MARKET)
    assert held_orders(simulator) == 0
    wait_until(lambda: _reachable(simulator_api), timeout=3)

    simulator.faults.refuse_connections()  # until told otherwise
    with pytest.raises(httpx.ConnectError):
        simulator_api.post("Account/search", json=ACCOUNTS)
    simulator.faults.accept_connections()
    assert simulator_api.post("Account/search", json=ACCOUNTS).status_code == 200


def _reachable(client: httpx.Client) -> bool:
    try:
        return client.post("Account/search", json=ACCOUNTS).status_code == 200
    except httpx.ConnectError:
        return False


# ---------------------------------------------------------------------------- broker


def test_injected_rejects(simulator: GatewaySimulator, simulator_token: str) -> None:
    simulator.faults.reject_orders(
        1, error_code=PlaceOrderErrorCode.OUTSIDE_TRADING_HOURS, message="Market closed."
    )
    simulator.faults.reject_orders(1, message="Risk says no.", create_order=False)

    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        first = await place_in_thread(simulator, simulator_token)
        assert first["success"] is False and first["errorCode"] == 5
        assert first["errorMessage"] == "Market closed." and first["orderId"] is not None
        (event,) = await hub.events(1)
        assert event["arguments"][0]["data"]["status"] == OrderStatus.REJECTED

        second = await place_in_thread(simulator, simulator_token)
        assert second["errorCode"] == 2 and second["orderId"] is None
        assert (await place_in_thread(simulator, simulator_token))["success"]
        await hub.close()

    run(scenario)
    assert held_orders(simulator) == 2


def test_void_trade_is_published_again(simulator: GatewaySimulator, simulator_token: str) -> None:
    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        await place_in_thread(simulator, simulator_token)
        trade = next(e for e in await hub.events(3) if e["target"] == EVENT_TRADE)
        trade_id = trade["arguments"][0]["data"]["id"]
        await asyncio.to_thread(simulator.faults.void_trade, trade_id)
        (voided,) = await hub.events(1)
        assert voided["target"] == EVENT_TRADE
        assert voided["arguments"][0] == {
            "action": 1,
            "data": {**trade["arguments"][0]["data"], "voided": True},
        }
        await hub.close()

    run(scenario)
    assert simulator.broker.trades(DEMO_ACCOUNT_ID)[0]["voided"] is True


# ------------------------------------------------------------------------------- hub


def test_drop_hub_connections_cuts_without_a_close_message(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        assert await asyncio.to_thread(simulator.faults.drop_hub_connections) == 1
        with pytest.raises(ConnectionError):
            await hub.receive_until(lambda m: m.get("type") == 7, 2)  # no Close comes first
        await hub.close()
        assert simulator.hub_connections() == []

    run(scenario)


def test_close_hub_connections_sends_a_close_with_an_error(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        closed = await asyncio.to_thread(
            simulator.faults.close_hub_connections, "Maintenance.", allow_reconnect=False
        )
        assert closed == 1
        close = await hub.receive_until(lambda m: m.get("type") != 6)
        assert close == {"type": 7, "error": "Maintenance.", "allowReconnect": False}
        with pytest.raises(ConnectionError):
            await hub.receive(2)
        await hub.close()

    run(scenario)


def test_stalled_hub_sends_nothing_but_stays_open() -> None:
    with running_simulator(ping_interval=0.1, client_timeout=5) as simulator:
        token = simulator.issue_token("demo")

        async def scenario() -> None:
            hub = await subscribed_client(simulator, token)
            assert (await hub.receive())["type"] == 6  # pings flow
            simulator.faults.stall_hub()
            await asyncio.sleep(0.15)  # let an in-flight ping land
            hub._records.clear()
            await place_in_thread(simulator, token)
            with pytest.raises(TimeoutError):
                await hub.receive(0.5)  # no events, no pings
            assert len(simulator.hub_connections()) == 1
            simulator.faults.resume_hub()
            assert (await hub.receive())["type"] == 6
            await place_in_thread(simulator, token)
            (event,) = await hub.events(1)
            assert event["arguments"][0]["data"]["id"] == simulator.broker.orders()[-1]["id"]
            await hub.close()

        run(scenario)


def _event_ids(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(e["target"], e["arguments"][0]["action"]) for e in events]


def test_duplicated_events(simulator: GatewaySimulator, simulator_token: str) -> None:
    simulator.faults.duplicate_events(count=2)

    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        await place_in_thread(simulator, simulator_token)
        events = await hub.events(5)
        assert _event_ids(events) == [
            (EVENT_ORDER, 0),
            (EVENT_ORDER, 0),
            (EVENT_TRADE, 0),
            (EVENT_TRADE, 0),
            (EVENT_ORDER, 1),
        ]
        await hub.close()

    run(scenario)


def test_delayed_events_arrive_late_and_out_of_order(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    simulator.faults.delay_events(0.3, count=1)

    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        await place_in_thread(simulator, simulator_token)
        events = await hub.events(3)
        assert _event_ids(events) == [(EVENT_TRADE, 0), (EVENT_ORDER, 1), (EVENT_ORDER, 0)]
        await hub.close()

    run(scenario)


def test_reordered_and_dropped_events(simulator: GatewaySimulator, simulator_token: str) -> None:
    async def scenario() -> None:
        hub = await subscribed_client(simulator, simulator_token)
        simulator.faults.reorder_events(3)
        await place_in_thread(simulator, simulator_token)
        events = await hub.events(3)
        assert _event_ids(events) == [(EVENT_ORDER, 1), (EVENT_TRADE, 0), (EVENT_ORDER, 0)]

        simulator.faults.drop_events(1)
        await place_in_thread(simulator, simulator_token)
        events = await hub.events(2)
        assert _event_ids(events) == [(EVENT_TRADE, 0), (EVENT_ORDER, 1)]
        await hub.close()

    run(scenario)


# -------------------------------------------------------------------------- controls


def test_control_endpoints(simulator: GatewaySimulator, simulator_token: str) -> None:
    control = httpx.Client(base_url=f"{simulator.base_url}/_sim/", timeout=5)
    api = api_client(simulator, simulator_token)
    with control, api:
        assert control.post("users", json={"username": "u2", "apiKey": "k2"}).status_code == 200
        assert control.post("accounts", json={"id": 77, "name": "ACC-77"}).json()["id"] == 77
        contract = {"id": "CON.F.US.MCL.Z26", "name": "MCLZ6", "tickSize": 0.01, "tickValue": 1}
        assert control.post("contracts", json=contract).json()["tickSize"] == 0.01
        assert control.post("price", json={"contractId": contract["id"], "price": 70.01}).is_success

        limit = {**MARKET, "type": 1, "limitPrice": 20990}
        order_id = api.post("Order/place", json=limit).json()["orderId"]
        assert control.post(
            "price", json={"contractId": DEMO_CONTRACT_ID, "price": 20990}
        ).is_success
        state = control.get("state").json()
        assert state["orders"][0]["status"] == OrderStatus.FILLED
        assert state["prices"][DEMO_CONTRACT_ID] == 20990
        assert state["hubConnections"] == []

        control.post("fill-plan", json={"plan": [1, 1]})
        second = api.post("Order/place", json={**limit, "size": 2, "limitPrice": 20000}).json()
        trade = control.post("fill", json={"orderId": second["orderId"]}).json()
        assert trade["size"] == 1 and trade["price"] == 20000
        assert control.post("fill", json={"orderId": order_id}).status_code == 400  # filled

        fault = {"fault": "fail_requests", "status": 502, "path": "Account/search"}
        assert control.post("faults", json=fault).status_code == 200
        assert api.post("Account/search", json=ACCOUNTS).status_code == 502
        assert control.post("faults", json={"fault": "rate_limit", "count": None}).is_success
        assert control.get("faults").json()["http"][0]["status"] == 429
        assert control.delete("faults").status_code == 200
        assert api.post("Account/search", json=ACCOUNTS).status_code == 200
        assert control.post("faults", json={"fault": "explode"}).status_code == 400
        assert control.post("faults", json={"fault": "rate_limit", "bogus": 1}).status_code == 400

        token = control.post("tokens", json={"username": "u2"}).json()["token"]
        assert simulator.tokens.check(token).valid
        assert control.post("tokens/expire", json={"token": token}).json()["expired"] == 1
        assert not simulator.tokens.check(token).valid
        assert control.post("token-lifetime", json={"seconds": 60}).is_success
        assert simulator.token_lifetime.total_seconds() == 60

        assert control.post("reset").status_code == 200
        assert control.get("state").json()["orders"] == []
        assert control.post("price", json={"contractId": "nope", "price": 1}).status_code == 400
        assert control.post("price", content=b"[").status_code == 400
