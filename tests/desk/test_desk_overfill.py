"""The desk shows an overfilled order as such: the live update of the fill that takes it over
its size says so, and so does the snapshot a page loads on (re)connect."""

from __future__ import annotations

import itertools

import pytest
from channels.db import database_sync_to_async

from fills.services import fill_apply
from orders.services import order_transition
from tests.desk.test_consumer import next_order, open_desk, session_cookie
from tests.factories import make_account, make_order
from tests.fills.wire import trade

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.anyio]

_broker_ids = itertools.count(81_000)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@database_sync_to_async
def working_order():
    account = make_account()
    order = make_order(account=account, size=2)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    order_transition(
        order_id=order.pk,
        to_state="open",
        trigger="broker-rest",
        changes={"broker_order_id": next(_broker_ids)},
    )
    order.refresh_from_db()
    return account, order


@database_sync_to_async
def broker_fills(order, size: int) -> None:
    fill_apply(
        account=order.account,
        trigger="broker-stream",
        trade=trade(
            order_id=order.broker_order_id,
            account_id=order.account.broker_account_id,
            size=size,
            price="21000.25",
        ),
    )


async def test_the_desk_is_told_when_an_order_goes_over_its_size() -> None:
    account, order = await working_order()
    desk, connected, _ = await open_desk(await session_cookie("trader", account))
    assert connected
    await desk.receive_json_from()  # hello

    await broker_fills(order, 2)
    filled = await next_order(desk)
    # should show an order filled exactly as not overfilled
    assert (filled["status"], filled["filled_size"], filled["overfilled"]) == ("filled", 2, False)

    await broker_fills(order, 1)
    over = await next_order(desk)
    # should push the overfill to the open page as it happens
    assert (over["filled_size"], over["overfilled"]) == (3, True)

    await desk.send_json_to({"type": "snapshot"})
    snapshot = await desk.receive_json_from(timeout=5)
    # should show it overfilled to a page that loads (or reloads) the desk
    (row,) = snapshot["orders"]
    assert (row["id"], row["overfilled"]) == (str(order.pk), True)
    await desk.disconnect()
