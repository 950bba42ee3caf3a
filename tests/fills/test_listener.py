"""The listener against the simulator's hub over real sockets, on PostgreSQL."""

from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from fills.averages import average_price, fill_totals
from fills.models import Fill, ListenerHeartbeat
from orders.models import Order
from tests.helpers import (
    DEMO_ACCOUNT,
    MARKET_BUY,
    broker_trades,
    local_matches_broker,
    place,
    place_resting,
    wait_for,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(90),
]


def test_partial_fills_out_of_order_and_duplicated_end_exact(bot, sim, listener) -> None:
    running = listener()
    order = place_resting(bot, key="partials")
    sim.faults.duplicate_events(None)
    sim.faults.reorder_events(4)
    for size, price in [(2, "19999.75"), (1, "20000.00"), (2, "19999.50")]:
        sim.fill_order(order.broker_order_id, size=size, price=price)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == "filled", message="filled")
    # the replays may still be on their way when the order is already filled
    wait_for(
        lambda: running.listener.stats.outcomes["trade:duplicate"] >= 1,
        message="the replayed trades",
    )
    order.refresh_from_db()
    filled, notional = fill_totals(order.fills.all())
    # should end with the exact size and average, whatever the arrival order and replays
    assert (order.filled_size, order.fills.count()) == (5, 3)
    assert order.avg_fill_price == average_price(notional, filled) == Decimal("19999.7")
    # should have seen (and ignored) the replayed events
    assert running.listener.stats.outcomes["trade:duplicate"] >= 1, running.listener.stats.outcomes


def test_after_a_hub_outage_everything_matches_the_broker(bot, sim, listener) -> None:
    running = listener()
    first, second, third = (place_resting(bot, key=f"outage-{n}", size=2) for n in range(3))
    wait_for(lambda: Order.objects.get(pk=third.pk).status == "open")

    sim.faults.refuse_connections(seconds=1.5)
    sim.faults.drop_hub_connections()
    # meanwhile at the broker: one fills, one is cancelled, one fills partially
    sim.fill_order(first.broker_order_id)
    sim.broker.cancel_order("demo", DEMO_ACCOUNT, second.broker_order_id)
    sim.fill_order(third.broker_order_id, size=1)

    wait_for(lambda: local_matches_broker(sim), timeout=20, message="catch-up")
    # should have reconnected and caught up through REST
    assert running.listener.stats.reconnects >= 1
    statuses = {o.pk: o.status for o in Order.objects.all()}
    assert (statuses[first.pk], statuses[second.pk], statuses[third.pk]) == (
        "filled",
        "cancelled",
        "partially_filled",
    )
    versions = dict(Order.objects.values_list("pk", "version"))
    # should change nothing when the same events are replayed
    sim.faults.drop_hub_connections()
    wait_for(lambda: running.listener.stats.reconnects >= 2, message="second reconnect")
    wait_for(
        lambda: sim.hub_connections() and all(c["subscriptions"] for c in sim.hub_connections())
    )
    assert dict(Order.objects.values_list("pk", "version")) == versions


def test_a_silent_stall_is_detected_and_recovered(bot, sim, listener) -> None:
    running = listener(stale_after=1.0)
    order = place_resting(bot, key="stall", size=1)
    wait_for(lambda: Order.objects.get(pk=order.pk).status == "open")
    sim.faults.stall_hub()
    sim.fill_order(order.broker_order_id)  # this event is lost in the stall
    wait_for(lambda: running.listener.stats.reconnects >= 1, message="watchdog reconnect")
    sim.faults.resume_hub()
    wait_for(lambda: Order.objects.get(pk=order.pk).status == "filled", message="caught up")
    # should have filled the order from the REST catch-up
    assert Order.objects.get(pk=order.pk).filled_size == 1


def test_two_listener_processes_store_every_fill_once(bot, sim, listener_process) -> None:
    processes = [listener_process(), listener_process()]
    wait_for(
        lambda: (
            ListenerHeartbeat.objects.filter(leading_accounts__contains=[DEMO_ACCOUNT]).count() == 1
            and ListenerHeartbeat.objects.count() == 2  # the standby is up too (a loaded
            # machine may start one process seconds after the other)
        ),
        message="one leader and a standby",
    )
    for n in range(6):
        place(bot, {**MARKET_BUY, "size": 1 + n % 2}, key=f"two-{n}")
    wait_for(lambda: local_matches_broker(sim), timeout=20, message="all fills applied")
    heartbeats = list(ListenerHeartbeat.objects.all())
    leaders = [h for h in heartbeats if DEMO_ACCOUNT in h.leading_accounts]
    # should store every broker trade exactly once, with one leader for the account
    assert Fill.objects.count() == len(broker_trades(sim))
    assert len(heartbeats) == 2 and len(leaders) == 1

    # the leader stops: the standby takes over and nothing is lost
    leader_pid = int(leaders[0].name.rsplit(":", 1)[1])
    leader = next(p for p in processes if p.pid == leader_pid)
    leader.send_signal(signal.SIGTERM)
    code = leader.wait(timeout=15)
    assert code == 0, leader.stdout.read()[-3000:]  # should shut down cleanly on SIGTERM
    for n in range(3):
        place(bot, MARKET_BUY, key=f"after-{n}")
    wait_for(lambda: local_matches_broker(sim), timeout=30, message="standby took over")


def test_a_listener_killed_mid_stream_loses_and_doubles_nothing(bot, sim, listener_process) -> None:
    first = listener_process()
    wait_for(lambda: ListenerHeartbeat.objects.filter(connected=True).exists())
    for n in range(5):
        place(bot, MARKET_BUY, key=f"kill-{n}")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    for n in range(5, 10):
        place(bot, MARKET_BUY, key=f"kill-{n}")  # fills while nobody listens
    listener_process()
    wait_for(lambda: local_matches_broker(sim), timeout=30, message="restart caught up")
    # should hold all ten fills once, and every order filled
    assert Fill.objects.count() == len(broker_trades(sim)) == 10
    assert set(Order.objects.values_list("status", flat=True)) == {"filled"}
