"""Completion timeouts: no completion within partialFillTracking.timeoutSeconds after the last
fill runs the configured action. The timers are derived from stored times."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from fills.services import fills_backfill
from orders.fill_timeouts import order_handle_fill_timeout, orders_past_fill_timeout
from orders.models import Order
from tests.helpers import RESTING_BUY, place

pytestmark = pytest.mark.django_db(transaction=True)


def partially_filled(bot, sim, key: str) -> Order:
    body = place(bot, {**RESTING_BUY, "size": 3}, key=key).json()
    order = Order.objects.get(pk=body["id"])
    sim.fill_order(order.broker_order_id, size=1)
    fills_backfill(order_id=order.pk)  # as the listener would: the fill arrives
    return Order.objects.get(pk=order.pk)


def test_an_order_is_overdue_only_after_the_timeout_since_its_last_fill(bot, sim, settings) -> None:
    order = partially_filled(bot, sim, "overdue")
    timeout = settings.ORDER_MANAGEMENT.partial_fill_tracking.timeout_seconds
    last_fill = order.last_fill_at
    # should not be overdue before the timeout, and be overdue after it, from stored times only
    assert order not in orders_past_fill_timeout(now=last_fill + timedelta(seconds=timeout - 1))
    assert order in orders_past_fill_timeout(now=last_fill + timedelta(seconds=timeout + 1))


def test_alert_marks_the_order_handled_until_a_new_fill(bot, sim, caplog) -> None:
    order = partially_filled(bot, sim, "alert")
    later = timezone.now() + timedelta(hours=1)
    assert order_handle_fill_timeout(order=order, action="alert", now=later) == "alert"
    # should alert once, then stay quiet until something changes
    assert "ALERT" in caplog.text
    assert orders_past_fill_timeout(now=later) == []
    assert Order.objects.get(pk=order.pk).status == "partially_filled"


def test_verify_asks_the_broker_and_takes_its_state(bot, sim) -> None:
    order = partially_filled(bot, sim, "verify")
    sim.fill_order(order.broker_order_id)  # the rest filled; we missed it
    order_handle_fill_timeout(order=order, action="verify", now=timezone.now())
    # should end filled from the broker's view and the fetched fills
    order = Order.objects.get(pk=order.pk)
    assert (order.status, order.filled_size) == ("filled", 3)


def test_cancel_remaining_cancels_the_rest_and_keeps_the_fills(bot, sim) -> None:
    order = partially_filled(bot, sim, "cancel")
    order_handle_fill_timeout(order=order, action="cancel_remaining", now=timezone.now())
    order = Order.objects.get(pk=order.pk)
    # should cancel the remainder at the broker and keep the one fill
    assert (order.status, order.filled_size) == ("cancelled", 1)
    assert sim.broker.order(order.broker_order_id)["status"] == 3


def test_a_resting_limit_order_without_fills_is_not_overdue(bot, sim) -> None:
    body = place(bot, RESTING_BUY, key="resting").json()
    # should leave an order that waits for its price alone
    assert orders_past_fill_timeout(now=timezone.now() + timedelta(days=1)) == []
    assert Order.objects.get(pk=body["id"]).status == "open"
