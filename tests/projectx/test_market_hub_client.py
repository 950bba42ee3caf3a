"""MarketHubClient against the simulator's market hub over real WebSockets: typed quotes,
trades and depth with exact Decimal prices, subscribing and unsubscribing while connected,
re-subscribing after a dropped connection, and the stale-feed watchdog on a silent hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest

from projectx.client import ProjectXClient
from projectx.config import GatewayConfig
from projectx.enums import DomType, TradeLogType
from projectx.market_hub import MarketHubClient
from projectx.models import DepthEntry, MarketTrade, Quote
from projectx.ratelimit import SlidingWindowRateLimiter
from projectx.simulator import DEMO_API_KEY, DEMO_USERNAME, GatewaySimulator
from projectx.simulator.testing import running_simulator

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(20)]

MNQ = "CON.F.US.MNQ.Z26"
WITHIN = 5.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def simulator() -> Iterator[GatewaySimulator]:
    # Fast pings, so a quiet market is never mistaken for a stall; no quote coalescing, so
    # every price set here is heard.
    with running_simulator(ping_interval=0.2, max_quotes_per_second=None) as sim:
        yield sim


@pytest.fixture
async def client(simulator: GatewaySimulator) -> AsyncIterator[ProjectXClient]:
    config = GatewayConfig(
        api_url=simulator.base_url,
        user_hub_url=simulator.user_hub_url,
        username=DEMO_USERNAME,
        api_key=DEMO_API_KEY,
        market_hub_url=simulator.market_hub_url,
    )
    async with ProjectXClient(config, rate_limiter=SlidingWindowRateLimiter()) as client:
        yield client


@dataclass
class Recorder:
    quotes: list[tuple[str, Quote]] = field(default_factory=list)
    trades: list[tuple[str, list[MarketTrade]]] = field(default_factory=list)
    depth: list[tuple[str, list[DepthEntry]]] = field(default_factory=list)
    connected: int = 0
    disconnect_reasons: list[str] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _note(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def on_quote(self, contract_id: str, quote: Quote) -> None:
        self.quotes.append((contract_id, quote))
        await self._note()

    async def on_trade(self, contract_id: str, trades: list[MarketTrade]) -> None:
        self.trades.append((contract_id, trades))
        await self._note()

    async def on_depth(self, contract_id: str, entries: list[DepthEntry]) -> None:
        self.depth.append((contract_id, entries))
        await self._note()

    async def on_connected(self) -> None:
        self.connected += 1
        await self._note()

    async def on_disconnected(self, reason: str) -> None:
        self.disconnect_reasons.append(reason)
        await self._note()

    async def wait_for(self, condition: Any) -> None:
        async with asyncio.timeout(WITHIN), self.changed:
            await self.changed.wait_for(condition)

    def last_prices(self) -> list[Decimal | None]:
        return [quote.last_price for _, quote in self.quotes]


def market_hub(
    simulator: GatewaySimulator, client: ProjectXClient, recorder: Recorder, **options: Any
) -> MarketHubClient:
    arguments: dict[str, Any] = {
        "on_quote": recorder.on_quote,
        "on_trade": recorder.on_trade,
        "on_depth": recorder.on_depth,
        "on_connected": recorder.on_connected,
        "on_disconnected": recorder.on_disconnected,
        "reconnect_delay_initial": 0.02,
        "stale_after": None,
    }
    arguments.update(options)
    return MarketHubClient(simulator.market_hub_url, client.get_token, **arguments)


async def in_thread(function: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(function, *args, **kwargs)


def market_subscriptions(simulator: GatewaySimulator) -> list[set[str]]:
    return [set(c["subscriptions"]) for c in simulator.hub_connections("market")]


async def test_it_delivers_typed_quotes_trades_and_depth_with_exact_prices(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with market_hub(simulator, client, recorder) as hub:
        await hub.wait_until_subscribed()
        await hub.subscribe_contract_quotes(MNQ)
        await hub.subscribe_contract_trades(MNQ)
        await hub.subscribe_contract_market_depth(MNQ)
        # should send the current quote on subscribing (the market stands still)
        await recorder.wait_for(lambda: recorder.quotes and recorder.depth)
        await in_thread(simulator.set_price, MNQ, Decimal("21000.75"))
        await recorder.wait_for(lambda: Decimal("21000.75") in recorder.last_prices())
        await recorder.wait_for(lambda: recorder.trades)

    contract_id, quote = recorder.quotes[-1]
    # should hand over the contract id and an exact Decimal quote on the contract's symbol
    assert contract_id == MNQ
    assert quote.last_price == Decimal("21000.75")
    assert isinstance(quote.best_bid, Decimal) and isinstance(quote.best_ask, Decimal)
    assert quote.best_ask - quote.best_bid == Decimal("0.25")
    assert quote.symbol == "F.US.MNQ"
    [(trade_contract, [trade])] = recorder.trades
    # should read the trade list: the print at the new price, a buy (the price rose)
    assert trade_contract == MNQ
    assert trade.price == Decimal("21000.75")
    assert trade.type == TradeLogType.BUY
    _, entries = recorder.depth[-1]
    # should read a whole ladder, starting with its reset
    assert entries[0].type == DomType.RESET
    assert {DomType.BEST_BID, DomType.BEST_ASK} <= {entry.type for entry in entries}


async def test_it_subscribes_and_unsubscribes_while_connected(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with market_hub(simulator, client, recorder) as hub:
        await hub.wait_until_subscribed()
        await hub.subscribe_contract_quotes(MNQ)
        # should be confirmed on the server by the time the call returns
        assert market_subscriptions(simulator) == [{f"quote:{MNQ}"}]

        await hub.unsubscribe_contract_quotes(MNQ)
        # should leave nothing subscribed on the server, nor recorded for the next connection
        assert market_subscriptions(simulator) == [set()]
        assert hub.subscriptions("quotes") == frozenset()
        heard = len(recorder.quotes)
        await in_thread(simulator.set_price, MNQ, Decimal("21001.00"))
        await in_thread(simulator.set_price, MNQ, Decimal("21001.25"))
        # should hear no more quotes of the contract (pings keep coming, quotes do not)
        await asyncio.sleep(0.3)
        assert len(recorder.quotes) == heard


async def test_it_subscribes_again_after_the_hub_drops_the_connection(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with market_hub(simulator, client, recorder) as hub:
        await hub.wait_until_subscribed()
        await hub.subscribe_contract_quotes(MNQ)
        await recorder.wait_for(lambda: recorder.quotes)

        await in_thread(simulator.faults.drop_hub_connections, hub="market")
        await recorder.wait_for(lambda: recorder.connected == 2)
        # should have subscribed the new connection to the same contract before on_connected
        assert market_subscriptions(simulator) == [{f"quote:{MNQ}"}]
        await in_thread(simulator.set_price, MNQ, Decimal("20999.50"))
        await recorder.wait_for(lambda: Decimal("20999.50") in recorder.last_prices())

    # should have reported the drop, then the stop
    assert recorder.disconnect_reasons[0].startswith("ConnectionClosed")
    assert recorder.disconnect_reasons[1:] == ["stopped"]


async def test_a_silent_hub_is_left_for_a_new_connection(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with market_hub(
        simulator, client, recorder, stale_after=0.6, subscribe_timeout=0.5
    ) as hub:
        await hub.wait_until_subscribed()
        await hub.subscribe_contract_quotes(MNQ)
        await recorder.wait_for(lambda: recorder.connected == 1 and recorder.quotes)

        simulator.faults.stall_hub(hub="market")
        await recorder.wait_for(lambda: recorder.disconnect_reasons)
        simulator.faults.resume_hub(hub="market")
        await recorder.wait_for(lambda: recorder.connected >= 2)
        # should be subscribed again once the hub speaks
        await in_thread(simulator.set_price, MNQ, Decimal("21002.00"))
        await recorder.wait_for(lambda: Decimal("21002.00") in recorder.last_prices())

    # should say the feed went stale
    assert recorder.disconnect_reasons[0].startswith("stale feed")


async def test_an_unreadable_event_is_dropped_and_the_stream_goes_on(
    simulator: GatewaySimulator, client: ProjectXClient
) -> None:
    recorder = Recorder()
    async with market_hub(simulator, client, recorder) as hub:
        await hub.wait_until_subscribed()
        handle = hub._event_handler("GatewayQuote")
        await handle([MNQ, {"lastPrice": 21000.5}])  # a float: parsed the lossy way
        await hub.subscribe_contract_quotes(MNQ)
        await recorder.wait_for(lambda: recorder.quotes)

    # should count the bad event as dropped, and still deliver the good ones
    assert hub.health().events_dropped == 1
    assert recorder.quotes[0][1].last_price == Decimal("21000")


async def test_a_refused_subscription_is_dropped_without_costing_the_connection(
    simulator: GatewaySimulator, client: ProjectXClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projectx import market_hub as module

    recorder = Recorder()
    async with market_hub(simulator, client, recorder) as hub:
        await hub.wait_until_subscribed()
        await hub.subscribe_contract_quotes(MNQ)
        # A method the hub does not know stands in for a contract it refuses: an error
        # Completion, the way the gateway answers a subscription it will not take.
        monkeypatch.setitem(module._SUBSCRIBE, "trades", "SubscribeNothingKnown")
        await hub.subscribe_contract_trades(MNQ)
        # should forget the refused one, keep the good one, and keep the connection
        assert hub.subscriptions("trades") == frozenset()
        assert hub.subscriptions("quotes") == frozenset({MNQ})
        await in_thread(simulator.faults.drop_hub_connections, hub="market")
        await recorder.wait_for(lambda: recorder.connected == 2)
        # should subscribe the next connection to what is still wanted, and nothing else
        assert market_subscriptions(simulator) == [{f"quote:{MNQ}"}]

    # should have lost the connection only to the drop
    assert recorder.disconnect_reasons[0].startswith("ConnectionClosed")
    assert recorder.disconnect_reasons[1:] == ["stopped"]
