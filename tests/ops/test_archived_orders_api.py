"""Archived orders through the bot API: hidden by default, readable with ?include_archived=1."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from orders.models import ArchivedOrder, Order
from tests.ops.builders import aged_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def archived_and_hot(accounts) -> tuple[Order, Order]:
    mine = accounts[0]
    archived = aged_order(mine, status="filled", fills=2)
    hot = aged_order(mine, status="cancelled", days_old=1)
    call_command("archive_orders", stdout=StringIO())
    assert ArchivedOrder.objects.filter(pk=archived.pk).exists()
    return archived, hot


def test_archived_orders_are_left_out_unless_asked_for(bot, archived_and_hot) -> None:
    archived, hot = archived_and_hot
    listed = [o["id"] for o in bot.get("/api/v1/orders/").json()["results"]]
    # should list only hot orders, as before archival existed
    assert listed == [str(hot.pk)]
    assert "archived" not in bot.get("/api/v1/orders/").json()["results"][0]
    # should not find an archived order without the parameter
    assert bot.get(f"/api/v1/orders/{archived.pk}/").status_code == 404


def test_include_archived_lists_hot_and_archived_orders_saying_which(bot, archived_and_hot) -> None:
    archived, hot = archived_and_hot
    body = bot.get("/api/v1/orders/?include_archived=1").json()
    flags = {o["id"]: o["archived"] for o in body["results"]}
    # should list both, newest first, each saying where it lives
    assert [o["id"] for o in body["results"]] == [str(hot.pk), str(archived.pk)]
    assert flags == {str(hot.pk): False, str(archived.pk): True}
    # should filter across both tables
    filled = bot.get("/api/v1/orders/?include_archived=true&status=filled").json()
    assert [o["id"] for o in filled["results"]] == [str(archived.pk)]


def test_an_archived_order_its_transitions_and_fills_are_readable(bot, archived_and_hot) -> None:
    archived, _ = archived_and_hot
    detail = bot.get(f"/api/v1/orders/{archived.pk}/?include_archived=1")
    # should answer with the order as it was archived, and its version as ETag
    assert detail.status_code == 200
    assert detail.json()["status"] == "filled"
    assert detail.json()["archived"] is True
    assert detail["ETag"] == f'"{archived.version}"'
    transitions = bot.get(f"/api/v1/orders/{archived.pk}/transitions/?include_archived=1")
    # should keep its whole history
    assert [t["to_state"] for t in transitions.json()] == ["submitting", "open", "filled"]
    fills = bot.get(f"/api/v1/orders/{archived.pk}/fills/?include_archived=1")
    assert len(fills.json()) == 2


def test_an_archived_order_cannot_be_changed(bot, archived_and_hot) -> None:
    archived, _ = archived_and_hot
    response = bot.post(
        f"/api/v1/orders/{archived.pk}/cancel/?include_archived=1",
        HTTP_IF_MATCH=f'"{archived.version}"',
    )
    # should not find it among the orders that can be acted on
    assert response.status_code == 404


def test_another_accounts_archived_order_stays_invisible(outsider, archived_and_hot) -> None:
    archived, _ = archived_and_hot
    # should hide it exactly like a hot order of another account
    assert outsider.get(f"/api/v1/orders/{archived.pk}/?include_archived=1").status_code == 404
    assert outsider.get("/api/v1/orders/?include_archived=1").json()["results"] == []


def test_a_bad_include_archived_value_is_400(bot, archived_and_hot) -> None:
    archived, _ = archived_and_hot
    response = bot.get(f"/api/v1/orders/{archived.pk}/?include_archived=maybe")
    # should name the parameter
    assert response.status_code == 400
    assert "include_archived" in response.json()["error"]["fields"]
