"""Archived orders in the admin: listed and viewable with their history, never editable."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from orders.models import ArchivedOrder
from tests.factories import make_account
from tests.ops.builders import aged_order

pytestmark = pytest.mark.django_db


@pytest.fixture
def archived() -> ArchivedOrder:
    order = aged_order(
        make_account(), status="filled", key="bot-9-key", key_expires_in=timedelta(days=-29)
    )
    call_command("archive_orders", stdout=StringIO())
    return ArchivedOrder.objects.get(pk=order.pk)


def test_the_archive_lists_and_finds_archived_orders(staff_client: Client, archived) -> None:
    page = staff_client.get("/admin/orders/archivedorder/").content.decode()
    # should list the archived order
    assert str(archived.pk) in page
    found = staff_client.get("/admin/orders/archivedorder/?q=bot-9-key").content.decode()
    # should find it by the key its bot sent
    assert str(archived.pk) in found


def test_an_archived_order_shows_its_history_read_only(staff_client: Client, archived) -> None:
    url = f"/admin/orders/archivedorder/{archived.pk}/change/"
    response = staff_client.get(url)
    page = response.content.decode()
    # should show the order with its transitions and fills, and no form field to edit
    assert response.status_code == 200
    assert "Archived order transitions" in page
    assert "Archived fills" in page
    assert 'name="status"' not in page
    # should refuse a forged edit and offer no deletion
    assert staff_client.post(url, {"status": "cancelled"}).status_code == 403
    assert staff_client.get(f"/admin/orders/archivedorder/{archived.pk}/delete/").status_code == 403
    archived.refresh_from_db()
    assert archived.status == "filled"
