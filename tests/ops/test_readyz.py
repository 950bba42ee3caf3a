"""GET /readyz: 200 while the database, Redis (when configured) and a listener that hears the
broker are all there; 503 naming what is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.utils import timezone

from fills.models import ListenerHeartbeat
from tests.fills.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]


def heartbeat(*, heard_seconds_ago: float | None, connected: bool = True) -> None:
    now = timezone.now()
    ListenerHeartbeat.objects.create(
        name=f"host:{ListenerHeartbeat.objects.count() + 1}",
        connected=connected,
        subscribed=connected,
        last_message_at=None
        if heard_seconds_ago is None
        else now - timedelta(seconds=heard_seconds_ago),
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
