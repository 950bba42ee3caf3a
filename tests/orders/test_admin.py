from __future__ import annotations

from django.test import Client

from orders.services import order_transition
from tests.factories import make_order


def test_the_order_list_shows_state_and_age(staff_client: Client) -> None:
    order = make_order()
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    page = staff_client.get("/admin/orders/order/?status=submitting").content.decode()
    # should list the order with its state, filterable by state
    assert str(order.pk) in page
    assert "Submitting" in page


def test_the_status_cannot_be_edited_by_hand(staff_client: Client) -> None:
    order = make_order()
    url = f"/admin/orders/order/{order.pk}/change/"
    page = staff_client.get(url).content.decode()
    # should show the state read-only, with the history inline
    assert 'name="status"' not in page
    staff_client.post(url, {"status": "filled"})
    order.refresh_from_db()
    # should ignore a forged post that tries to set it
    assert order.status == "created"


def test_search_finds_an_order_by_idempotency_key(staff_client: Client) -> None:
    order = make_order(idempotency_key="bot-7-key")
    page = staff_client.get("/admin/orders/order/?q=bot-7-key").content.decode()
    # should find the order by the key a bot sent
    assert str(order.pk) in page


def test_the_change_page_follows_the_order_live_and_links_to_the_desk(staff_client: Client) -> None:
    order = make_order()
    page = staff_client.get(f"/admin/orders/order/{order.pk}/change/").content.decode()
    # should show the live status box for this order, and a link to it on the desk
    assert f'data-order-id="{order.pk}"' in page
    assert "/ws/desk/" in page
    assert f"/desk/#order-{order.pk}" in page
