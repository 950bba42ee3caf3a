"""Wire helpers shared by the simulator's REST and hub sides: JSON, timestamps, prices.

Prices and money are held as `Decimal` everywhere inside the simulator. Incoming JSON is parsed
with `parse_float=Decimal` so a price never passes through a binary float on the way in. On the
way out they become JSON *numbers*, as the real broker sends them: we convert through `float`,
whose shortest round-trip `repr` reproduces every price with fewer than 16 significant digits
exactly (all futures prices and account balances are far below that).
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

RECORD_SEPARATOR = "\x1e"


def parse_json(raw: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a `Decimal`; NaN and Infinity are refused."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    return json.loads(raw, parse_float=Decimal, parse_constant=refuse_constant)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def dump_json(value: Any) -> str:
    """Serialise compactly; `Decimal` becomes a JSON number, `datetime` an ISO-8601 string."""
    return json.dumps(value, default=_json_default, separators=(",", ":"), allow_nan=False)


def format_timestamp(moment: datetime) -> str:
    """ISO-8601 with microseconds and an explicit `+00:00` offset, like the broker's samples."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def parse_timestamp(text: str) -> datetime:
    """Parse an ISO-8601 timestamp (`Z` or an offset); a naive one is taken as UTC."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class MonotonicClock:
    """Wall-clock UTC timestamps that strictly increase, even across threads.

    Two broker events must never share a timestamp (clients order and de-duplicate by them), and
    the wall clock can stand still between two calls or step backwards. Each call returns at least
    one microsecond more than the previous one.
    """

    _STEP = timedelta(microseconds=1)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = datetime.min.replace(tzinfo=UTC)

    def now(self) -> datetime:
        with self._lock:
            candidate = datetime.now(UTC)
            if candidate <= self._last:
                candidate = self._last + self._STEP
            self._last = candidate
            return candidate
