"""Idempotency under load and under a cache outage, on the real PostgreSQL and Redis."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest
import redis
from django.db import connection
from django.test import override_settings

from orders.models import Order
from tests.helpers import LIMIT_BUY, broker_orders, place

# PostgreSQL here allows 100 connections; at most this many requests hold one at a time while
# all of them race for the same key.
MAX_IN_FLIGHT = 50


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_200_concurrent_requests_with_one_key_make_one_broker_order(bot, sim) -> None:
    requests = 200
    barrier = threading.Barrier(requests)
    in_flight = threading.BoundedSemaphore(MAX_IN_FLIGHT)
    responses: list[tuple[int, dict, str | None]] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            barrier.wait(timeout=30)
            with in_flight:
                response = place(bot, key="storm")
            with lock:
                responses.append(
                    (response.status_code, response.json(), response.get("Idempotent-Replayed"))
                )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)

    statuses = Counter(status for status, _, _ in responses)
    originals = [body for status, body, replayed in responses if status == 201 and not replayed]
    replays = [body for status, body, replayed in responses if replayed == "true"]
    # should answer every request
    assert len(responses) == requests
    # should place exactly one order at the broker and store exactly one
    assert len(broker_orders(sim)) == 1
    assert Order.objects.count() == 1
    assert len(originals) == 1
    # should answer every other request with 409 (in progress) or the replayed first response
    assert statuses[409] + len(replays) == requests - 1, statuses
    assert all(body == originals[0] for body in replays)


@pytest.fixture
def private_redis():
    """A Redis server of this test's own, so stopping it cannot disturb anything else."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield process, f"redis://127.0.0.1:{port}/0"
    process.kill()
    process.wait(timeout=10)


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
def test_placement_survives_redis_stopping_and_still_refuses_duplicates(
    bot, sim, private_redis
) -> None:
    process, url = private_redis
    redis_cache = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    with override_settings(CACHES=redis_cache):
        first = place(bot, key="before-outage")
        assert first.status_code == 201
        stored_keys = redis.Redis.from_url(url).keys("*idempotency*")
        # should have kept the response in Redis for fast replays
        assert len(stored_keys) == 1

        process.kill()
        process.wait(timeout=10)

        replay = place(bot, key="before-outage")
        # should still replay, from the database, with Redis gone
        assert replay["Idempotent-Replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
        # should still refuse the same key with another order
        assert place(bot, {**LIMIT_BUY, "size": 5}, key="before-outage").status_code == 422
        # should still place new orders, and still refuse their duplicates
        fresh = place(bot, {**LIMIT_BUY, "size": 1}, key="during-outage")
        assert fresh.status_code == 201
        again = place(bot, {**LIMIT_BUY, "size": 1}, key="during-outage")
        assert again["Idempotent-Replayed"] == "true"
        # should never have sent a duplicate to the broker
        assert len(broker_orders(sim)) == 2
