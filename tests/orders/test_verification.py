"""Verification after a placement failed on the network, against the simulator."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from orders.models import Order
from orders.services import order_update
from orders.verification import Outcome, order_verify, verify_until_resolved
from projectx.simulator import PlaceOrderRequest
from tests.helpers import LIMIT_BUY, MNQ, broker_orders, place

pytestmark = pytest.mark.django_db(transaction=True)


def place_untagged_at_the_broker(sim) -> None:
    """The same order as LIMIT_BUY, placed at the broker without our tag (e.g. by hand)."""
    result = sim.broker.place_order(
        "demo",
        PlaceOrderRequest(
            account_id=1001,
            contract_id=MNQ,
            type=1,
            side=0,
            size=2,
            limit_price=Decimal(LIMIT_BUY["limit_price"]),
        ),
    )
    assert result.success


def test_an_unknown_order_fails_only_after_a_search_that_succeeded(
    bot, sim, contract_known
) -> None:
    # The broker did not process the request, but a 5xx does not say so: it may have.
    sim.faults.fail_requests(path="Order/place", status=503, count=1)
    response = place(bot, key="never-arrived")
    order_id = response.json()["id"]
    # should not guess: the order is unknown
    assert response.status_code == 202
    assert response.json()["status"] == "unknown"

    sim.faults.clear()
    sim.faults.refuse_connections()
    result = order_verify(order_id=order_id)
    # should leave the order unknown while the broker cannot be searched
    assert result.outcome == Outcome.INCONCLUSIVE
    assert Order.objects.get(pk=order_id).status == "unknown"

    sim.faults.accept_connections()
    result = order_verify(order_id=order_id)
    # should conclude absence from a search that succeeded, and say so
    assert result.outcome == Outcome.ABSENT
    assert result.order.status == "failed"
    assert broker_orders(sim) == []


def test_a_5xx_after_the_broker_placed_the_order_is_resolved_to_the_order(
    bot, sim, contract_known
) -> None:
    sim.faults.lose_response(path="Order/place", count=1)
    order_id = place(bot, key="lost").json()["id"]
    sim.fill_order(broker_orders(sim)[0]["id"])  # it even filled meanwhile
    result = order_verify(order_id=order_id)
    order = Order.objects.get(pk=order_id)
    # should follow the broker's truth, not our guess: found, and filled once its fills were
    # fetched from the broker (the fill history, not the broker's counter, makes it filled)
    assert result.outcome == Outcome.FOUND
    assert order.status == "filled"
    assert order.filled_size == 2
    assert order.fills.count() >= 1


def test_a_broker_that_stays_down_leaves_the_order_unknown_after_every_attempt(
    bot, sim, contract_known, settings
) -> None:
    sim.faults.fail_requests(503, path="Order/place")  # unprocessed, but a 5xx is ambiguous
    order_id = place(bot, key="down").json()["id"]
    sim.faults.clear()
    sim.faults.refuse_connections()
    sleeps: list[float] = []
    result = verify_until_resolved(order_id, sleep=sleeps.append)
    attempts = settings.ORDER_MANAGEMENT.verification.max_attempts
    # should retry with growing waits up to the configured attempts, then leave it unknown
    assert result.outcome == Outcome.INCONCLUSIVE
    assert len(sleeps) == attempts - 1
    backoff = settings.ORDER_MANAGEMENT.verification
    for attempt, slept in enumerate(sleeps):
        planned = min(backoff.backoff_initial_ms * 2**attempt, backoff.backoff_max_ms) / 1000
        # should wait the doubling backoff, jittered down to half of it, never longer
        assert planned / 2 <= slept <= planned
    order = Order.objects.get(pk=order_id)
    assert order.status == "unknown"
    assert order.verification_attempts == attempts


def test_direct_lookup_by_broker_id_comes_first(bot, sim, contract_known) -> None:
    sim.faults.lose_response(path="Order/place", count=1)
    order_id = place(bot, key="direct").json()["id"]
    broker_id = broker_orders(sim)[0]["id"]
    order_update(order_id=order_id, changes={"broker_order_id": broker_id}, trigger="broker-stream")
    result = order_verify(order_id=order_id)
    # should find the order by its id without searching
    assert (result.outcome, result.rule) == (Outcome.FOUND, "broker_order_id")


def test_an_untagged_lookalike_matches_only_when_it_is_the_only_one(
    bot, sim, contract_known
) -> None:
    sim.faults.fail_requests(503, path="Order/place")  # unprocessed, but a 5xx is ambiguous
    order_id = place(bot, key="lookalike").json()["id"]
    sim.faults.clear()
    # the same order arrives at the broker without our tag (e.g. placed by hand)
    place_untagged_at_the_broker(sim)
    result = order_verify(order_id=order_id)
    # should match by contract, side, size, type and price, and record the rule
    assert (result.outcome, result.rule) == (Outcome.FOUND, "attributes")


def test_two_untagged_lookalikes_are_not_guessed_between(bot, sim, contract_known) -> None:
    sim.faults.fail_requests(503, path="Order/place")  # unprocessed, but a 5xx is ambiguous
    order_id = place(bot, key="twins").json()["id"]
    sim.faults.clear()
    for _ in range(2):
        place_untagged_at_the_broker(sim)
    result = order_verify(order_id=order_id)
    # should refuse to pick one and keep the order unknown
    assert result.outcome == Outcome.INCONCLUSIVE
    assert Order.objects.get(pk=order_id).status == "unknown"


def test_the_sweep_command_verifies_every_unknown_order(bot, sim, contract_known) -> None:
    sim.faults.lose_response(path="Order/place", count=2)
    place(bot, key="s1")
    place(bot, {**LIMIT_BUY, "size": 1}, key="s2")
    out = StringIO()
    call_command("verify_unknown_orders", stdout=out)
    # should resolve both and report the counts
    assert "found 2" in out.getvalue()
    assert not Order.objects.filter(status="unknown").exists()
