"""A burst of changes committed together reaches the desk whole, over the Redis layer.

One commit can change hundreds of orders at once (a listener batch across many orders, a kill
switch cancelling every working order): each change is one desk message, all handed to the
web worker's event loop in the same instant."""

from __future__ import annotations

import logging

import pytest
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from django.db import transaction
from django.test import override_settings

from ordermgmt.settings import redis_channel_layer
from orders.services import order_transition
from tests.factories import make_account, make_order
from tests.helpers import open_desk, session_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio, pytest.mark.redis]

ORDERS = 300


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@database_sync_to_async
def account_with_orders():
    account = make_account()
    return account, [make_order(account=account) for _ in range(ORDERS)]


@database_sync_to_async
def submit_all_in_one_commit(orders) -> None:
    with transaction.atomic():
        for order in orders:
            order_transition(order_id=order.pk, to_state="submitting", trigger="api")


async def test_every_order_of_one_commit_reaches_the_desk(redis_url: str, caplog) -> None:
    layers = {"default": redis_channel_layer(redis_url, prefix="ordermgmt-test-burst")}
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        try:
            account, orders = await account_with_orders()
            desk, connected, _ = await open_desk(await session_cookie("burst", account))
            assert connected
            await desk.receive_json_from(timeout=5)  # the snapshot
            with caplog.at_level(logging.WARNING, logger="desk.broadcasts"):
                await submit_all_in_one_commit(orders)
                seen: dict[str, str] = {}
                while len(seen) < ORDERS:
                    try:
                        message = await desk.receive_json_from(timeout=5)
                    except TimeoutError:
                        break
                    if message["type"] == "order":
                        seen[message["row"]["id"]] = message["row"]["status"]
            # should show every order's new state: none of the burst's messages is lost
            assert [r.getMessage() for r in caplog.records if r.name == "desk.broadcasts"] == []
            assert len(seen) == ORDERS
            assert set(seen.values()) == {"submitting"}
            await desk.disconnect()
        finally:
            channel_layers.backends.clear()
