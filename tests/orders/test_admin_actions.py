"""Admin actions call the services, with the version check, and record who acted."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Position
from orders.models import Order
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, place

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def staff(accounts) -> Client:
    User.objects.create_superuser("desk-lead", "lead@example.com", "pw")
    client = Client()
    client.login(username="desk-lead", password="pw")
    return client


def act(client: Client, path: str, action: str, ids: list) -> str:
    response = client.post(
        path, {"action": action, "_selected_action": [str(i) for i in ids]}, follow=True
    )
    return response.content.decode()


def test_cancel_action_cancels_at_the_broker_and_names_the_person(bot, sim, staff) -> None:
    order_id = place(bot, key="admin-cancel").json()["id"]
    act(staff, "/admin/orders/order/", "cancel_orders", [order_id])
    order = Order.objects.get(pk=order_id)
    # should cancel through the same service as the API and record who did it
    assert order.status == "cancelled"
    requested = order.transitions.get(to_state="pending_cancel")
    assert (requested.actor, requested.trigger) == ("desk-lead", "admin")


def test_verify_action_resolves_an_unknown_order(bot, sim, staff) -> None:
    from accounts.services import contract_resolve

    contract_resolve(contract_id=MNQ)
    sim.faults.lose_response(path="Order/place", count=1)
    order_id = place(bot, key="admin-verify").json()["id"]
    page = act(staff, "/admin/orders/order/", "verify_orders", [order_id])
    # should report the outcome and move the order to the broker's state
    assert "found" in page
    order = Order.objects.get(pk=order_id)
    assert order.status == "open"
    assert order.transitions.latest("version").actor == "desk-lead"


def test_close_position_action_flattens_the_position(bot, sim, staff) -> None:
    market = {
        "account": DEMO_ACCOUNT,
        "contract_id": MNQ,
        "side": "sell",
        "type": "market",
        "size": 2,
    }
    place(bot, market, key="admin-short")
    place(bot, {**LIMIT_BUY, "side": "sell", "limit_price": "22000.00"}, key="admin-working")
    position = Position.objects.create(
        account_id=bot.user.trading_accounts.get().pk, contract_id=MNQ, type="short", size=2
    )
    page = act(staff, "/admin/accounts/position/", "close_positions", [position.pk])
    # should cancel the working order, close the short, and say so
    assert "done" in page
    assert sim.broker.positions(DEMO_ACCOUNT) == [] or all(
        p["size"] == 0 for p in sim.broker.positions(DEMO_ACCOUNT)
    )
    assert set(Order.objects.filter(type="limit").values_list("status", flat=True)) == {"cancelled"}
