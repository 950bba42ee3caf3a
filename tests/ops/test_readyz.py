"""GET /readyz: 200 while the database, Redis (when configured) and a listener that hears the
broker are all there; 503 naming what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from psycopg import sql

from fills.models import ListenerHeartbeat
from orders.models import Order
from tests.helpers import place_resting, wait_for

ROOT = Path(__file__).resolve().parents[2]


def heartbeat(
    *,
    heard_seconds_ago: float | None,
    connected: bool = True,
    applied_seconds_ago: float | None = 0,
    failing_tasks: list[str] | None = None,
) -> None:
    now = timezone.now()

    def ago(seconds: float | None):
        return None if seconds is None else now - timedelta(seconds=seconds)

    ListenerHeartbeat.objects.create(
        name=f"host:{ListenerHeartbeat.objects.count() + 1}",
        connected=connected,
        subscribed=connected,
        last_message_at=ago(heard_seconds_ago),
        applied_at=ago(applied_seconds_ago),
        failing_tasks=failing_tasks or [],
        started_at=now - timedelta(hours=1),
        updated_at=now,
    )


def ready() -> tuple[int, dict]:
    response = Client().get("/readyz")
    return response.status_code, response.json()


@pytest.mark.django_db
class TestListenerFreshness:
    def test_ready_with_the_database_and_a_listener_that_hears_the_broker(self) -> None:
        heartbeat(heard_seconds_ago=5)
        status, body = ready()
        # should answer 200 with each check, and no Redis check when Redis is not configured
        assert status == 200
        assert body["status"] == "ready"
        assert body["checks"]["database"] == {"ok": True, "detail": "ok"}
        assert body["checks"]["listener"]["ok"] is True
        assert "redis" not in body["checks"]

    def test_unready_when_the_freshest_listener_went_quiet(self) -> None:
        heartbeat(heard_seconds_ago=600)
        heartbeat(heard_seconds_ago=200)  # the freshest one counts
        status, body = ready()
        # should answer 503 and say how long the broker has been silent
        assert status == 503
        assert body["checks"]["listener"]["ok"] is False
        assert "heard from the broker 200 s ago (> 90 s)" in body["checks"]["listener"]["detail"]

    def test_unready_when_no_listener_has_ever_run(self) -> None:
        status, body = ready()
        # should treat "never ran" as not following the broker, and say what to start
        assert status == 503
        assert "start listen_gateway" in body["checks"]["listener"]["detail"]

    def test_unready_when_a_listener_runs_but_never_heard_the_broker(self) -> None:
        heartbeat(heard_seconds_ago=None, connected=False)
        status, body = ready()
        # should not count a listener that never connected
        assert status == 503
        assert body["checks"]["listener"]["detail"] == "no listener has heard from the broker yet"

    def test_unready_when_a_listener_hears_the_broker_but_applies_nothing(self) -> None:
        heartbeat(heard_seconds_ago=3, applied_seconds_ago=200, failing_tasks=["applier"])
        status, body = ready()
        # should answer 503: a listener that only hears the broker keeps nothing up to date
        assert status == 503
        detail = body["checks"]["listener"]["detail"]
        assert body["checks"]["listener"]["ok"] is False
        assert "host:1 hears the broker but is not applying events" in detail
        assert "last applied 200 s ago, > 90 s, failing tasks: applier" in detail

    def test_unready_when_a_listener_never_applied_anything(self) -> None:
        heartbeat(heard_seconds_ago=3, applied_seconds_ago=None)
        status, body = ready()
        # should not take a listener that has not applied (or idled) even once as applying
        assert status == 503
        assert "has not applied any yet" in body["checks"]["listener"]["detail"]

    def test_a_listener_that_stopped_hearing_the_broker_long_ago_is_not_held_against_it(
        self,
    ) -> None:
        heartbeat(heard_seconds_ago=2, applied_seconds_ago=1)
        heartbeat(heard_seconds_ago=600, applied_seconds_ago=600)  # an old leader, now standby
        status, body = ready()
        # should judge applying only for listeners that currently follow the broker
        assert status == 200, body
        assert body["checks"]["listener"]["detail"] == (
            "host:1 heard from the broker 2 s ago and is applying events"
        )


@pytest.mark.django_db
@pytest.mark.redis
def test_redis_is_checked_when_configured(settings, redis_url) -> None:
    heartbeat(heard_seconds_ago=1)
    settings.REDIS_URL = redis_url
    status, body = ready()
    # should check the Redis the cache and channel layer use
    assert status == 200
    assert body["checks"]["redis"]["ok"] is True

    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    status, body = ready()
    # should be unready while Redis does not answer
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False


def test_unready_when_the_database_is_unavailable() -> None:
    """In a process of its own, whose database cannot be opened."""
    probe = (
        "import django, json; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='localhost').get('/readyz');"
        "print(json.dumps([r.status_code, json.loads(r.content)]))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ordermgmt.settings",
        "DATABASE_URL": "sqlite:////nonexistent/directory/db.sqlite3",
        "DJANGO_SECRET_KEY": "tests",
        "LOG_LEVEL": "CRITICAL",
    }
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True
    )
    status, body = json.loads(result.stdout.strip().splitlines()[-1])
    # should answer 503, name the database, and not pretend to know about the listener
    assert status == 503
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["detail"]
    assert body["checks"]["listener"]["ok"] is False


@pytest.mark.django_db(transaction=True)
def test_ready_while_a_real_listener_follows_the_simulator(listener) -> None:
    listener()
    wait_for(
        lambda: ListenerHeartbeat.objects.filter(last_message_at__isnull=False).exists(),
        message="the listener's first heartbeat",
    )
    status, body = ready()
    # should see the running listener as connected and fresh
    assert status == 200, body
    assert body["checks"]["listener"]["ok"] is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(90)
def test_unready_while_a_real_listener_hears_the_broker_but_cannot_apply(
    bot, sim, listener, tune
) -> None:
    tune("partial_fill_tracking", listener_ready_within_seconds=1.5)
    sim.hub_settings.ping_interval = 0.2  # so hearing the broker stays within that limit
    listener()
    order = place_resting(bot, key="blocked", size=1)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == "open", message="order open")
    wait_for(lambda: ready()[0] == 200, message="ready before the block")

    # Another session holds the order's row lock: the listener's applier waits behind it
    # (each statement up to lock_timeout) while its hub still hears the broker.
    params = connection.get_connection_params()
    for option in ("cursor_factory", "context", "pool"):
        params.pop(option, None)
    with psycopg.connect(**params) as blocker:
        blocker.execute(
            sql.SQL("SELECT id FROM {} WHERE id = %s FOR UPDATE").format(
                sql.Identifier(Order._meta.db_table)
            ),
            (order.pk,),
        )
        sim.fill_order(order.broker_order_id)
        # should turn unready, saying the listener hears the broker but applies nothing
        wait_for(
            lambda: "not applying events" in ready()[1]["checks"]["listener"]["detail"],
            timeout=4,
            message="readyz saying the listener is not applying events",
        )
        status, body = ready()
        assert status == 503, body
        blocker.rollback()

    # should apply the fill once the lock is free, and be ready again
    wait_for(lambda: Order.objects.get(pk=order.pk).status == "filled", message="filled")
    wait_for(lambda: ready()[0] == 200, message="ready once applying again")
