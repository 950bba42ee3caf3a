"""The simulator's user hub over real WebSockets, checked at the SignalR wire level."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
import pytest

from projectx.enums import EVENT_ACCOUNT, EVENT_ORDER, EVENT_POSITION, EVENT_TRADE, OrderStatus
from projectx.simulator import DEMO_ACCOUNT_ID, DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.testing import HANDSHAKE, RawHubClient, api_client, running_simulator

pytestmark = pytest.mark.timeout(30)

RS = "\x1e"
SECOND_ACCOUNT = 1002


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def place_market(simulator: GatewaySimulator, token: str, account_id: int = DEMO_ACCOUNT_ID) -> int:
    """Place from a worker thread's point of view: plain sync httpx (the hub client is async)."""
    with api_client(simulator, token) as client:
        body = client.post(
            "Order/place",
            json={
                "accountId": account_id,
                "contractId": DEMO_CONTRACT_ID,
                "type": 2,
                "side": 0,
                "size": 1,
            },
        ).json()
    assert body["success"], body
    return int(body["orderId"])


async def place_market_async(
    simulator: GatewaySimulator, token: str, account_id: int = DEMO_ACCOUNT_ID
) -> int:
    return await asyncio.to_thread(place_market, simulator, token, account_id)


async def expect_silence(client: RawHubClient, within: float = 0.3) -> None:
    """Nothing but pings arrives for `within` seconds."""
    try:
        message = await client.receive_until(lambda m: m.get("type") != 6, within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {message}")


# ----------------------------------------------------------------------------- negotiate


@pytest.mark.parametrize(
    ("query", "version"), [("", 0), ("?negotiateVersion=1", 1), ("?negotiateVersion=7", 1)]
)
def test_negotiate_versions(
    simulator: GatewaySimulator, simulator_token: str, query: str, version: int
) -> None:
    response = httpx.post(
        f"{simulator.user_hub_url}/negotiate{query}",
        headers={"Authorization": f"Bearer {simulator_token}"},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["negotiateVersion"] == version
    assert body["availableTransports"] == [
        {"transport": "WebSockets", "transferFormats": ["Text", "Binary"]}
    ]
    if version == 0:
        assert set(body) == {"negotiateVersion", "connectionId", "availableTransports"}
    else:
        assert body["connectionToken"] and body["connectionToken"] != body["connectionId"]


def test_negotiate_needs_a_valid_token(simulator: GatewaySimulator, simulator_token: str) -> None:
    url = f"{simulator.user_hub_url}/negotiate"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, params={"access_token": "forged"}).status_code == 401
    assert httpx.post(url, params={"access_token": simulator_token}).status_code == 200
    assert httpx.get(url, params={"access_token": simulator_token}).status_code == 405


@pytest.mark.parametrize("negotiate", ["skip", "v0", "v1"])
@pytest.mark.parametrize("token_in", ["query", "header"])
def test_connect_handshake_and_invoke(
    simulator: GatewaySimulator, simulator_token: str, negotiate: Any, token_in: Any
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(
            simulator.user_hub_url, simulator_token, negotiate=negotiate, token_in=token_in
        ) as client:
            completion = await client.call("SubscribeOrders", DEMO_ACCOUNT_ID)
            assert completion == {"type": 3, "invocationId": "0", "result": None}
            (connection,) = simulator.hub_connections()
            assert connection["negotiated"] is (negotiate != "skip")
            assert connection["subscriptions"] == [f"order:{DEMO_ACCOUNT_ID}"]

    run(scenario)


def test_websocket_rejects_bad_tokens_unknown_and_reused_ids(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def status_of(**kwargs: Any) -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await RawHubClient.connect(simulator.user_hub_url, **kwargs)
        return refused.value.status

    async def scenario() -> None:
        assert await status_of(token=None) == 401
        assert await status_of(token="forged") == 401
        assert await status_of(token=simulator_token, connection_id="never-negotiated") == 404

        reply = await asyncio.to_thread(
            httpx.post,
            f"{simulator.user_hub_url}/negotiate",
            params={"negotiateVersion": "1", "access_token": simulator_token},
        )
        negotiated = reply.json()
        # For version 1 the id to use is the connectionToken, not the connectionId.
        assert (
            await status_of(token=simulator_token, connection_id=negotiated["connectionId"]) == 404
        )
        first = await RawHubClient.connect(
            simulator.user_hub_url, simulator_token, connection_id=negotiated["connectionToken"]
        )
        assert (
            await status_of(token=simulator_token, connection_id=negotiated["connectionToken"])
            == 409
        )
        await first.close()
        await asyncio.to_thread(simulator.wait_for_hub, lambda connections: not connections)
        # Ids are single-use: after the socket is gone the id is unknown.
        assert (
            await status_of(token=simulator_token, connection_id=negotiated["connectionToken"])
            == 404
        )

    run(scenario)


def test_plain_get_without_upgrade_is_refused(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    response = httpx.get(simulator.user_hub_url, params={"access_token": simulator_token})
    assert response.status_code == 400


# ----------------------------------------------------------------------------- handshake


@pytest.mark.parametrize(
    "handshake",
    [
        '{"protocol":"json","version":1}',
        '{"protocol":"json","version":0}',  # what signalrcore sends after a v0 negotiate
        '{"version":1,"protocol":"json","extra":true}',
    ],
)
def test_handshake_variants_accepted(
    simulator: GatewaySimulator, simulator_token: str, handshake: str
) -> None:
    async def scenario() -> None:
        client = await RawHubClient.connect(
            simulator.user_hub_url, simulator_token, handshake=handshake + RS
        )
        assert (await client.call("SubscribeAccounts"))["result"] is None
        await client.close()

    run(scenario)


@pytest.mark.parametrize(
    ("first_record", "error_part"),
    [
        ('{"protocol":"messagepack","version":1}', "messagepack"),
        ('{"protocol":"json","version":2}', "version 2"),
        ('{"type":6}', "handshake"),
        ("not json", "handshake"),
    ],
)
def test_bad_handshake_gets_an_error_then_close(
    simulator: GatewaySimulator, simulator_token: str, first_record: str, error_part: str
) -> None:
    async def scenario() -> None:
        client = await RawHubClient.connect(simulator.user_hub_url, simulator_token, handshake=None)
        await client.send_raw(first_record + RS)
        answer = await client.receive()
        assert error_part in answer["error"]
        with pytest.raises(ConnectionError):
            await client.receive(2)
        await client.close()

    run(scenario)


def test_handshake_split_across_frames_with_an_invocation_behind_it(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        client = await RawHubClient.connect(simulator.user_hub_url, simulator_token, handshake=None)
        await client.send_raw('{"protocol":"js')
        await client.send_raw('on","version":1}' + RS + '{"type":1,"invocationId":"a","tar')
        await client.send_raw('get":"SubscribeAccounts","arguments":[]}' + RS)
        assert await client.receive() == {}
        assert await client.receive() == {"type": 3, "invocationId": "a", "result": None}
        await client.close()

    run(scenario)


# ------------------------------------------------------------------ framing, invocations


def test_several_messages_in_one_frame_and_one_message_in_several(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.user_hub_url, simulator_token) as client:
            batch = "".join(
                f'{{"type":1,"invocationId":"{n}","target":"SubscribeOrders","arguments":[{n}]}}'
                + RS
                for n in (1001, 1002)
            )
            await client.send_raw('{"type":6}' + RS + batch)
            first, second = await client.receive(), await client.receive()
            assert [first["invocationId"], second["invocationId"]] == ["1001", "1002"]

            message = (
                '{"type":1,"invocationId":"split","target":"SubscribeTrades","arguments":[1001]}'
            )
            for start in range(0, len(message), 7):
                await client.send_raw(message[start : start + 7])
            await expect_silence(client, 0.2)  # nothing until the separator arrives
            await client.send_raw(RS)
            assert (await client.receive())["invocationId"] == "split"

            await client.ws.send_bytes(
                b'{"type":1,"invocationId":"bin","target":"SubscribeAccounts","arguments":[]}\x1e'
            )
            assert (await client.receive())["invocationId"] == "bin"
            (connection,) = simulator.hub_connections()
            assert connection["subscriptions"] == [
                "account",
                "order:1001",
                "order:1002",
                "trade:1001",
            ]

    run(scenario)


def test_completions_only_for_invocations_with_an_id(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.user_hub_url, simulator_token) as client:
            await client.invoke("SubscribeOrders", DEMO_ACCOUNT_ID, with_id=False)
            await client.invoke("NoSuchMethod", with_id=False)  # errors are silent too
            await client.send(
                {"type": 1, "invocationId": "x", "target": "SubscribeAccounts", "arguments": []}
            )
            assert await client.receive() == {"type": 3, "invocationId": "x", "result": None}
            await expect_silence(client)
            assert "order:1001" in simulator.hub_connections()[0]["subscriptions"]

    run(scenario)


@pytest.mark.parametrize(
    ("target", "arguments", "error_part"),
    [
        ("NoSuchMethod", [], "Unknown hub method 'NoSuchMethod'"),
        ("SubscribeOrders", [], "provides 0 argument(s) but target expects 1"),
        ("SubscribeAccounts", [1], "provides 1 argument(s) but target expects 0"),
        ("SubscribeOrders", ["1001"], "Error binding arguments"),
        ("SubscribeOrders", [True], "Error binding arguments"),
    ],
)
def test_invocation_errors_come_back_in_the_completion(
    simulator: GatewaySimulator,
    simulator_token: str,
    target: str,
    arguments: list[Any],
    error_part: str,
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.user_hub_url, simulator_token) as client:
            completion = await client.call(target, *arguments)
            assert error_part in completion["error"] and "result" not in completion
            # The connection survives a failed invocation.
            assert (await client.call("SubscribeAccounts"))["result"] is None

    run(scenario)


def test_protocol_errors_close_with_an_error(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        for bad in ("{broken", '{"no":"type"}', "[1,2]"):
            client = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
            await client.send_raw(bad + RS)
            close = await client.receive()
            assert close["type"] == 7 and "error" in close
            with pytest.raises(ConnectionError):
                await client.receive(2)
            await client.close()

    run(scenario)


def test_client_close_message_ends_the_connection(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        client = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
        await client.send({"type": 7})
        with pytest.raises(ConnectionError):
            await client.receive(2)
        await client.close()
        await asyncio.to_thread(simulator.wait_for_hub, lambda connections: not connections)

    run(scenario)


# -------------------------------------------------------------------- keep-alive, timeout


def test_server_pings_and_client_timeout() -> None:
    with running_simulator(ping_interval=0.1, client_timeout=0.6) as simulator:
        token = simulator.issue_token("demo")

        async def scenario() -> None:
            client = await RawHubClient.connect(simulator.user_hub_url, token)
            started = time.monotonic()
            pings = 0
            while True:
                message = await client.receive(2)
                if message["type"] == 6:
                    pings += 1
                    continue
                break
            elapsed = time.monotonic() - started
            assert message == {
                "type": 7,
                "error": "Server timeout elapsed without receiving a message from the client.",
                "allowReconnect": True,
            }
            assert pings >= 3 and 0.5 <= elapsed < 2.0
            with pytest.raises(ConnectionError):
                await client.receive(2)
            await client.close()

        run(scenario)


def test_client_pings_keep_the_connection_alive() -> None:
    with running_simulator(ping_interval=0.2, client_timeout=0.5) as simulator:
        token = simulator.issue_token("demo")

        async def scenario() -> None:
            async with await RawHubClient.connect(simulator.user_hub_url, token) as client:
                for _ in range(8):  # 1.2 s, more than twice the timeout
                    await client.send({"type": 6})
                    await asyncio.sleep(0.15)
                assert (await client.call("SubscribeAccounts"))["result"] is None

        run(scenario)


def test_a_client_silent_after_its_handshake_has_the_whole_client_timeout() -> None:
    # The handshake has a shorter limit than the silence after it. A listener that shook hands
    # and then pinged at 15 s, as every SignalR client does, was cut off at 15 s by the
    # handshake's limit: about one run in six under load, a reconnect and a catch-up.
    with running_simulator(
        ping_interval=30.0, client_timeout=1.5, handshake_timeout=0.3
    ) as simulator:
        token = simulator.issue_token("demo")

        async def scenario() -> None:
            client = await RawHubClient.connect(simulator.user_hub_url, token, handshake=None)
            await client.send_raw(HANDSHAKE)
            assert await client.receive(2) == {}
            handshaken = time.monotonic()
            message = await client.receive(5)
            silent_for = time.monotonic() - handshaken
            # should close for the silence only once the client timeout has passed
            assert message["type"] == 7
            assert "Server timeout elapsed" in message["error"]
            assert 1.3 <= silent_for < 3.0, silent_for
            await client.close()

        run(scenario)


def test_missing_handshake_times_out() -> None:
    with running_simulator(handshake_timeout=0.3) as simulator:
        token = simulator.issue_token("demo")

        async def scenario() -> None:
            client = await RawHubClient.connect(simulator.user_hub_url, token, handshake=None)
            with pytest.raises(ConnectionError):
                await client.receive(3)
            await client.close()

        run(scenario)


# ------------------------------------------------------------------------ events, scoping


def test_market_order_events_in_order_and_wrapped(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.user_hub_url, simulator_token) as client:
            for method in ("SubscribeOrders", "SubscribeTrades", "SubscribePositions"):
                await client.call(method, DEMO_ACCOUNT_ID)
            await client.call("SubscribeAccounts")
            order_id = await place_market_async(simulator, simulator_token)
            events = await client.events(5)
            for event in events:
                assert set(event) == {"type", "target", "arguments"}  # no invocationId
                assert len(event["arguments"]) == 1
                assert set(event["arguments"][0]) == {"action", "data"}
            assert [e["target"] for e in events] == [
                EVENT_ORDER,
                EVENT_TRADE,
                EVENT_ORDER,
                EVENT_POSITION,
                EVENT_ACCOUNT,
            ]
            created, trade, filled, position, account = (e["arguments"][0] for e in events)
            assert created["action"] == 0 and created["data"]["status"] == OrderStatus.PENDING
            assert created["data"]["id"] == order_id
            assert trade["action"] == 0 and trade["data"]["orderId"] == order_id
            assert filled["action"] == 1 and filled["data"]["status"] == OrderStatus.FILLED
            assert filled["data"]["fillVolume"] == 1 and filled["data"]["filledPrice"] == 21000
            assert position["data"]["size"] == 1 and account["data"]["id"] == DEMO_ACCOUNT_ID

    run(scenario)


def test_events_reach_only_subscribers_of_that_account_and_kind(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        orders_1001 = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
        trades_1002 = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
        silent = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
        await orders_1001.call("SubscribeOrders", DEMO_ACCOUNT_ID)
        await trades_1002.call("SubscribeTrades", SECOND_ACCOUNT)

        await place_market_async(simulator, simulator_token, DEMO_ACCOUNT_ID)
        targets = [e["target"] for e in await orders_1001.events(2)]
        assert targets == [EVENT_ORDER, EVENT_ORDER]
        await expect_silence(trades_1002)

        await place_market_async(simulator, simulator_token, SECOND_ACCOUNT)
        (trade,) = await trades_1002.events(1)
        assert trade["target"] == EVENT_TRADE
        assert trade["arguments"][0]["data"]["accountId"] == SECOND_ACCOUNT
        await expect_silence(orders_1001)
        await expect_silence(silent)

        await orders_1001.call("UnsubscribeOrders", DEMO_ACCOUNT_ID)
        await place_market_async(simulator, simulator_token, DEMO_ACCOUNT_ID)
        await expect_silence(orders_1001)
        for client in (orders_1001, trades_1002, silent):
            await client.close()

    run(scenario)


def test_accounts_the_user_cannot_see_deliver_nothing(simulator: GatewaySimulator) -> None:
    simulator.add_user("other", "other-key")
    simulator.add_account(3001, "OTHER-3001", owner="other")
    demo_token = simulator.issue_token("demo")
    other_token = simulator.issue_token("other")

    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.user_hub_url, demo_token) as client:
            await client.call("SubscribeOrders", 3001)
            await client.call("SubscribeAccounts")
            await place_market_async(simulator, other_token, 3001)
            await expect_silence(client)

    run(scenario)


def test_subscriptions_do_not_survive_a_new_connection(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        first = await RawHubClient.connect(simulator.user_hub_url, simulator_token)
        await first.call("SubscribeOrders", DEMO_ACCOUNT_ID)
        await first.close()
        async with await RawHubClient.connect(simulator.user_hub_url, simulator_token) as second:
            await place_market_async(simulator, simulator_token)
            await expect_silence(second)

    run(scenario)
