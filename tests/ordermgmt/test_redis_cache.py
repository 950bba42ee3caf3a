"""The Redis cache shares one connection pool per process: under ASGI each request to a
synchronous view runs in a thread of its own, and a pool per thread meant a new TCP
connection to Redis for every request (its throttle counters and cache reads)."""

from __future__ import annotations

import threading

import pytest
import redis
from django.core.cache import caches
from django.test import override_settings

pytestmark = pytest.mark.redis


def test_requests_in_threads_of_their_own_share_one_redis_connection(redis_url) -> None:
    server = redis.Redis.from_url(redis_url)
    shared = {
        "default": {
            "BACKEND": "common.cache.SharedPoolRedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": "test-shared-pool",
        }
    }

    def request(n: int) -> None:  # what a throttled request does with the cache
        cache = caches["default"]
        cache.add(f"counter:{n}", 1, timeout=10)
        cache.get(f"counter:{n - 1}", 0)

    with override_settings(CACHES=shared):
        request(0)  # the pool's first connection
        opened_before = server.info("stats")["total_connections_received"]
        for n in range(1, 21):
            thread = threading.Thread(target=request, args=(n,))
            thread.start()
            thread.join()
        opened = server.info("stats")["total_connections_received"] - opened_before
    # should reuse the process's connection: none new (one at most, should Redis drop it)
    assert opened <= 1, f"{opened} new connections to Redis for 20 requests"
