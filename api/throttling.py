from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rest_framework.throttling import UserRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports the throttles from settings: no cycle at runtime
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class PerTokenRateThrottle(UserRateThrottle):
    """The per-token rate (`API_THROTTLE_RATE`), counted with two counters per token.

    DRF's own throttle keeps the time of every request of the period in one cache entry, read
    and written back whole on each request: at a bot's 1,200 requests a minute that is 1,200
    floats through pickle (and over the network, with Redis) twice per request. Here each
    period has a counter that one atomic increment moves; the rate is estimated over a sliding
    period as this period's count plus the previous period's, weighted by how much of it the
    sliding period still covers (as nginx and Cloudflare do). A refused request is not counted.

    Throttling protects capacity, not correctness: when Redis is unreachable, requests pass
    unthrottled (and a warning is logged) rather than failing with a 500.
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return self._allow(request, view)
        except Exception:
            logger.warning("throttle cache unavailable; request not throttled", exc_info=True)
            return True

    def _allow(self, request: Request, view: APIView) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        limit, period = self.parse_rate(self.rate)
        if limit is None or period is None:
            return True
        self.now = self.timer()
        window, into = divmod(self.now, period)
        current, previous = f"{ident}:{int(window)}", f"{ident}:{int(window) - 1}"
        # The counter outlives its own period by one: the next period weighs it.
        count, before = self._count_and_read(current, previous, timeout=2 * period)
        weight = 1 - into / period
        if count + before * weight <= limit:
            return True
        self.cache.decr(current)  # a refused request does not use up the rate
        if before and count <= limit:
            # Until enough of the previous period has slid out for one more request.
            self._wait = max(1.0, (weight - (limit - count) / before) * period)
        else:
            self._wait = max(1.0, period - into)  # alone over the limit: the next period
        return False

    def _count_and_read(self, current: str, previous: str, *, timeout: int) -> tuple[int, int]:
        """This period's count with this request in it, and the previous period's; in one
        round trip where the cache is Redis (common.cache)."""
        count_and_read = getattr(self.cache, "count_and_read", None)
        if count_and_read is not None:
            counted: tuple[int, int] = count_and_read(current, previous, timeout=timeout)
            return counted
        count = 1 if self.cache.add(current, 1, timeout=timeout) else self.cache.incr(current)
        return count, self.cache.get(previous, 0)

    def wait(self) -> float | None:
        return getattr(self, "_wait", None)
