"""Client-side rate limiting to the gateway's documented limits.

The gateway allows 200 requests per 60 s on all endpoints except History/retrieveBars, which has
its own 50 per 30 s (reference section 7); excess gets HTTP 429. The window type and scope are
undocumented, so we keep a sliding window, which is never looser than a fixed one, and one
limiter per user: every client that shares a user's token must share its limiter.

``RateLimiter`` is the interface the client depends on: one ``try_acquire`` that either takes a
slot or says how long until one frees, which maps directly onto a Redis sorted-set script should
several processes ever need one shared limiter. ``acquire_slot`` turns it into the two policies
the client uses: reads wait (bounded), mutations fail fast with ``RateLimitExceeded``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from projectx.errors import RateLimitExceeded

BARS_ENDPOINT = "History/retrieveBars"


@dataclass(frozen=True)
class RateLimit:
    max_requests: int
    window_seconds: float


GENERAL_RATE_LIMIT = RateLimit(max_requests=200, window_seconds=60.0)
BARS_RATE_LIMIT = RateLimit(max_requests=50, window_seconds=30.0)


class RateLimiter(Protocol):
    async def try_acquire(self, endpoint: str) -> float:
        """Take a slot for one request to ``endpoint`` and return 0.0, or take nothing and return
        the seconds until a slot should be free."""
        ...


class SlidingWindowRateLimiter:
    """An in-process sliding-window limiter with the gateway's two buckets.

    Thread-safe, so one instance can serve clients running on different event loops.
    """

    def __init__(
        self,
        general: RateLimit = GENERAL_RATE_LIMIT,
        bars: RateLimit = BARS_RATE_LIMIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {"general": general, "bars": bars}
        self._sent_at: dict[str, deque[float]] = {name: deque() for name in self._limits}
        self._clock = clock
        self._lock = threading.Lock()

    @staticmethod
    def bucket_for(endpoint: str) -> str:
        return "bars" if endpoint == BARS_ENDPOINT else "general"

    async def try_acquire(self, endpoint: str) -> float:
        bucket = self.bucket_for(endpoint)
        limit = self._limits[bucket]
        with self._lock:
            now = self._clock()
            sent_at = self._sent_at[bucket]
            while sent_at and sent_at[0] <= now - limit.window_seconds:
                sent_at.popleft()
            if len(sent_at) < limit.max_requests:
                sent_at.append(now)
                return 0.0
            return sent_at[0] + limit.window_seconds - now

    def in_window(self, endpoint: str) -> int:
        """How many requests to ``endpoint``'s bucket the current window holds (for health)."""
        bucket = self.bucket_for(endpoint)
        with self._lock:
            horizon = self._clock() - self._limits[bucket].window_seconds
            return sum(1 for sent in self._sent_at[bucket] if sent > horizon)


async def acquire_slot(
    limiter: RateLimiter,
    endpoint: str,
    *,
    max_wait: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Take a slot, waiting at most ``max_wait`` seconds in total; 0 means fail fast.

    Raises ``RateLimitExceeded`` (a not-sent error) rather than waiting past ``max_wait``: a
    mutation that silently queued behind the limit would reach the broker at a time the caller
    did not choose.
    """
    waited = 0.0
    while True:
        wait = await limiter.try_acquire(endpoint)
        if wait <= 0:
            return
        if waited + wait > max_wait:
            raise RateLimitExceeded(endpoint, retry_after=wait)
        await sleep(wait)
        waited += wait


_limiters_by_user: dict[str, SlidingWindowRateLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for_user(
    username: str,
    general: RateLimit = GENERAL_RATE_LIMIT,
    bars: RateLimit = BARS_RATE_LIMIT,
) -> SlidingWindowRateLimiter:
    """The process-wide limiter of ``username``, so every client of one user shares it.

    The limits are those of the first caller; later callers get the existing limiter.
    """
    with _limiters_lock:
        limiter = _limiters_by_user.get(username)
        if limiter is None:
            limiter = _limiters_by_user[username] = SlidingWindowRateLimiter(general, bars)
        return limiter
