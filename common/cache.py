"""Django's Redis cache, with one connection pool per process instead of one per thread.

Django keeps a cache backend per thread (`django.core.cache.caches` is thread-local), and its
`RedisCache` builds its client, and with it a new connection pool, per backend. Under ASGI every
request to a synchronous view runs in a thread of its own, so every request opened a new TCP
connection to Redis for its throttle counters and its cache reads: about 3 ms of a placement's
auth step on this machine, against 0.3 ms without Redis. redis-py's clients and pools are
thread-safe, so every backend of the process with the same servers and options shares one.

Two more costs of Django's client are cut here: it wrapped the pool in a new `redis.Redis` for
every command (a tenth of the throttle's CPU), and a counter read with its neighbour took a
round trip per command (`count_and_read`, the throttle's four became one).
"""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_lock = threading.Lock()
_clients: dict[str, RedisCacheClient] = {}


class _OneClientPerPool(RedisCacheClient):
    """Django's client, keeping the `redis.Redis` it builds around each pool (it is
    thread-safe: every command checks a connection out of the pool)."""

    def __init__(self, servers: list[str], **options: Any) -> None:
        super().__init__(servers, **options)
        self._clients_by_pool: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        # Django's own helpers, not in its stubs.
        pool = self._get_connection_pool(write)  # type: ignore[attr-defined]
        client = self._clients_by_pool.get(id(pool))
        if client is None:
            client = self._clients_by_pool[id(pool)] = self._client(  # type: ignore[attr-defined]
                connection_pool=pool
            )
        return client


class SharedPoolRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._shared_key = repr((server, sorted(params.get("OPTIONS", {}).items())))
        self._options_given: dict[str, Any] = params.get("OPTIONS", {})

    @cached_property
    def _cache(self) -> Any:
        with _lock:
            client = _clients.get(self._shared_key)
            if client is None:
                servers = self._server_list()
                client = _clients[self._shared_key] = _OneClientPerPool(
                    servers, **self._options_given
                )
            return client

    def count_and_read(self, counted: str, read: str, *, timeout: int) -> tuple[int, int]:
        """Add one to the counter `counted` (created at 0 expiring in `timeout` s, unless it
        exists), and read the counter `read` (0 when missing): one round trip. SET NX and INCR
        rather than INCR and EXPIRE NX, which needs Redis 7."""
        counted_key = self.make_and_validate_key(counted)
        pipeline = self._cache.get_client(counted_key, write=True).pipeline(transaction=False)
        pipeline.set(counted_key, 0, ex=timeout, nx=True)
        pipeline.incr(counted_key)
        pipeline.get(self.make_and_validate_key(read))
        _, count, previous = pipeline.execute()
        return int(count), int(previous or 0)

    def _server_list(self) -> list[str]:
        return list(vars(self)["_servers"])  # set by RedisCache.__init__ (not in its stubs)
