"""The desk's in-process channel layer (desk/layers.py, what `manage.py serve` runs on without
Redis) and the hand-over of a commit's messages to the sockets' event loop
(desk/broadcasts.py): the same frames, in the same order, as through Channels' own layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import transaction
from django.test import override_settings

from orders.models import Order
from orders.services import order_transition
from tests.factories import make_account, make_order
from tests.helpers import next_order, open_desk, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["channels.layers.InMemoryChannelLayer", "desk.layers.DeskChannelLayer"])
def layer(request: pytest.FixtureRequest) -> Iterator[str]:
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": request.param}}):
        channel_layers.backends.clear()
        try:
            yield request.param
        finally:
            channel_layers.backends.clear()


@database_sync_to_async
def accounts_and_orders():
    mine, theirs = make_account(), make_account()
    return mine, make_order(account=mine), make_order(account=mine), make_order(account=theirs)


@database_sync_to_async
def in_one_commit(*moves: tuple[Order, str]) -> None:
    with transaction.atomic():
        for order, to_state in moves:
            order_transition(order_id=order.pk, to_state=to_state, trigger="broker-stream")


async def test_a_commits_changes_reach_every_session_in_commit_order(layer: str) -> None:
    mine, first, second, theirs = await accounts_and_orders()
    cookie = await session_cookie("trader", mine)
    sessions = [(await open_desk(cookie))[0] for _ in range(3)]
    for session in sessions:
        await session.receive_json_from()  # hello
    await in_one_commit(
        (first, "submitting"), (theirs, "submitting"), (second, "submitting"), (first, "open")
    )
    await in_one_commit((second, "open"))
    expected = [
        (str(first.pk), "submitting"),
        (str(second.pk), "submitting"),
        (str(first.pk), "open"),
        (str(second.pk), "open"),
    ]
    for session in sessions:
        seen = [(r["id"], r["status"]) for r in [await next_order(session) for _ in expected]]
        # should deliver this account's changes, each once, in the order they were committed
        assert seen == expected
        # and nothing of the other account's order
        assert await session.receive_nothing(timeout=0.3)
    for session in sessions:
        await session.disconnect()


async def test_a_closed_session_leaves_the_group_and_the_others_still_hear(layer: str) -> None:
    mine, order, _, _ = await accounts_and_orders()
    cookie = await session_cookie("trader", mine)
    (staying, _, _), (leaving, _, _) = await open_desk(cookie), await open_desk(cookie)
    for session in (staying, leaving):
        await session.receive_json_from()
    await leaving.disconnect()
    await in_one_commit((order, "submitting"))
    row = await next_order(staying)
    # should go on telling the open session after another one closed
    assert (row["id"], row["status"]) == (str(order.pk), "submitting")
    layer_in_use = channel_layers["default"]
    # and should have taken the closed one out of the account's group
    assert sum(len(members) for members in layer_in_use.groups.values()) == 1
    await staying.disconnect()
