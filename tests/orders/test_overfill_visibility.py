"""An overfill (the broker reports more filled than the order's size) is kept as reported and
flagged; the flag is visible wherever people and bots look: the API (field and list filter),
the metrics and the admin. (The desk: tests/desk/test_desk_overfill.py.)"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from fills.services import fill_apply
from orders.models import Order
from tests.fills.wire import trade
from tests.helpers import DEMO_ACCOUNT, place, read

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def broker_fills(order_id: str, *sizes: int, trade_id: int | None = None) -> None:
    """The broker's trades for the order as the hub delivers them, applied as the listener does."""
    order = Order.objects.select_related("account").get(pk=order_id)
    for size in sizes:
        fill_apply(
            account=order.account,
            trigger="broker-stream",
            trade=trade(
                order_id=order.broker_order_id,
                account_id=DEMO_ACCOUNT,
                size=size,
                price="20000.25",
                trade_id=trade_id,
            ),
        )


def overfilled_order(bot, key: str) -> str:
    """An order of 2 the broker fills 2 and then 1 more."""
    order_id = place(bot, key=key).json()["id"]
    broker_fills(order_id, 2, 1)
    return order_id


def test_the_order_says_it_is_overfilled(bot) -> None:
    over = overfilled_order(bot, "over")
    exact = place(bot, key="exact").json()["id"]
    broker_fills(exact, 2)

    body = bot.get(f"/api/v1/orders/{over}/").json()
    # should show the broker's quantities, and say the order is overfilled
    assert (body["status"], body["filled_size"], body["size"]) == ("filled", 3, 2)
    assert body["overfilled"] is True
    # should say an order filled exactly is not
    assert bot.get(f"/api/v1/orders/{exact}/").json()["overfilled"] is False
    # should say so in the list and when reading across the archive too
    listed = {row["id"]: row["overfilled"] for row in bot.get("/api/v1/orders/").json()["results"]}
    assert listed == {over: True, exact: False}
    assert bot.get(f"/api/v1/orders/{over}/?include_archived=1").json()["overfilled"] is True


def test_the_order_list_filters_on_overfilled(bot) -> None:
    over = overfilled_order(bot, "over")
    working = place(bot, key="working").json()["id"]

    def ids(query: str) -> set[str]:
        response = bot.get(f"/api/v1/orders/?{query}")
        assert response.status_code == 200, response.json()
        return {row["id"] for row in response.json()["results"]}

    # should list only the overfilled orders, or only the others, hot or across the archive
    assert ids("overfilled=true") == {over}
    assert ids("overfilled=false") == {working}
    assert ids("overfilled=true&include_archived=1") == {over}
    assert ids("") == {over, working}
    # should refuse a value that is not a boolean, naming the parameter
    response = bot.get("/api/v1/orders/?overfilled=maybe")
    assert response.status_code == 400
    assert "overfilled" in response.json()["error"]["fields"]


def test_an_overfill_is_counted_once_when_it_happens(bot) -> None:
    before = read("order_overfills_total")
    order_id = place(bot, key="counted").json()["id"]
    broker_fills(order_id, 2)
    # should not count an order filled exactly
    assert read("order_overfills_total") == before

    broker_fills(order_id, 1, trade_id=9_100_001)
    # should count the fill that takes the order past its size
    assert read("order_overfills_total") == before + 1

    broker_fills(order_id, 1)
    broker_fills(order_id, 1, trade_id=9_100_001)  # the broker repeats an event
    # should not count the same overfilled order again, for more fills or for a replay
    assert read("order_overfills_total") == before + 1


def test_the_admin_lists_and_filters_overfilled_orders(bot) -> None:
    over = overfilled_order(bot, "over")
    working = place(bot, key="working").json()["id"]
    User.objects.create_superuser("staff", "staff@example.com", "pw")
    staff = Client()
    staff.login(username="staff", password="pw")

    page = staff.get("/admin/orders/order/").content.decode()
    # should show the flag as a column and offer it as a filter
    assert "column-overfilled" in page
    assert "By overfilled" in page
    filtered = staff.get("/admin/orders/order/?overfilled__exact=1").content.decode()
    # should narrow the list to the overfilled orders, ticked as such
    assert over in filtered
    assert working not in filtered
    assert 'class="field-overfilled"><img src="/static/admin/img/icon-yes.svg"' in filtered
