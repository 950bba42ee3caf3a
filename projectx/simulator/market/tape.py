"""A contract's trade tape, and the bars `History/retrieveBars` builds from it [4.3].

Prints are kept oldest first in parallel lists (epoch microseconds, whole ticks, size, aggressor)
so that days of generated history stay small and a time window is two `bisect`s away.

Bar rules (choices where the reference is silent):

- Time bars are aligned to the UTC epoch: a 5-minute bar starts at :00, :05, ...; a day bar at
  00:00 UTC; weeks start on Monday 00:00 UTC; months on the 1st. With `unitNumber` N the buckets
  are N units wide, counted from that alignment (N days from 1970-01-01, N months from January
  1970). Tick bars (unit 7) are groups of N consecutive prints counted from the first print on
  the tape, timestamped with their first print.
- A bar is returned when its start `t` lies in [startTime, endTime); it holds every print of its
  bucket. Buckets without prints give no bar.
- The bar still forming (its bucket ends after now; a tick bar with fewer than N prints) is left
  out unless `includePartialBar`.
- Newest first (as the doc example), and only the newest `limit` bars.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from projectx.enums import AggregateBarUnit
from projectx.simulator.market.walk import HistoryPrints
from projectx.simulator.wire import format_timestamp

MAX_BARS = 20_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SECOND_US = 1_000_000
_UNIT_US = {
    AggregateBarUnit.SECOND: _SECOND_US,
    AggregateBarUnit.MINUTE: 60 * _SECOND_US,
    AggregateBarUnit.HOUR: 3600 * _SECOND_US,
    AggregateBarUnit.DAY: 86400 * _SECOND_US,
    AggregateBarUnit.WEEK: 7 * 86400 * _SECOND_US,
}
_FIRST_MONDAY_US = 4 * 86400 * _SECOND_US  # 1970-01-05, the first Monday after the epoch
BAR_UNITS = frozenset(AggregateBarUnit) - {AggregateBarUnit.UNSPECIFIED}


def to_us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86400 + delta.seconds) * _SECOND_US + delta.microseconds


def from_us(epoch_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=epoch_us)


@dataclass(frozen=True)
class BarQuery:
    unit: AggregateBarUnit
    unit_number: int
    start: datetime
    end: datetime
    limit: int
    include_partial: bool


@dataclass
class _Bar:
    start_us: int
    end_us: int | None  # None for tick bars
    prints: int
    open: int
    high: int
    low: int
    close: int
    volume: int


class Tape:
    """One contract's prints, oldest first. Not thread-safe: the feed's lock guards it."""

    def __init__(self) -> None:
        self.times_us: list[int] = []
        self.ticks: list[int] = []
        self.volumes: list[int] = []
        self.buyer_aggressor: list[bool] = []
        self.history_loaded = False

    def __len__(self) -> int:
        return len(self.times_us)

    def append(self, epoch_us: int, ticks: int, volume: int, buyer_aggressor: bool) -> None:
        if self.times_us and epoch_us < self.times_us[-1]:
            epoch_us = self.times_us[-1]  # the tape never runs backwards
        self.times_us.append(epoch_us)
        self.ticks.append(ticks)
        self.volumes.append(volume)
        self.buyer_aggressor.append(buyer_aggressor)

    def prepend_history(self, history: HistoryPrints) -> None:
        """Put generated history in front of the live prints (all of it is older)."""
        self.times_us[:0] = history.times_us
        self.ticks[:0] = history.ticks
        self.volumes[:0] = history.volumes
        self.buyer_aggressor[:0] = history.buyer_aggressor
        self.history_loaded = True

    # ------------------------------------------------------------------ bars

    def bars(self, query: BarQuery, *, tick_size: Decimal, now: datetime) -> list[dict[str, Any]]:
        start_us, end_us, now_us = to_us(query.start), to_us(query.end), to_us(now)
        if end_us <= start_us:
            return []
        if query.unit == AggregateBarUnit.TICK:
            bars = self._tick_bars(query.unit_number, start_us, end_us)
        else:
            bars = self._time_bars(query.unit, query.unit_number, start_us, end_us)
        complete = [
            bar
            for bar in bars
            if query.include_partial or not _is_partial(bar, query.unit_number, now_us)
        ]
        newest_first = complete[::-1][: query.limit]
        return [_bar_wire(bar, tick_size) for bar in newest_first]

    def _time_bars(
        self, unit: AggregateBarUnit, unit_number: int, start_us: int, end_us: int
    ) -> list[_Bar]:
        first_bucket = _bucket_start(unit, unit_number, start_us)
        lo = bisect.bisect_left(self.times_us, first_bucket)
        bars: list[_Bar] = []
        current: _Bar | None = None
        for index in range(lo, len(self.times_us)):
            moment = self.times_us[index]
            if current is None or current.end_us is None or moment >= current.end_us:
                bucket = _bucket_start(unit, unit_number, moment)
                if bucket >= end_us:
                    break
                current = _new_bar(bucket, _bucket_end(unit, unit_number, bucket), self, index)
                bars.append(current)
            else:
                _add_print(current, self, index)
        return [bar for bar in bars if start_us <= bar.start_us < end_us]

    def _tick_bars(self, unit_number: int, start_us: int, end_us: int) -> list[_Bar]:
        lo = bisect.bisect_left(self.times_us, start_us)
        hi = bisect.bisect_left(self.times_us, end_us)
        # Groups are counted from the first print on the tape, so a window cuts no group apart:
        # start at the first group that begins inside the window.
        first = lo + (-lo) % unit_number
        bars: list[_Bar] = []
        for group_start in range(first, hi, unit_number):
            bar = _new_bar(self.times_us[group_start], None, self, group_start)
            for index in range(group_start + 1, min(group_start + unit_number, len(self))):
                _add_print(bar, self, index)
            bars.append(bar)
        return bars


def _new_bar(start_us: int, end_us: int | None, tape: Tape, index: int) -> _Bar:
    price = tape.ticks[index]
    return _Bar(start_us, end_us, 1, price, price, price, price, tape.volumes[index])


def _add_print(bar: _Bar, tape: Tape, index: int) -> None:
    price = tape.ticks[index]
    bar.prints += 1
    bar.high = max(bar.high, price)
    bar.low = min(bar.low, price)
    bar.close = price
    bar.volume += tape.volumes[index]


def _is_partial(bar: _Bar, unit_number: int, now_us: int) -> bool:
    if bar.end_us is None:
        return bar.prints < unit_number
    return bar.end_us > now_us


def _bar_wire(bar: _Bar, tick_size: Decimal) -> dict[str, Any]:
    return {
        "t": format_timestamp(from_us(bar.start_us)),
        "o": bar.open * tick_size,
        "h": bar.high * tick_size,
        "l": bar.low * tick_size,
        "c": bar.close * tick_size,
        "v": bar.volume,
    }


def _bucket_start(unit: AggregateBarUnit, unit_number: int, epoch_us: int) -> int:
    if unit == AggregateBarUnit.MONTH:
        moment = from_us(epoch_us)
        index = ((moment.year - 1970) * 12 + moment.month - 1) // unit_number * unit_number
        return to_us(datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=UTC))
    width = _UNIT_US[unit] * unit_number
    origin = _FIRST_MONDAY_US if unit == AggregateBarUnit.WEEK else 0
    return origin + (epoch_us - origin) // width * width


def _bucket_end(unit: AggregateBarUnit, unit_number: int, bucket_start_us: int) -> int:
    if unit == AggregateBarUnit.MONTH:
        moment = from_us(bucket_start_us)
        index = (moment.year - 1970) * 12 + moment.month - 1 + unit_number
        return to_us(datetime(1970 + index // 12, index % 12 + 1, 1, tzinfo=UTC))
    return bucket_start_us + _UNIT_US[unit] * unit_number
