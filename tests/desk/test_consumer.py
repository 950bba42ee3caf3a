"""The desk's websocket through the real ASGI application: session auth, account scoping,
the same events in the same order for every session, and convergence after a reconnect."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing.websocket import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import override_settings

from ordermgmt.asgi import application
from orders.services import order_transition, order_update
from tests.factories import make_account, make_order
from tests.helpers import next_order, open_desk, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@database_sync_to_async
def accounts_and_order():
    mine, theirs = make_account(), make_account()
    return mine, theirs, make_order(account=mine), make_order(account=theirs)


@database_sync_to_async
def move(order, to_state: str) -> None:
    order_transition(order_id=order.pk, to_state=to_state, trigger="broker-stream")


async def test_an_anonymous_socket_is_refused() -> None:
    _, connected, code = await open_desk(None)
    # should refuse without a session, with our "not signed in" close code
    assert not connected
    assert code == 4401


async def test_a_bot_never_receives_another_accounts_events() -> None:
    mine, _, my_order, their_order = await accounts_and_order()
    communicator, connected, _ = await open_desk(await session_cookie("bot-a", mine))
    assert connected
    hello = await communicator.receive_json_from()
    # should subscribe the session to its own account only
    assert hello["accounts"] == [mine.broker_account_id]
    await move(their_order, "submitting")
    await move(my_order, "submitting")
    row = await next_order(communicator)
    # should deliver its own account's change and nothing of the other account's
    assert row["id"] == str(my_order.pk)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


async def test_two_sessions_receive_the_same_events_in_the_same_order() -> None:
    mine, _, order, _ = await accounts_and_order()
    cookie = await session_cookie("trader", mine)
    first, _, _ = await open_desk(cookie)
    second, _, _ = await open_desk(cookie)
    for communicator in (first, second):
        await communicator.receive_json_from()  # hello
    for state in ["submitting", "open", "partially_filled", "filled"]:
        await move(order, state)
    seen_first = [(r["status"], r["version"]) for r in [await next_order(first) for _ in range(4)]]
    seen_second = [
        (r["status"], r["version"]) for r in [await next_order(second) for _ in range(4)]
    ]
    # should show both sessions the same changes in the same order
    assert (
        seen_first
        == seen_second
        == [("submitting", 2), ("open", 3), ("partially_filled", 4), ("filled", 5)]
    )
    await first.disconnect()
    await second.disconnect()


async def test_a_session_that_reconnects_converges_to_the_same_table() -> None:
    mine, _, order, _ = await accounts_and_order()
    cookie = await session_cookie("trader", mine)
    steady, _, _ = await open_desk(cookie)
    await steady.receive_json_from()
    table: dict[str, dict] = {}
    await move(order, "submitting")
    row = await next_order(steady)
    table[row["id"]] = row

    dropped, _, _ = await open_desk(cookie)
    await dropped.receive_json_from()
    await dropped.disconnect()  # the connection drops...
    await move(order, "open")  # ...and changes happen while it is away
    await database_sync_to_async(order_update)(
        order_id=order.pk, changes={"status_reason": "note"}, trigger="admin"
    )
    for _ in range(2):
        row = await next_order(steady)
        if row["version"] > table[row["id"]]["version"]:
            table[row["id"]] = row

    back, _, _ = await open_desk(cookie)  # reconnect: subscribe, then snapshot
    await back.receive_json_from()
    await back.send_json_to({"type": "snapshot"})
    snapshot = await back.receive_json_from(timeout=5)
    # should show the reconnected session exactly what the steady session shows
    assert {r["id"]: r for r in snapshot["orders"]} == table
    await steady.disconnect()
    await back.disconnect()


@pytest.mark.redis
async def test_events_cross_processes_through_the_redis_channel_layer(redis_url: str) -> None:
    layers = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [redis_url], "prefix": "ordermgmt-test"},
        }
    }
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        try:
            mine, _, order, _ = await accounts_and_order()
            communicator, connected, _ = await open_desk(await session_cookie("remote", mine))
            assert connected
            await communicator.receive_json_from()
            await move(order, "submitting")
            row = await next_order(communicator)
            # should carry the change through Redis to the session
            assert (row["id"], row["status"]) == (str(order.pk), "submitting")
            await communicator.disconnect()
        finally:
            channel_layers.backends.clear()


async def test_a_bot_can_watch_its_account_with_its_api_token() -> None:
    mine, _, my_order, their_order = await accounts_and_order()

    @database_sync_to_async
    def token_for_bot() -> str:
        from rest_framework.authtoken.models import Token

        user = User.objects.create_user("ws-bot")
        mine.members.add(user)
        return Token.objects.create(user=user).key

    key = await token_for_bot()
    communicator = WebsocketCommunicator(
        application,
        "/ws/desk/",
        headers=[(b"origin", b"http://localhost"), (b"authorization", f"Token {key}".encode())],
    )
    connected, _ = await communicator.connect(timeout=5)
    hello = await communicator.receive_json_from()
    # should accept the API token on the websocket and scope it to the bot's account
    assert connected
    assert hello["accounts"] == [mine.broker_account_id]
    await move(their_order, "submitting")
    await move(my_order, "submitting")
    assert (await next_order(communicator))["id"] == str(my_order.pk)
    await communicator.disconnect()

    bad = WebsocketCommunicator(
        application, "/ws/desk/?token=not-a-token", headers=[(b"origin", b"http://localhost")]
    )
    connected, code = await bad.connect(timeout=5)
    # should refuse an unknown token like an anonymous socket
    assert (connected, code) == (False, 4401)
