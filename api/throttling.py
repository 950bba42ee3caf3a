from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from rest_framework.throttling import UserRateThrottle

if TYPE_CHECKING:  # rest_framework.views imports the throttles from settings: no cycle at runtime
    from rest_framework.request import Request
    from rest_framework.views import APIView

logger = logging.getLogger(__name__)


class PerTokenRateThrottle(UserRateThrottle):
    """DRF's per-user throttle, which keeps working when the cache behind it is down.

    Throttling protects capacity, not correctness: when Redis is unreachable, requests pass
    unthrottled (and a warning is logged) rather than failing with a 500.
    """

    def allow_request(self, request: Request, view: APIView) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("throttle cache unavailable; request not throttled", exc_info=True)
            return True
