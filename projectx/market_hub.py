"""Market-hub client: the broker's quotes, trades and depth for the contracts we ask for.

The connection rules are the user hub's, and so is the code: ``MarketHubClient`` is a
``UserHubClient`` (``projectx.hub``) with other subscriptions and other events, so it inherits,
unchanged, the one-shot pysignalr connections, a fresh token and a fresh negotiation for every
connection (a refused token is not handed out again), the jittered backoff, the stale-feed
watchdog and ``force_reconnect()``. What differs:

1. Subscriptions are per contract and change while connected: ``subscribe_contract_quotes(id)``
   (and trades, depth, and the ``unsubscribe_*`` twins) records the wish and, when a connection
   is up, invokes it there at once and waits for the Completion. An unanswered invocation
   restarts the connection, like a failed subscription of the user hub; one the hub refuses
   (an error Completion: e.g. a contract it does not know) is dropped from the record and
   logged, so that one bad contract cannot fail every connection and reconnect for ever.
2. After every (re)connection all recorded subscriptions are invoked again and confirmed before
   ``on_connected`` runs: the hub forgets them with the connection and replays nothing.
3. Events carry two arguments, ``(contractId, data)`` [6.3]: callbacks get the contract id and
   the typed data (``Quote``; a list of ``MarketTrade``; a list of ``DepthEntry``; a trade or
   depth sent as one object instead of a list is read as a list of one). An unreadable event is
   logged, counted as dropped and skipped; a callback that raises is logged and the stream goes
   on.

Quiet markets are not stale: the server's keep-alive pings count as messages, so the watchdog
(``stale_after``) fires only when the connection itself has gone silent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

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
from projectx.hub import HubSubscribeError, TokenProvider, UserHubClient, _HubConnection
from projectx.models import DepthEntry, MarketTrade, Quote

logger = logging.getLogger(__name__)

Feed = Literal["quotes", "trades", "depth"]
T = TypeVar("T")
ContractCallback = Callable[[str, T], Awaitable[None]]

_SUBSCRIBE: dict[Feed, str] = {
    "quotes": HUB_SUBSCRIBE_CONTRACT_QUOTES,
    "trades": HUB_SUBSCRIBE_CONTRACT_TRADES,
    "depth": HUB_SUBSCRIBE_CONTRACT_MARKET_DEPTH,
}
_UNSUBSCRIBE: dict[Feed, str] = {
    "quotes": HUB_UNSUBSCRIBE_CONTRACT_QUOTES,
    "trades": HUB_UNSUBSCRIBE_CONTRACT_TRADES,
    "depth": HUB_UNSUBSCRIBE_CONTRACT_MARKET_DEPTH,
}


class MarketHubClient(UserHubClient):
    """Stay subscribed to the market hub for the contracts asked for, across drops, until
    ``stop()``. Construction, ``start``/``stop``, ``health()``, ``force_reconnect`` and
    ``wait_until_subscribed`` are ``UserHubClient``'s (see there); there are no accounts."""

    hub_name = "market hub"

    def __init__(
        self,
        url: str,
        token_provider: TokenProvider,
        *,
        on_quote: ContractCallback[Quote] | None = None,
        on_trade: ContractCallback[list[MarketTrade]] | None = None,
        on_depth: ContractCallback[list[DepthEntry]] | None = None,
        on_connected: Callable[[], Awaitable[None]] | None = None,
        on_disconnected: Callable[[str], Awaitable[None]] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(
            url,
            token_provider,
            (),
            on_connected=on_connected,
            on_disconnected=on_disconnected,
            **options,
        )
        # The base class registers one pysignalr handler per key of `_handlers`, built by
        # `_event_handler` below; its models and callbacks are not used here.
        self._handlers = {EVENT_QUOTE: (Quote, None), EVENT_MARKET_TRADE: (MarketTrade, None)}
        self._handlers[EVENT_DEPTH] = (DepthEntry, None)
        self._market_callbacks: dict[str, tuple[type[BaseModel], bool, Any]] = {
            EVENT_QUOTE: (Quote, False, on_quote),
            EVENT_MARKET_TRADE: (MarketTrade, True, on_trade),
            EVENT_DEPTH: (DepthEntry, True, on_depth),
        }
        self._wanted: dict[Feed, set[str]] = {"quotes": set(), "trades": set(), "depth": set()}
        self._connection: _HubConnection | None = None
        self._connection_number = 0  # which of `_connections` `_connection` is

    # -- Subscriptions ----------------------------------------------------------------------------

    def subscriptions(self, feed: Feed) -> frozenset[str]:
        """The contracts subscribed to (or to be, on the next connection) for ``feed``."""
        return frozenset(self._wanted[feed])

    async def subscribe_contract_quotes(self, contract_id: str) -> None:
        await self._change("quotes", contract_id, subscribe=True)

    async def subscribe_contract_trades(self, contract_id: str) -> None:
        await self._change("trades", contract_id, subscribe=True)

    async def subscribe_contract_market_depth(self, contract_id: str) -> None:
        await self._change("depth", contract_id, subscribe=True)

    async def unsubscribe_contract_quotes(self, contract_id: str) -> None:
        await self._change("quotes", contract_id, subscribe=False)

    async def unsubscribe_contract_trades(self, contract_id: str) -> None:
        await self._change("trades", contract_id, subscribe=False)

    async def unsubscribe_contract_market_depth(self, contract_id: str) -> None:
        await self._change("depth", contract_id, subscribe=False)

    async def _change(self, feed: Feed, contract_id: str, *, subscribe: bool) -> None:
        """Record the wish, then tell the current connection, if any. A subscription the hub
        refuses is dropped from the record (see `_refused`); one it does not answer restarts
        the connection, and the next one subscribes from the record."""
        wanted = self._wanted[feed]
        if (contract_id in wanted) == subscribe:
            return
        if subscribe:
            wanted.add(contract_id)
        else:
            wanted.discard(contract_id)
        connection = self._connection
        if (
            connection is None
            or not self._connected
            or self._connection_number != self._connections
        ):
            # No connection, or a new one whose `_subscribe` has not started: that one (or the
            # next) subscribes from `_wanted`, which already says what is wanted.
            return
        method = (_SUBSCRIBE if subscribe else _UNSUBSCRIBE)[feed]
        try:
            await asyncio.wait_for(
                _invoke(connection, method, [contract_id]), self._subscribe_timeout
            )
        except HubSubscribeError as refusal:
            if subscribe:
                self._refused(feed, contract_id, refusal)
        except Exception as exc:
            if connection is self._connection and self._connected:
                self.force_reconnect(f"{method}({contract_id}) not confirmed: {exc}")

    def _refused(self, feed: Feed, contract_id: str, refusal: HubSubscribeError) -> None:
        """The hub said no to one contract (e.g. one it does not know): keeping it would fail
        every connection's subscriptions and reconnect for ever, so it is forgotten; asking
        again later is the caller's choice."""
        self._wanted[feed].discard(contract_id)
        logger.warning("market hub refused %s of %s: %s", feed, contract_id, refusal)

    async def _subscribe(self, connection: _HubConnection) -> None:
        """Every recorded subscription on a fresh connection, each confirmed."""
        # No await before `invocations` is built: a `_change` either sees this connection
        # recorded (and invokes itself) or its wish is in `_wanted` when this reads it.
        self._connection, self._connection_number = connection, self._connections
        wishes = [
            (feed, contract_id)
            for feed, contract_ids in self._wanted.items()
            for contract_id in sorted(contract_ids)
        ]
        outcomes = await asyncio.gather(
            *(_invoke(connection, _SUBSCRIBE[feed], [contract_id]) for feed, contract_id in wishes),
            return_exceptions=True,
        )
        for (feed, contract_id), outcome in zip(wishes, outcomes, strict=True):
            if isinstance(outcome, HubSubscribeError):
                self._refused(feed, contract_id, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # not answered: the connection is restarted
        logger.info(
            "market hub subscribed: %s",
            {feed: sorted(ids) for feed, ids in self._wanted.items() if ids},
        )

    # -- Events -----------------------------------------------------------------------------------

    def _event_handler(self, event_name: str) -> Callable[[Any], Awaitable[None]]:
        model, is_list, callback = self._market_callbacks[event_name]

        async def handle(arguments: Any) -> None:
            self._events_received += 1
            try:
                contract_id, data = _contract_and_data(arguments)
                if is_list:
                    items = data if isinstance(data, list) else [data]
                    parsed: Any = [model.model_validate(item) for item in items]
                else:
                    parsed = model.model_validate(data)
            except (ValidationError, ValueError):
                self._events_dropped += 1
                logger.exception("market hub: unreadable %s dropped: %r", event_name, arguments)
                return
            if callback is None:
                return
            try:
                await callback(contract_id, parsed)
            except Exception:
                logger.exception(
                    "market hub: the %s callback raised; the stream continues", event_name
                )

        return handle


def _contract_and_data(arguments: Any) -> tuple[str, Any]:
    if not isinstance(arguments, Sequence) or isinstance(arguments, str) or len(arguments) != 2:
        raise ValueError("a market event has two arguments, (contractId, data)")
    contract_id, data = arguments
    if not isinstance(contract_id, str):
        raise ValueError("the contract id must be a string")
    return contract_id, data


async def _invoke(connection: _HubConnection, method: str, arguments: list[Any]) -> None:
    """One invocation with an id, answered by its Completion (an error raises)."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_completion(message: Any) -> None:
        if done.done():
            return
        error = getattr(message, "error", None)
        if error:
            done.set_exception(HubSubscribeError(f"{method} failed: {error}"))
        else:
            done.set_result(None)

    await connection.send(method, arguments, on_invocation=on_completion)
    await done
