"""The simulator's market hub (`/hubs/market`) over real WebSockets, at the SignalR wire level:
subscriptions, the quote/trade/depth events of reference 6.3, coalescing, faults."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from projectx.simulator import DEMO_CONTRACT_ID, GatewaySimulator
from projectx.simulator.market import DomType
from projectx.simulator.testing import RawHubClient, running_simulator

pytestmark = pytest.mark.timeout(30)

MNQ = DEMO_CONTRACT_ID
MES = "CON.F.US.MES.Z26"
QUOTE_FIELDS = {
    "symbol",
    "symbolName",
    "lastPrice",
    "bestBid",
    "bestAsk",
    "change",
    "changePercent",
    "open",
    "high",
    "low",
    "volume",
    "lastUpdated",
    "timestamp",
}
TRADE_FIELDS = {"symbolId", "price", "timestamp", "type", "volume"}
DEPTH_FIELDS = {"timestamp", "type", "price", "volume", "currentVolume"}


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


async def step(simulator: GatewaySimulator, contract_id: str | None = None, steps: int = 1) -> Any:
    return await asyncio.to_thread(simulator.market.step, contract_id, steps)


async def next_event(client: RawHubClient, target: str, within: float = 5.0) -> dict[str, Any]:
    return await client.receive_until(
        lambda m: m.get("type") == 1 and m.get("target") == target, within
    )


async def expect_no_events(client: RawHubClient, within: float = 0.3) -> None:
    """Nothing but pings arrives for `within` seconds."""
    try:
        message = await client.receive_until(lambda m: m.get("type") != 6, within)
    except TimeoutError:
        return
    raise AssertionError(f"unexpected message {message}")


@pytest.mark.parametrize("negotiate", ["skip", "v0", "v1"])
def test_subscribing_to_quotes_answers_and_sends_the_current_quote(
    simulator: GatewaySimulator, simulator_token: str, negotiate: Any
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(
            simulator.market_hub_url, simulator_token, negotiate=negotiate
        ) as client:
            completion = await client.call("SubscribeContractQuotes", MNQ)
            # Should: a void Completion, as on the user hub.
            assert completion == {"type": 3, "invocationId": "0", "result": None}
            quote = await next_event(client, "GatewayQuote")
            # Should: two arguments, (contractId, data), with every field of reference 6.3.
            contract_id, data = quote["arguments"]
            assert contract_id == MNQ and set(data) == QUOTE_FIELDS
            assert data["symbol"] == "F.US.MNQ" and data["symbolName"] == "MNQZ6"
            assert data["lastPrice"] == Decimal("21000")
            assert data["bestAsk"] - data["bestBid"] == Decimal("0.25")
            (connection,) = simulator.hub_connections("market")
            assert connection["subscriptions"] == [f"quote:{MNQ}"]
            # Should: the user hub does not see market-hub connections.
            assert simulator.hub_connections() == []

    run(scenario)


def test_a_walk_step_sends_a_trade_a_quote_and_the_depth(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.market_hub_url, simulator_token) as client:
            await client.call("SubscribeContractTrades", MNQ)
            await client.call("SubscribeContractMarketDepth", MNQ)
            await next_event(client, "GatewayDepth")  # the snapshot on subscribe
            prices = await step(simulator, MNQ)
            trade = await next_event(client, "GatewayTrade")
            contract_id, trades = trade["arguments"]
            # Should: trade data is a list of trades with the fields of reference 6.3.
            assert contract_id == MNQ and len(trades) == 1
            assert set(trades[0]) == TRADE_FIELDS
            assert trades[0]["symbolId"] == "F.US.MNQ" and trades[0]["price"] == prices[MNQ]
            depth = await next_event(client, "GatewayDepth")
            contract_id, entries = depth["arguments"]
            assert contract_id == MNQ and all(set(e) == DEPTH_FIELDS for e in entries)
            # Should: each depth event is a whole ladder: Reset, then five levels a side.
            assert entries[0]["type"] == DomType.RESET
            bids = [e for e in entries if e["type"] in (DomType.BEST_BID, DomType.BID)]
            asks = [e for e in entries if e["type"] in (DomType.BEST_ASK, DomType.ASK)]
            assert len(bids) == len(asks) == 5
            assert bids[0]["type"] == DomType.BEST_BID and asks[0]["type"] == DomType.BEST_ASK
            assert [b["price"] for b in bids] == sorted((b["price"] for b in bids), reverse=True)
            assert [a["price"] for a in asks] == sorted(a["price"] for a in asks)
            assert asks[0]["price"] - bids[0]["price"] == Decimal("0.25")
            assert bids[0]["price"] <= prices[MNQ] <= asks[0]["price"]
            # Should: no quote, as none was subscribed to.
            await expect_no_events(client)

    run(scenario)


def test_unsubscribing_stops_the_events_and_other_contracts_stay_quiet(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.market_hub_url, simulator_token) as client:
            await client.call("SubscribeContractTrades", MNQ)
            await step(simulator, MES, 3)
            # Should: trades of a contract not subscribed to never arrive.
            await expect_no_events(client)
            await step(simulator, MNQ)
            await next_event(client, "GatewayTrade")
            await client.call("UnsubscribeContractTrades", MNQ)
            await client.call("UnsubscribeContractQuotes", MNQ)  # never subscribed: harmless
            await step(simulator, MNQ, 3)
            # Should: after Unsubscribe nothing more comes for it.
            await expect_no_events(client)
            assert simulator.hub_connections("market")[0]["subscriptions"] == []

    run(scenario)


def test_bad_invocations_get_an_error_completion(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.market_hub_url, simulator_token) as client:
            # Should: the wrong arity, a non-string id or an unknown method is an error.
            for target, arguments in (
                ("SubscribeContractQuotes", []),
                ("SubscribeContractQuotes", [42]),
                ("SubscribeOrders", [1001]),  # a user-hub method
            ):
                completion = await client.call(target, *arguments)
                assert completion["error"], (target, arguments)
            # Should: an unknown contract is accepted and simply delivers nothing.
            assert "error" not in await client.call("SubscribeContractQuotes", "CON.F.US.NOPE.Z26")
            await expect_no_events(client)

    run(scenario)


def test_the_market_hub_needs_a_token(simulator: GatewaySimulator) -> None:
    # Should: negotiate refuses a missing or unknown token, as the user hub does.
    assert httpx.post(f"{simulator.market_hub_url}/negotiate").status_code == 401
    url = f"{simulator.market_hub_url}/negotiate"
    assert httpx.post(url, params={"access_token": "forged"}).status_code == 401


def test_quotes_are_coalesced_to_the_configured_rate_and_the_last_one_arrives() -> None:
    async def scenario(simulator: GatewaySimulator) -> None:
        token = simulator.issue_token("demo")
        async with await RawHubClient.connect(simulator.market_hub_url, token) as client:
            await client.call("SubscribeContractTrades", MNQ)
            await client.call("SubscribeContractQuotes", MNQ)
            await next_event(client, "GatewayQuote")  # the snapshot
            loop = asyncio.get_running_loop()
            final = (await step(simulator, MNQ, 40))[MNQ]
            trades, quote_times, last_quote = 0, [], None
            while last_quote is None or last_quote["lastPrice"] != final or trades < 40:
                message = await client.receive_until(lambda m: m.get("type") == 1, 3.0)
                if message["target"] == "GatewayTrade":
                    trades += 1
                else:
                    quote_times.append(loop.time())
                    last_quote = message["arguments"][1]
            # Should: every trade arrives, but a burst of 40 quotes becomes at most a few...
            assert trades == 40
            assert 1 <= len(quote_times) <= 3
            # ...spaced by the rate (5 a second here: 200 ms; uncoalesced they would come
            # milliseconds apart), and the newest comes last. Timed where they arrive, so a
            # late first arrival shortens the gap after it (164 ms seen under load): half the
            # period is the bound.
            gaps = [b - a for a, b in itertools.pairwise(quote_times)]
            assert all(gap >= 0.2 / 2 for gap in gaps), gaps

    with running_simulator(max_quotes_per_second=5) as simulator:
        run(lambda: scenario(simulator))


def test_a_loop_walk_is_bounded_by_the_quote_rate() -> None:
    async def scenario(simulator: GatewaySimulator) -> None:
        token = simulator.issue_token("demo")
        async with await RawHubClient.connect(simulator.market_hub_url, token) as client:
            await client.call("SubscribeContractQuotes", MNQ)
            await next_event(client, "GatewayQuote")
            loop = asyncio.get_running_loop()
            simulator.market.start_walk()
            arrivals = []
            while len(arrivals) < 6:
                await next_event(client, "GatewayQuote")
                arrivals.append(loop.time())
            simulator.market.stop_walk()
            # Should: the walk steps every 10 ms, yet quotes come at most 10 a second: five
            # gaps span at least about half a second (uncoalesced they would span 50 ms). The
            # span, not each gap: one late arrival shortens the gap after it, whatever was sent.
            span = arrivals[-1] - arrivals[0]
            assert span >= 5 * 0.1 - 0.1, [b - a for a, b in itertools.pairwise(arrivals)]

    with running_simulator(walk_interval=0.01, max_quotes_per_second=10) as simulator:
        run(lambda: scenario(simulator))


def test_market_event_faults_do_not_touch_the_user_hub_budget(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.market_hub_url, simulator_token) as client:
            await client.call("SubscribeContractTrades", MNQ)
            simulator.faults.drop_events(1, hub="market")
            simulator.faults.drop_events(5)  # the user hub's: must not eat market events
            first = (await step(simulator, MNQ))[MNQ]
            second = (await step(simulator, MNQ))[MNQ]
            trade = await next_event(client, "GatewayTrade")
            # Should: the first market trade is dropped, the second arrives.
            assert trade["arguments"][1][0]["price"] == second
            assert simulator.market.recent_trades(MNQ, 2)[0]["price"] == first
            assert simulator.faults.snapshot()["dropEvents"] == 5
            simulator.faults.duplicate_events(1, hub="market")
            third = (await step(simulator, MNQ))[MNQ]
            copies = [await next_event(client, "GatewayTrade") for _ in range(2)]
            # Should: a duplicated market event arrives twice.
            assert [c["arguments"][1][0]["price"] for c in copies] == [third, third]

    run(scenario)


def test_stall_and_drop_reach_the_market_hub(
    simulator: GatewaySimulator, simulator_token: str
) -> None:
    async def scenario() -> None:
        async with await RawHubClient.connect(simulator.market_hub_url, simulator_token) as client:
            await client.call("SubscribeContractTrades", MNQ)
            simulator.faults.stall_hub(hub="market")
            await step(simulator, MNQ)
            # Should: a stalled market hub sends nothing at all.
            await expect_no_events(client)
            simulator.faults.resume_hub()
            await step(simulator, MNQ)
            await next_event(client, "GatewayTrade")
            # Should: dropping hub connections cuts market-hub sockets too.
            assert await asyncio.to_thread(simulator.faults.drop_hub_connections) == 1
            with pytest.raises(ConnectionError):
                await client.receive_until(lambda m: False, 3.0)

    run(scenario)
