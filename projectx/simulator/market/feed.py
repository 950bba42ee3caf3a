"""`MarketData`: every contract's price process, quote, depth and tape, and the market events.

The walk is driven by the simulator's event loop (`run`, a task ticking every
`walk_interval` seconds while `walking`), by `step()` for tests that want it deterministic
and immediate, and by `set_price`/`jump` for scripted moves. Every new price goes through one
path, `_apply`:

1. Under the feed's own lock, draw the step (nothing else is locked while the dice roll).
2. Hand the price to `Broker.set_price`, which takes the broker's lock just to move the price and
   let resting limit and stop orders fill against it with the broker's own matching.
3. Still under the feed's lock, print the trade on the tape, move the quote and redraw the depth,
   and publish `MarketEvent`s (trade, quote, depth) to the listeners in that order.

Lock order: the feed's lock, then the broker's, never the other way round (nothing the broker
calls while holding its lock comes back into the feed).

Choices where the reference is silent or says "unconfirmed" [6.3]:

- The quote's best bid and ask are one tick apart with the last trade on the side its aggressor
  took (a buy prints at the ask). Orders still fill at the last price, as the broker's matching
  has one price per contract. The session (open, high, low, volume, change) starts when the
  contract first gets a price; `changePercent` is in percent (0.25 means 0.25 %); `symbolName`
  is the contract's name (e.g. `MNQZ6`); `timestamp` and `lastUpdated` are the last trade's time.
- Every depth event is a whole ladder: a `Reset` (6) entry, then `depth_levels` levels a side,
  `BestBid` (4)/`BestAsk` (3) for the inside and `Bid` (2)/`Ask` (1) beyond; `volume` and
  `currentVolume` both carry the size resting at the level. Sizes are drawn from the seed.
- A trade event's data is a list holding one trade; a depth event's data is a list of entries.
- A price set with `set_price` prints one contract, aggressor by direction (a buy when it
  does not fall). Fills of simulated accounts' orders do not print on the tape.
- History: `history_days` of one-minute history, four prints a minute, ending where the live tape
  starts, is generated the first time bars are asked for (deterministic for the seed and the
  contract's first price). It runs round the clock: no sessions, weekends or holidays.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Literal

from projectx.enums import DomType, TradeLogType
from projectx.simulator.broker import Broker, BrokerError
from projectx.simulator.market.tape import BarQuery, Tape, from_us, to_us
from projectx.simulator.market.walk import (
    Step,
    WalkSettings,
    generate_history,
    next_step,
    walk_random,
)
from projectx.simulator.wire import MonotonicClock, format_timestamp

log = logging.getLogger(__name__)

MarketEventKind = Literal["quote", "trade", "depth"]
DEFAULT_WALK_INTERVAL = 0.25
DEFAULT_HISTORY_DAYS = 7.0
DEFAULT_DEPTH_LEVELS = 5
_PERCENT_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class MarketEvent:
    """One market-hub event: `(contractId, data)` for `GatewayQuote/Trade/Depth`."""

    kind: MarketEventKind
    contract_id: str
    data: Any


MarketListener = Callable[[MarketEvent], None]


@dataclass
class _ContractMarket:
    contract_id: str
    symbol_id: str
    name: str
    tick_size: Decimal
    first_ticks: int
    started_us: int
    settings: WalkSettings
    live: random.Random
    depth: random.Random
    tape: Tape = field(default_factory=Tape)
    last_ticks: int = 0
    buyer_aggressor: bool = True
    high_ticks: int = 0
    low_ticks: int = 0
    session_volume: int = 0
    last_trade_at: datetime | None = None
    ladder: tuple[list[int], list[int]] = field(default_factory=lambda: ([], []))

    def price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size


class MarketData:
    """All contracts' market data. Thread-safe; events go to listeners under the feed's lock."""

    def __init__(
        self,
        broker: Broker,
        *,
        seed: int = 0,
        history_days: float = DEFAULT_HISTORY_DAYS,
        walk_interval: float = DEFAULT_WALK_INTERVAL,
        depth_levels: int = DEFAULT_DEPTH_LEVELS,
        walking: bool = False,
    ) -> None:
        self._broker = broker
        self._clock: MonotonicClock = broker.clock
        self._lock = threading.RLock()
        self._contracts: dict[str, _ContractMarket] = {}
        self._listeners: list[MarketListener] = []
        self._default_settings = WalkSettings()
        self.seed = seed
        self.history_days = history_days
        self.walk_interval = walk_interval
        self.depth_levels = depth_levels
        self.walking = walking

    # ------------------------------------------------------------- listeners

    def add_listener(self, listener: MarketListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    # ------------------------------------------------------------- controls

    def start_walk(self, interval: float | None = None) -> None:
        """Let the loop's task move every unpaused contract each `interval` seconds."""
        if interval is not None:
            if interval <= 0:
                raise ValueError("the walk interval must be positive")
            self.walk_interval = interval
        self.walking = True

    def stop_walk(self) -> None:
        self.walking = False

    def configure(self, contract_id: str | None = None, **changes: Any) -> None:
        """Change walk settings (`volatility`, `jump_probability`, `jump_ticks`,
        `max_trade_size`, `paused`) of one contract, or of all and of those to come."""
        with self._lock:
            if contract_id is None:
                self._default_settings = self._default_settings.changed(**changes)
                for market in self._contracts.values():
                    market.settings = market.settings.changed(**changes)
                return
            market = self._require(contract_id)
            market.settings = market.settings.changed(**changes)

    def pause(self, contract_id: str | None = None) -> None:
        self.configure(contract_id, paused=True)

    def resume(self, contract_id: str | None = None) -> None:
        self.configure(contract_id, paused=False)

    def settings(self, contract_id: str) -> WalkSettings:
        with self._lock:
            return self._require(contract_id).settings

    def set_price(self, contract_id: str, price: Decimal) -> None:
        """A scripted trade at `price` (one contract): the broker's price moves and orders fill."""
        with self._lock:
            market = self._contracts.get(contract_id) or self._create(contract_id, price)
            ticks = _exact_ticks(price, market.tick_size, contract_id)
            buyer = ticks >= market.last_ticks
            self._apply(market, Step(ticks=ticks, volume=1, buyer_aggressor=buyer))

    def jump(self, contract_id: str, ticks: int) -> Decimal:
        """Move the price by `ticks` at once (a gap), printing one trade; returns the price."""
        with self._lock:
            market = self._require(contract_id)
            target = max(1, market.last_ticks + ticks)
            step = Step(ticks=target, volume=1, buyer_aggressor=ticks >= 0)
            self._apply(market, step)
            return market.price(target)

    def step(self, contract_id: str | None = None, steps: int = 1) -> dict[str, Decimal]:
        """Advance the walk `steps` times now (every unpaused contract, or just `contract_id`
        even when paused); returns the new prices. What the loop's task does, on demand."""
        if steps < 0:
            raise ValueError("steps must be >= 0")
        with self._lock:
            self._adopt_broker_prices()
            if contract_id is not None:
                chosen = [self._require(contract_id)]
            else:
                chosen = [m for _, m in sorted(self._contracts.items()) if not m.settings.paused]
            for _ in range(steps):
                for market in chosen:
                    self._apply(market, next_step(market.live, market.last_ticks, market.settings))
            return {market.contract_id: market.price(market.last_ticks) for market in chosen}

    async def run(self) -> None:
        """The loop's task: one step of every unpaused contract per `walk_interval` while
        `walking`. A step that fails (a contract removed under it) is skipped, not fatal."""
        while True:
            await asyncio.sleep(self.walk_interval)
            if not self.walking:
                continue
            try:
                self.step()
            except (BrokerError, ValueError) as error:
                log.warning("price walk step skipped: %s", error)

    # --------------------------------------------------------------- reading

    def contract_ids(self) -> list[str]:
        with self._lock:
            self._adopt_broker_prices()
            return sorted(self._contracts)

    def quote(self, contract_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._adopt_broker_prices()
            market = self._contracts.get(contract_id)
            return None if market is None else self._quote_wire(market)

    def depth(self, contract_id: str) -> list[dict[str, Any]] | None:
        with self._lock:
            self._adopt_broker_prices()
            market = self._contracts.get(contract_id)
            return None if market is None else self._depth_wire(market)

    def tape_length(self, contract_id: str) -> int:
        with self._lock:
            market = self._contracts.get(contract_id)
            return 0 if market is None else len(market.tape)

    def recent_trades(self, contract_id: str, count: int = 50) -> list[dict[str, Any]]:
        """The newest `count` prints of the tape, oldest first, in GatewayTrade form."""
        with self._lock:
            market = self._contracts.get(contract_id)
            if market is None:
                return []
            first = max(0, len(market.tape) - count)
            return [self._trade_wire(market, i) for i in range(first, len(market.tape))]

    def bars(self, contract_id: str, query: BarQuery) -> list[dict[str, Any]] | None:
        """History/retrieveBars for one contract; None when it has no market (no price)."""
        with self._lock:
            self._adopt_broker_prices()
            market = self._contracts.get(contract_id)
            if market is None:
                return None
            self._load_history(market)
            return market.tape.bars(query, tick_size=market.tick_size, now=self._clock.now())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            self._adopt_broker_prices()
            return {
                "walking": self.walking,
                "walkInterval": self.walk_interval,
                "seed": self.seed,
                "contracts": {
                    contract_id: {
                        "price": market.price(market.last_ticks),
                        "paused": market.settings.paused,
                        "volatility": market.settings.volatility,
                        "jumpProbability": market.settings.jump_probability,
                        "jumpTicks": market.settings.jump_ticks,
                        "tapeLength": len(market.tape),
                    }
                    for contract_id, market in sorted(self._contracts.items())
                },
            }

    # ------------------------------------------------------------ internals

    def _apply(self, market: _ContractMarket, step: Step) -> None:
        """Steps 2 and 3 of the module docstring; the caller holds the feed's lock."""
        self._broker.set_price(market.contract_id, market.price(step.ticks))
        traded_at = self._clock.now()
        market.tape.append(to_us(traded_at), step.ticks, step.volume, step.buyer_aggressor)
        market.last_ticks = step.ticks
        market.buyer_aggressor = step.buyer_aggressor
        market.high_ticks = max(market.high_ticks, step.ticks)
        market.low_ticks = min(market.low_ticks, step.ticks)
        market.session_volume += step.volume
        market.last_trade_at = traded_at
        market.ladder = self._draw_ladder(market)
        self._emit("trade", market, [self._trade_wire(market, len(market.tape) - 1)])
        self._emit("quote", market, self._quote_wire(market))
        self._emit("depth", market, self._depth_wire(market))

    def _emit(self, kind: MarketEventKind, market: _ContractMarket, data: Any) -> None:
        event = MarketEvent(kind=kind, contract_id=market.contract_id, data=data)
        for listener in list(self._listeners):
            listener(event)

    def _adopt_broker_prices(self) -> None:
        """Contracts priced straight on the broker join the feed; a price set on the broker
        behind the feed's back becomes the walk's new starting point."""
        for contract in self._broker.available_contracts():
            price = self._broker.price(contract["id"])
            if price is None:
                continue
            market = self._contracts.get(contract["id"])
            if market is None:
                self._create(contract["id"], price)
            else:
                market.last_ticks = _exact_ticks(price, market.tick_size, market.contract_id)

    def _create(self, contract_id: str, price: Decimal) -> _ContractMarket:
        contract = self._broker.contract(contract_id)
        if contract is None:
            raise BrokerError(f"no contract {contract_id}")
        tick_size = Decimal(contract["tickSize"])
        ticks = _exact_ticks(price, tick_size, contract_id)
        now = self._clock.now()
        market = _ContractMarket(
            contract_id=contract_id,
            symbol_id=contract["symbolId"],
            name=contract["name"],
            tick_size=tick_size,
            first_ticks=ticks,
            started_us=to_us(now),
            settings=self._default_settings,
            live=walk_random(self.seed, contract_id, "live"),
            depth=walk_random(self.seed, contract_id, "depth"),
            last_ticks=ticks,
            high_ticks=ticks,
            low_ticks=ticks,
        )
        market.ladder = self._draw_ladder(market)
        self._contracts[contract_id] = market
        return market

    def _load_history(self, market: _ContractMarket) -> None:
        if market.tape.history_loaded:
            return
        minutes = round(self.history_days * 24 * 60)
        history = generate_history(
            walk_random(self.seed, market.contract_id, "history"),
            end_ticks=market.first_ticks,
            end_us=market.started_us,
            minutes=minutes,
            settings=market.settings,
        )
        market.tape.prepend_history(history)

    def _require(self, contract_id: str) -> _ContractMarket:
        self._adopt_broker_prices()
        market = self._contracts.get(contract_id)
        if market is None:
            raise BrokerError(f"no market for {contract_id}: no such contract, or no price yet")
        return market

    def _draw_ladder(self, market: _ContractMarket) -> tuple[list[int], list[int]]:
        """Sizes resting at each level, bids then asks, best first."""
        levels = self.depth_levels
        bids = [market.depth.randint(1, 30) for _ in range(levels)]
        asks = [market.depth.randint(1, 30) for _ in range(levels)]
        return bids, asks

    # ----------------------------------------------------------- wire forms

    @staticmethod
    def _best_bid_ticks(market: _ContractMarket) -> int:
        return market.last_ticks - 1 if market.buyer_aggressor else market.last_ticks

    def _quote_wire(self, market: _ContractMarket) -> dict[str, Any]:
        bid = self._best_bid_ticks(market)
        change = market.price(market.last_ticks - market.first_ticks)
        opened = market.price(market.first_ticks)
        percent = (change / opened * 100).quantize(_PERCENT_QUANTUM, rounding=ROUND_HALF_EVEN)
        moment = market.last_trade_at or self._clock.now()
        return {
            "symbol": market.symbol_id,
            "symbolName": market.name,
            "lastPrice": market.price(market.last_ticks),
            "bestBid": market.price(bid),
            "bestAsk": market.price(bid + 1),
            "change": change,
            "changePercent": percent,
            "open": opened,
            "high": market.price(market.high_ticks),
            "low": market.price(market.low_ticks),
            "volume": market.session_volume,
            "lastUpdated": format_timestamp(moment),
            "timestamp": format_timestamp(moment),
        }

    def _depth_wire(self, market: _ContractMarket) -> list[dict[str, Any]]:
        moment = format_timestamp(market.last_trade_at or self._clock.now())
        bid = self._best_bid_ticks(market)
        bids, asks = market.ladder
        entries = [_depth_entry(moment, DomType.RESET, Decimal(0), 0)]
        for level, size in enumerate(bids):
            if bid - level < 1:
                break
            kind = DomType.BEST_BID if level == 0 else DomType.BID
            entries.append(_depth_entry(moment, kind, market.price(bid - level), size))
        for level, size in enumerate(asks):
            kind = DomType.BEST_ASK if level == 0 else DomType.ASK
            entries.append(_depth_entry(moment, kind, market.price(bid + 1 + level), size))
        return entries

    def _trade_wire(self, market: _ContractMarket, index: int) -> dict[str, Any]:
        tape = market.tape
        side = TradeLogType.BUY if tape.buyer_aggressor[index] else TradeLogType.SELL
        return {
            "symbolId": market.symbol_id,
            "price": market.price(tape.ticks[index]),
            "timestamp": format_timestamp(from_us(tape.times_us[index])),
            "type": int(side),
            "volume": tape.volumes[index],
        }


def _depth_entry(moment: str, kind: DomType, price: Decimal, size: int) -> dict[str, Any]:
    return {
        "timestamp": moment,
        "type": int(kind),
        "price": price,
        "volume": size,
        "currentVolume": size,
    }


def _exact_ticks(price: Decimal, tick_size: Decimal, contract_id: str) -> int:
    """`price` in whole ticks; a price off the grid or not positive is refused."""
    ticks = Decimal(price) / tick_size
    if ticks <= 0:
        raise BrokerError("a price must be positive")
    if ticks != ticks.to_integral_value():
        raise BrokerError(f"{price} is off the {tick_size} tick of {contract_id}")
    return int(ticks)
