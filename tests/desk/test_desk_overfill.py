"""The desk shows an overfilled order as such: the live update of the fill that takes it over
its size says so, so does the snapshot a page loads on (re)connect, and the page shows a badge
on the row."""

from __future__ import annotations

import itertools

import httpx
import pytest
from channels.db import database_sync_to_async

from fills.services import fill_apply
from orders.services import order_transition
from tests.factories import make_account, make_order
from tests.fills.wire import trade
from tests.helpers import DESK_ORDER, next_order, open_desk, session_cookie
from tests.serving import served_system

pytestmark = [pytest.mark.django_db(transaction=True)]

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


@pytest.mark.anyio
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


@pytest.mark.postgres
@pytest.mark.timeout(180)
def test_the_desk_page_shows_an_overfilled_badge_on_the_row(tmp_path, chromium_path: str) -> None:
    from django.db import connection
    from playwright.sync_api import expect, sync_playwright

    from orders.models import Order

    database = connection.settings_dict
    database_url = (
        f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    with served_system(tmp_path, database_url=database_url) as system:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        control = httpx.Client(base_url=system.simulator_url, timeout=30)
        placed = api.post(
            "/api/v1/orders/", json=DESK_ORDER, headers={"Idempotency-Key": "overfill-1"}
        ).json()
        control.post("/_sim/fill", json={"orderId": placed["broker_order_id"]})
        # The simulator never overfills; the broker's extra trade arrives as the hub delivers it.
        order = Order.objects.select_related("account").get(pk=placed["id"])
        fill_apply(
            account=order.account,
            trigger="broker-stream",
            trade=trade(
                order_id=order.broker_order_id,
                account_id=order.account.broker_account_id,
                size=1,
                price="20950.00",
            ),
        )
        # Playwright's sync API runs an event loop in this thread, where the ORM refuses to
        # run: the database work above comes first.
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=chromium_path, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 800})
                page.goto(f"{system.url}/admin/login/?next=/desk/")
                page.fill("#id_username", system.username)
                page.fill("#id_password", system.password)
                page.click("input[type=submit]")
                page.wait_for_url("**/desk/")
                row = page.locator(f'tr[data-order-id="{placed["id"]}"]')
                # should show the broker's numbers with an "overfilled" badge on the order's row
                expect(row.locator('[data-field="filled"]')).to_have_text("3 / 2")
                expect(row.locator('[data-field="overfilled"]')).to_have_text("overfilled")
            finally:
                browser.close()
