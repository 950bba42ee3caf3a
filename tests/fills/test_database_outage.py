"""The listener across a PostgreSQL outage: the simulator's hub over real sockets, the real
database made unavailable and brought back (issue 11, defect 4)."""

from __future__ import annotations

import logging

import pytest
from django.conf import settings
from django.test import Client
from prometheus_client import REGISTRY

from fills.models import Fill
from orders.models import Order
from tests.helpers import broker_trades, local_matches_broker, place_resting, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(180),
]


POOL_TIMEOUT = settings.DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("timeout", 10)


def ready() -> tuple[int, dict]:
    response = Client().get("/readyz")
    return response.status_code, response.json()


def task_restarts(task: str) -> float:
    return REGISTRY.get_sample_value("listener_task_restarts_total", {"task": task}) or 0.0


def test_fills_made_during_and_after_a_database_outage_all_arrive(
    bot, sim, listener, database_outage, caplog
) -> None:
    caplog.set_level(logging.ERROR, logger="fills.listener")
    running = listener()
    whole, partial, later = (place_resting(bot, key=f"db-outage-{n}", size=2) for n in range(3))
    wait_for(lambda: Order.objects.get(pk=later.pk).status == "open", message="orders open")
    restarts_before = task_restarts("applier")
    received_before = running.listener.hub.health().events_received

    database_outage.begin()
    # meanwhile at the broker: one order fills entirely, one partially
    sim.fill_order(whole.broker_order_id)
    sim.fill_order(partial.broker_order_id, size=1)
    wait_for(
        lambda: running.listener.hub.health().events_received >= received_before + 6,
        message="the listener receiving the fills' events",
    )
    status, body = ready()
    # should be unready while the database (so the listener) cannot apply anything
    assert status == 503, body
    assert body["checks"]["database"]["ok"] is False
    # the outage outlasts a first failure and a retry (a new connection refused). The retry
    # waits up to the pool's timeout for a connection, and it may queue behind the leadership
    # follower's own wait on the listener's one database thread: allow three such waits.
    wait_for(
        lambda: task_restarts("applier") >= restarts_before + 2,
        timeout=3 * POOL_TIMEOUT + 10,
        message="the applier failing, restarting and failing again",
    )

    database_outage.end()
    # and after the database is back: the partial one completes, another one fills
    sim.fill_order(partial.broker_order_id, size=1)
    sim.fill_order(later.broker_order_id, size=1)

    wait_for(
        lambda: local_matches_broker(sim),
        timeout=60,
        message="every fill stored after the outage",
        through_database_errors=True,
    )
    statuses = {o.pk: (o.status, o.filled_size) for o in Order.objects.all()}
    # should hold every fill made during and after the outage once, with the right states
    assert Fill.objects.count() == len(broker_trades(sim)) == 4
    assert (statuses[whole.pk], statuses[partial.pk], statuses[later.pk]) == (
        ("filled", 2),
        ("filled", 2),
        ("partially_filled", 1),
    )
    # should be ready again once the listener applies events
    wait_for(lambda: ready()[0] == 200, message="ready after recovery")
    # should have logged the failures with their tracebacks
    assert any(record.exc_info and "applier" in record.getMessage() for record in caplog.records), (
        caplog.text
    )
