"""Simulated market data: a price process per contract, its tape, quotes, depth and bars.

- `walk`: the seeded random walk on the tick grid, live and backwards (generated history).
- `tape`: the prints of one contract and the bars built from them (History/retrieveBars).
- `feed`: `MarketData`, the thread-safe owner of all of it, which applies each new price to the
  broker (so resting orders fill) and publishes `MarketEvent`s for the market hub.
- The market hub's method and event names and its enums are `projectx.enums`' (shared with
  the client).
"""

from __future__ import annotations

from projectx.enums import DomType, TradeLogType
from projectx.simulator.market.feed import MarketData, MarketEvent, MarketListener
from projectx.simulator.market.tape import MAX_BARS, BarQuery
from projectx.simulator.market.walk import WalkSettings

__all__ = [
    "MAX_BARS",
    "BarQuery",
    "DomType",
    "MarketData",
    "MarketEvent",
    "MarketListener",
    "TradeLogType",
    "WalkSettings",
]
