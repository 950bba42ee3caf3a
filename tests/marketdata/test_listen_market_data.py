"""The market-data task end to end: the simulator's quotes reach the cache and the API for a
contract we hold, it subscribes when a position opens and unsubscribes when it closes, and the
broker's hub dropping the connection does not lose the subscription."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import get_commands, load_command_class

from accounts.models import Position
from marketdata.selectors import last_prices
from tests.helpers import MARKET_BUY, MNQ, place, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def market_subscriptions(sim) -> set[str]:
    return {s for c in sim.hub_connections("market") for s in c["subscriptions"]}


def api_position(bot) -> dict | None:
    rows = [r for r in bot.get("/api/v1/positions/").json() if r["contract_id"] == MNQ]
    return rows[0] if rows else None


def test_quotes_reach_the_api_while_a_position_is_open_and_stop_when_it_closes(
    sim, bot, listener, market_data, contract_known
) -> None:
    listener()
    # A poll too slow to matter here: subscribing and unsubscribing follow the order_changed
    # and position_changed signals of this process.
    task = market_data(poll_interval=60)
    # should watch nothing while nothing is held or working
    wait_for(lambda: sim.hub_connections("market"), message="the market hub connection")
    assert market_subscriptions(sim) == set()

    assert place(bot, {**MARKET_BUY, "size": 2}, key="open").status_code == 201
    wait_for(lambda: Position.objects.filter(contract_id=MNQ, size=2).exists())
    # should subscribe to the contract's quotes once the position is open
    wait_for(lambda: market_subscriptions(sim) == {f"quote:{MNQ}"}, message="the subscription")

    sim.set_price(MNQ, Decimal("21003.25"))
    # should carry the simulator's price into the cache and the positions API, with the P&L:
    # bought 2 at 21000.00, now 13 ticks higher at 0.50 a tick
    wait_for(
        lambda: (api_position(bot) or {}).get("last_price") == "21003.25",
        message="the price in the API",
    )
    row = api_position(bot)
    assert row is not None and row["unrealized_pnl"] == "13"
    [account] = [a for a in bot.get("/api/v1/accounts/").json() if a["id"] == 1001]
    assert account["unrealized_pnl"] == "13"

    sell = {**MARKET_BUY, "side": "sell", "size": 2}
    assert place(bot, sell, key="close").status_code == 201
    wait_for(lambda: Position.objects.filter(contract_id=MNQ, size=0).exists())
    # should unsubscribe once nothing is held or working, and forget the price
    wait_for(lambda: market_subscriptions(sim) == set(), message="the unsubscription")
    assert task.feed.subscribed_contracts == frozenset()
    wait_for(lambda: last_prices([MNQ]) == {}, message="the price forgotten")


def test_a_position_written_by_another_process_is_found_by_the_poll(
    sim, accounts, market_data, contract_known
) -> None:
    market_data(poll_interval=0.3)
    wait_for(lambda: sim.hub_connections("market"), message="the market hub connection")
    # Written as another process would: no signal reaches this process's task.
    Position.objects.create(
        account=accounts[0], contract_id=MNQ, type="short", size=1, average_price=Decimal("21001")
    )
    # should subscribe within a poll and cache the market price
    wait_for(lambda: market_subscriptions(sim) == {f"quote:{MNQ}"}, message="the subscription")
    wait_for(lambda: MNQ in last_prices([MNQ]), message="the price in the cache")
    assert last_prices([MNQ])[MNQ].price == Decimal("21000")
    Position.objects.filter(contract_id=MNQ).update(type="flat", size=0)
    # should unsubscribe within a poll once it is flat
    wait_for(lambda: market_subscriptions(sim) == set(), message="the unsubscription")


def test_a_dropped_market_hub_connection_is_subscribed_again(
    sim, bot, listener, market_data, contract_known
) -> None:
    listener()
    market_data()
    assert place(bot, MARKET_BUY, key="open").status_code == 201
    wait_for(lambda: market_subscriptions(sim) == {f"quote:{MNQ}"}, message="the subscription")
    first = {c["connectionId"] for c in sim.hub_connections("market")}

    sim.faults.drop_hub_connections(hub="market")
    # should come back on a new connection with the same subscription
    wait_for(
        lambda: (
            {c["connectionId"] for c in sim.hub_connections("market")} - first
            and market_subscriptions(sim) == {f"quote:{MNQ}"}
        ),
        message="the new subscribed connection",
    )
    sim.set_price(MNQ, Decimal("20999.75"))
    wait_for(
        lambda: (api_position(bot) or {}).get("last_price") == "20999.75",
        message="the price after the reconnect",
    )
    # should be a loss of 1 tick at 0.50 on the one contract bought at 21000.00
    row = api_position(bot)
    assert row is not None and row["unrealized_pnl"] == "-0.5"


def test_the_command_accepts_its_options() -> None:
    command = load_command_class(get_commands()["listen_market_data"], "listen_market_data")
    options = command.create_parser("manage.py", "listen_market_data").parse_args(
        ["--poll-interval", "1", "--publish-interval", "0.5"]
    )
    # should parse the documented options
    assert options.poll_interval == 1.0 and options.publish_interval == 0.5
