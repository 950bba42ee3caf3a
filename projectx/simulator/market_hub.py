"""The market hub (`/hubs/market`): quotes, trades and depth per contract [6.3].

The protocol (negotiate, handshake, framing, keep-alive, Close) is `signalr.SignalRHub`'s, the
same as the user hub's. Clients invoke `SubscribeContractQuotes(contractId)`,
`SubscribeContractTrades(contractId)`, `SubscribeContractMarketDepth(contractId)` and the
`Unsubscribe*` twins; events are `GatewayQuote`, `GatewayTrade` and `GatewayDepth` with two
arguments, `(contractId, data)`. The data's shapes are `market.feed`'s.

Choices where the reference says "unconfirmed":

- Subscribing sends the current quote (quotes) or the current ladder (depth) right after the
  Completion, so a client learns the market even while prices stand still; trades are not
  replayed. A contract that does not exist or has no price yet is accepted and delivers nothing,
  as the user hub does with an account the user cannot see.
- Quotes are coalesced per contract: at most `max_quotes_per_second` go out (to every
  subscriber alike); a quote that comes too soon waits, replaced by any newer one, and goes out
  when the gap has passed, so the last quote always arrives. Trades and depth are not coalesced.
  The snapshot sent on subscribe is outside that budget.
- Event faults (`Faults.drop_events(hub="market")`, ...) count market events only; stalls and
  connection drops/closes apply to both hubs unless told otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from projectx.enums import (
    EVENT_DEPTH,
    EVENT_MARKET_TRADE,
    EVENT_QUOTE,
    HUB_SUBSCRIBE_CONTRACT_MARKET_DEPTH,
    HUB_SUBSCRIBE_CONTRACT_QUOTES,
    HUB_SUBSCRIBE_CONTRACT_TRADES,
    HUB_UNSUBSCRIBE_CONTRACT_MARKET_DEPTH,
    HUB_UNSUBSCRIBE_CONTRACT_QUOTES,
    HUB_UNSUBSCRIBE_CONTRACT_TRADES,
)
from projectx.simulator.auth import TokenStore
from projectx.simulator.faults import Faults, HubName
from projectx.simulator.market import MarketData, MarketEvent
from projectx.simulator.signalr import (
    HubConnection,
    HubSettings,
    Invoked,
    SignalRHub,
    arity_error,
    binding_error,
    find_method,
    invocation_frame,
)

DEFAULT_MAX_QUOTES_PER_SECOND = 10.0

# Hub method -> (subscription kind, subscribe or unsubscribe)
_METHODS: dict[str, tuple[str, bool]] = {
    HUB_SUBSCRIBE_CONTRACT_QUOTES: ("quote", True),
    HUB_SUBSCRIBE_CONTRACT_TRADES: ("trade", True),
    HUB_SUBSCRIBE_CONTRACT_MARKET_DEPTH: ("depth", True),
    HUB_UNSUBSCRIBE_CONTRACT_QUOTES: ("quote", False),
    HUB_UNSUBSCRIBE_CONTRACT_TRADES: ("trade", False),
    HUB_UNSUBSCRIBE_CONTRACT_MARKET_DEPTH: ("depth", False),
}
_EVENT_NAMES = {"quote": EVENT_QUOTE, "trade": EVENT_MARKET_TRADE, "depth": EVENT_DEPTH}


class MarketHub(SignalRHub[MarketEvent]):
    """The feed's events, per contract, to the connections that subscribed to them."""

    name: HubName = "market"

    def __init__(
        self,
        market: MarketData,
        tokens: TokenStore,
        faults: Faults,
        settings: HubSettings,
        *,
        is_stopping: Callable[[], bool],
        max_quotes_per_second: float | None = DEFAULT_MAX_QUOTES_PER_SECOND,
    ) -> None:
        super().__init__(tokens, faults, settings, is_stopping=is_stopping)
        self.market = market
        self.max_quotes_per_second = max_quotes_per_second
        self._quote_sent_at: dict[str, float] = {}
        self._waiting_quotes: dict[str, MarketEvent] = {}

    def bind_to_running_loop(self) -> None:
        super().bind_to_running_loop()
        self._quote_sent_at = {}
        self._waiting_quotes = {}

    # ----------------------------------------------------------- invocations

    def _invoke(self, connection: HubConnection, target: str, arguments: list[Any]) -> Invoked:
        method = find_method(_METHODS, target)
        if method is None:
            return Invoked(f"Unknown hub method '{target}'")
        kind, subscribe = _METHODS[method]
        if len(arguments) != 1:
            return Invoked(arity_error(method, len(arguments), 1))
        contract_id = arguments[0]
        if not isinstance(contract_id, str):
            return Invoked(binding_error(method))
        key = (kind, contract_id)
        if not subscribe:
            connection.subscriptions.discard(key)
            return Invoked()
        connection.subscriptions.add(key)
        snapshot: Any = None
        if kind == "quote":
            snapshot = self.market.quote(contract_id)
        elif kind == "depth":
            snapshot = self.market.depth(contract_id)
        if snapshot is None:
            return Invoked()
        return Invoked(then_send=(invocation_frame(_EVENT_NAMES[kind], [contract_id, snapshot]),))

    # ---------------------------------------------------------------- events

    def publish(self, event: MarketEvent) -> None:
        """Fan out one feed event (on the loop thread), coalescing quotes first."""
        rate = self.max_quotes_per_second
        if event.kind != "quote" or not rate:
            super().publish(event)
            return
        contract_id = event.contract_id
        if contract_id in self._waiting_quotes:
            self._waiting_quotes[contract_id] = event  # the newer quote replaces the waiting one
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        gap = 1.0 / rate
        sent_at = self._quote_sent_at.get(contract_id)
        if sent_at is None or now - sent_at >= gap:
            self._quote_sent_at[contract_id] = now
            super().publish(event)
            return
        self._waiting_quotes[contract_id] = event
        loop.call_later(sent_at + gap - now, self._send_waiting_quote, contract_id)

    def _send_waiting_quote(self, contract_id: str) -> None:
        event = self._waiting_quotes.pop(contract_id, None)
        if event is None:
            return
        self._quote_sent_at[contract_id] = asyncio.get_running_loop().time()
        super().publish(event)

    def _wanted(self, event: MarketEvent) -> bool:
        key = (event.kind, event.contract_id)
        return any(key in connection.subscriptions for connection in self.live_connections())

    def _frame_for(self, connection: HubConnection, event: MarketEvent) -> str | None:
        if (event.kind, event.contract_id) not in connection.subscriptions:
            return None
        return invocation_frame(_EVENT_NAMES[event.kind], [event.contract_id, event.data])
