"""The chart's candles: the broker's History/retrieveBars through the process's gateway client,
cached briefly.

Why a cache: every open desk asks for the same contract's candles when it opens and when its
chart changes contract, and the broker allows bars far fewer requests than anything else (50
per 30 s, `projectx/ratelimit.py`). A few seconds of staleness costs nothing: between two
fetches the page moves the newest candle itself with the live quotes. The cache is the
process's (or Redis, with REDIS_URL), so several desks share one broker call.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from accounts.gateway import get_gateway
from projectx.enums import AggregateBarUnit

CACHE_SECONDS = 5
# How long the desk waits for the broker before showing the chart without candles.
BROKER_BUDGET_SECONDS = 5.0
# The chart's choices: one-minute or five-minute candles, at most a trading day of them.
UNIT_MINUTES = (1, 5)
MAX_BARS = 500


def _decimal(value: Any) -> str:
    return format(value.normalize(), "f")


def chart_bars(
    *, contract_id: str, minutes: int, count: int, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The newest `count` candles of `minutes` each, oldest first, the one in progress last.
    Raises the gateway's errors (GatewayError) for the view to describe."""
    key = f"desk:bars:{contract_id}:{minutes}:{count}"
    cached = cache.get(key)
    if isinstance(cached, list):
        return cached
    now = now or timezone.now()
    bars = get_gateway().retrieve_bars(
        contract_id=contract_id,
        start=now - timedelta(minutes=minutes * count),
        end=now + timedelta(minutes=minutes),
        unit=AggregateBarUnit.MINUTE,
        unit_number=minutes,
        limit=count,
        include_partial_bar=True,
        budget=BROKER_BUDGET_SECONDS,
    )
    rows = [
        {
            "time": int(bar.timestamp.timestamp()),
            "open": _decimal(bar.open),
            "high": _decimal(bar.high),
            "low": _decimal(bar.low),
            "close": _decimal(bar.close),
            "volume": bar.volume,
        }
        for bar in sorted(bars, key=lambda bar: bar.timestamp)
    ]
    cache.set(key, rows, CACHE_SECONDS)
    return rows
