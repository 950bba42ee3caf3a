"""The price process: a seeded random walk on a contract's tick grid, live and backwards in time.

Everything is counted in whole ticks (an int), so a price is always on the grid; the feed turns
ticks into `Decimal` prices. Each contract draws from its own `random.Random`, seeded with the
simulator's seed and the contract id, so one contract's sequence does not depend on which other
contracts exist or walk. A step always makes the same number of draws, whatever the settings,
so turning jumps on or off does not shift the rest of the sequence.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from typing import Any

MINUTE_US = 60_000_000
_HISTORY_PRINT_OFFSETS_US = (0, 20_000_000, 40_000_000, 59_000_000)
"""A history minute is four prints: open, the first extreme, the other extreme, close."""


@dataclass(frozen=True)
class WalkSettings:
    """How one contract's price moves per step."""

    volatility: float = 1.0
    """Standard deviation of one step, in ticks."""
    jump_probability: float = 0.0
    """Chance per step of a jump of `jump_ticks` (up or down) on top of the normal move."""
    jump_ticks: int = 20
    max_trade_size: int = 5
    paused: bool = False
    """A paused contract keeps its price while the walk goes on for the others."""

    def changed(self, **changes: Any) -> WalkSettings:
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise ValueError(f"no walk setting {sorted(unknown)}")
        updated = replace(self, **changes)
        if updated.volatility < 0 or not 0 <= updated.jump_probability <= 1:
            raise ValueError("volatility must be >= 0 and jump_probability within 0..1")
        if updated.jump_ticks < 0 or updated.max_trade_size < 1:
            raise ValueError("jump_ticks must be >= 0 and max_trade_size >= 1")
        return updated


@dataclass(frozen=True)
class Step:
    ticks: int
    volume: int
    buyer_aggressor: bool


def walk_random(seed: int, contract_id: str, stream: str) -> random.Random:
    """The deterministic random stream `stream` ("live", "depth", "history") of a contract."""
    return random.Random(f"{seed}:{contract_id}:{stream}")


def next_step(rng: random.Random, last_ticks: int, settings: WalkSettings) -> Step:
    """One trade of the walk from `last_ticks`; never below one tick."""
    move = round(rng.gauss(0.0, 1.0) * settings.volatility)
    jump_draw, direction_draw, side_draw = rng.random(), rng.random(), rng.random()
    volume = rng.randint(1, settings.max_trade_size)
    if jump_draw < settings.jump_probability:
        move += settings.jump_ticks if direction_draw < 0.5 else -settings.jump_ticks
    ticks = max(1, last_ticks + move)
    buyer = ticks > last_ticks or (ticks == last_ticks and side_draw < 0.5)
    return Step(ticks=ticks, volume=volume, buyer_aggressor=buyer)


@dataclass
class HistoryPrints:
    """Prints oldest first, as parallel lists (times in epoch microseconds)."""

    times_us: list[int]
    ticks: list[int]
    volumes: list[int]
    buyer_aggressor: list[bool]


def generate_history(
    rng: random.Random, *, end_ticks: int, end_us: int, minutes: int, settings: WalkSettings
) -> HistoryPrints:
    """`minutes` of one-minute history ending at the minute boundary at or before `end_us`,
    whose last close is `end_ticks`, so the live tape continues where history stops.

    1. Walk backwards from the close: each minute's open is its close minus a move whose size is
       what sixty steps of the live walk would make (sqrt(60) x volatility).
    2. Each minute gets a high and a low beyond its open and close.
    3. Each minute becomes four prints (open, extremes, close) in time order.
    """
    sigma = max(settings.volatility, 0.0) * math.sqrt(60)
    last_minute_start = end_us - end_us % MINUTE_US - MINUTE_US
    times: list[int] = []
    ticks: list[int] = []
    volumes: list[int] = []
    close = end_ticks
    for index in range(minutes):
        minute_start = last_minute_start - index * MINUTE_US
        move = round(rng.gauss(0.0, 1.0) * sigma)
        open_ = close - move
        if open_ < 1:
            open_ = close + abs(move)
        high = max(open_, close) + abs(round(rng.gauss(0.0, 1.0) * sigma / 2))
        low = max(1, min(open_, close) - abs(round(rng.gauss(0.0, 1.0) * sigma / 2)))
        path = (open_, low, high, close) if close >= open_ else (open_, high, low, close)
        sizes = [rng.randint(1, 5 * settings.max_trade_size) for _ in path]
        # Written newest print first; reversed once at the end.
        prints = zip(_HISTORY_PRINT_OFFSETS_US, path, sizes, strict=True)
        for offset, price, size in reversed(list(prints)):
            times.append(minute_start + offset)
            ticks.append(price)
            volumes.append(size)
        close = open_
    for column in (times, ticks, volumes):
        column.reverse()
    # A print above (or at) the one before it was a buyer lifting the offer.
    buyers = [True] + [ticks[i] >= ticks[i - 1] for i in range(1, len(ticks))]
    return HistoryPrints(times, ticks, volumes, buyers)
