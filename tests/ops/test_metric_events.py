"""Every metric moves when its event happens, read back through /metrics as Prometheus would.

(deadlocks_total and transaction_retries_total on a real PostgreSQL deadlock:
tests/ordermgmt/test_locking.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from fills.listener import apply_events
from fills.models import ListenerHeartbeat
from fills.services import fill_apply, order_event_apply
from orders.fill_timeouts import order_handle_fill_timeout
from orders.models import Order
from orders.services import order_transition, order_update
from orders.stuck import stuck_orders_sweep
from orders.verification import order_verify, verify_until_resolved
from projectx.enums import OrderStatus as BrokerStatus
from projectx.simulator import PlaceOrderRequest
from tests.factories import make_account, make_order
from tests.fills.wire import broker_order, trade
from tests.helpers import MNQ, exposition, place, read

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def total(name: str) -> float:
    """The sum over every label combination of a series."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition())
        for sample in family.samples
        if sample.name == name
    )


def transitions(from_state: str, to_state: str, trigger: str) -> float:
    return read(
        "order_lifecycle_transitions_total", **{"from": from_state, "to": to_state}, trigger=trigger
    )


def working_order(account, broker_order_id: int, **fields) -> Order:
    order = make_order(account, **fields)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    return order_transition(
        order_id=order.pk,
        to_state="open",
        trigger="broker-rest",
        changes={"broker_order_id": broker_order_id},
    )


def test_a_placement_counts_its_moves_its_latency_its_locks_and_the_cache(bot, sim) -> None:
    before = {
        "sent": transitions("created", "submitting", "api"),
        "opened": transitions("submitting", "open", "broker-rest"),
        "placed": read("order_placement_seconds_count", outcome="open"),
        "account_locks": read("lock_acquisitions_total", kind="account"),
        "turns": read("lock_acquisitions_total", kind="advisory"),
        "account_waits": read("lock_wait_seconds_count", kind="account"),
        "misses": read("idempotency_cache_misses_total"),
        "hits": read("idempotency_cache_hits_total"),
    }

    assert place(bot, key="metrics-1").status_code == 201

    # should count each lifecycle move with its trigger
    assert transitions("created", "submitting", "api") == before["sent"] + 1
    assert transitions("submitting", "open", "broker-rest") == before["opened"] + 1
    # should time the placement by where it landed
    assert read("order_placement_seconds_count", outcome="open") == before["placed"] + 1
    # should count the account's row lock (and time its wait) and the placement turn
    assert read("lock_acquisitions_total", kind="account") == before["account_locks"] + 1
    assert read("lock_wait_seconds_count", kind="account") == before["account_waits"] + 1
    assert read("lock_acquisitions_total", kind="advisory") == before["turns"] + 1
    # should count the first look-up of the key as a cache miss
    assert read("idempotency_cache_misses_total") == before["misses"] + 1

    assert place(bot, key="metrics-1")["Idempotent-Replayed"] == "true"
    # should answer the retry from the cache, and not time it as a placement
    assert read("idempotency_cache_hits_total") == before["hits"] + 1
    assert read("order_placement_seconds_count", outcome="open") == before["placed"] + 1


def test_a_field_write_is_not_a_transition_and_a_correction_is_counted_as_one() -> None:
    order = make_order()
    for state in ("submitting", "unknown", "failed"):
        order_transition(order_id=order.pk, to_state=state, trigger="verification")
    moves_before = total("order_lifecycle_transitions_total")
    corrections_before = read("order_corrections_total", **{"from": "failed", "to": "open"})

    order_update(order_id=order.pk, changes={"status_reason": "noted"}, trigger="admin")
    # should not count a write that keeps the state as a lifecycle transition
    assert total("order_lifecycle_transitions_total") == moves_before

    order_transition(order_id=order.pk, to_state="open", trigger="broker-stream")
    # should count the late evidence's move, and count it as a correction
    assert transitions("failed", "open", "broker-stream") >= 1
    assert total("order_lifecycle_transitions_total") == moves_before + 1
    assert (
        read("order_corrections_total", **{"from": "failed", "to": "open"})
        == corrections_before + 1
    )


def test_verification_counts_each_phase_and_times_each_attempt(
    bot, sim, contract_known, tune
) -> None:
    tune("verification", max_attempts=2)  # the policy gives up sooner; the counts are the same

    def attempts(phase: str, outcome: str) -> float:
        return read("order_verification_attempts_total", phase=phase, outcome=outcome)

    sim.faults.lose_response(path="Order/place", count=1)
    found_by_search = place(bot, key="v-found").json()["id"]
    before = (
        attempts("search", "found"),
        read("order_verification_seconds_count", outcome="found"),
    )
    order_verify(order_id=found_by_search)
    # should count a search that found the order, and time the attempt
    assert attempts("search", "found") == before[0] + 1
    assert read("order_verification_seconds_count", outcome="found") == before[1] + 1

    sim.faults.fail_requests(503, path="Order/place")  # unprocessed; a 5xx is ambiguous
    by_id = place(bot, key="v-direct").json()["id"]
    sim.faults.clear()
    # the broker has it after all, and the stream told us its id
    held = sim.broker.place_order(
        "demo",
        PlaceOrderRequest(
            account_id=1001,
            contract_id=MNQ,
            type=1,
            side=0,
            size=1,
            limit_price=Decimal("19000.25"),
            custom_tag=Order.objects.get(pk=by_id).custom_tag,
        ),
    )
    order_update(
        order_id=by_id, changes={"broker_order_id": held.order_id}, trigger="broker-stream"
    )
    before_direct = attempts("direct", "found")
    order_verify(order_id=by_id)
    # should count the direct look-up by broker id
    assert attempts("direct", "found") == before_direct + 1

    sim.faults.fail_requests(503, path="Order/place")
    never_sent = place(bot, key="v-absent").json()["id"]
    sim.faults.clear()
    sim.faults.refuse_connections()
    before = (attempts("search", "error"), attempts("policy", "inconclusive"))
    result = verify_until_resolved(never_sent, sleep=lambda seconds: None)
    # should count each failed search, and the policy giving up for now
    assert result.outcome == "inconclusive"
    assert attempts("search", "error") > before[0]
    assert attempts("policy", "inconclusive") == before[1] + 1

    sim.faults.accept_connections()
    before_absent = attempts("search", "absent")
    order_verify(order_id=never_sent)
    # should count the search that concluded absence
    assert attempts("search", "absent") == before_absent + 1


def test_fill_events_are_counted_by_outcome() -> None:
    account = make_account()
    working_order(account, broker_order_id=424_242, size=5)

    def events(outcome: str) -> float:
        return read("order_fill_events_total", outcome=outcome)

    before = {o: events(o) for o in ("applied", "duplicate", "voided", "orphan", "stale")}
    first = trade(order_id=424_242, size=1, price="21000.25", account_id=account.broker_account_id)
    fill_apply(account=account, trade=first, trigger="broker-stream")
    fill_apply(account=account, trade=first, trigger="broker-stream")
    fill_apply(
        account=account, trade=first.model_copy(update={"voided": True}), trigger="broker-stream"
    )
    stray = trade(order_id=999_999, size=1, price="21000.25", account_id=account.broker_account_id)
    fill_apply(account=account, trade=stray, trigger="broker-stream")
    working_order(account, broker_order_id=434_343)
    for status, seconds in ((BrokerStatus.PENDING_CANCELLATION, 10), (BrokerStatus.OPEN, 5)):
        order_event_apply(  # the second event is older than the first one applied: stale
            account=account,
            wire=broker_order(
                order_id=434_343,
                account_id=account.broker_account_id,
                status=status,
                seconds=seconds,
            ),
            trigger="broker-stream",
        )

    # should count each outcome once
    assert {o: events(o) - before[o] for o in before} == {
        "applied": 1,
        "duplicate": 1,
        "voided": 1,
        "orphan": 1,
        "stale": 1,
    }


def test_a_live_fill_is_timed_from_the_brokers_clock_to_commit() -> None:
    account = make_account()
    working_order(account, broker_order_id=515_151)
    before = (
        read("fill_processing_seconds_count"),
        read("fill_processing_seconds_sum"),
    )
    sent = trade(order_id=515_151, size=1, price="21000.25", account_id=account.broker_account_id)
    sent = sent.model_copy(update={"creation_timestamp": datetime.now(UTC) - timedelta(seconds=2)})

    apply_events([("trade", sent, None)], "broker-stream")

    # should observe one fill, about two seconds after the broker's time
    assert read("fill_processing_seconds_count") == before[0] + 1
    assert 2.0 <= read("fill_processing_seconds_sum") - before[1] < 10.0


def test_a_fill_timeout_is_counted_by_its_action() -> None:
    order = working_order(make_account(), broker_order_id=616_161, type="market", limit_price=None)
    before = read("order_fill_timeouts_total", action="alert")
    order_handle_fill_timeout(order=order, action="alert", now=timezone.now())
    # should count the timeout with the action taken
    assert read("order_fill_timeouts_total", action="alert") == before + 1


def test_stuck_orders_are_counted_when_found_and_shown_while_they_last() -> None:
    order = make_order()
    Order.objects.filter(pk=order.pk).update(state_entered_at=timezone.now() - timedelta(minutes=5))
    before = read("order_stuck_total", state="created")
    # should show the stuck order in the gauge at scrape time
    assert read("orders_stuck", state="created") == 1

    stuck_orders_sweep(verify=False)
    # should count it when detection finds it
    assert read("order_stuck_total", state="created") == before + 1

    order_transition(order_id=order.pk, to_state="cancelled", trigger="admin")
    # should drop from the gauge once it moves
    assert read("orders_stuck", state="created") == 0


def test_the_listener_gauges_follow_its_heartbeat() -> None:
    # should report no listener, and an infinitely old last event, before any ran
    assert read("listener_connected") == 0
    assert read("listener_last_event_age_seconds") == float("inf")

    now = timezone.now()
    beat = ListenerHeartbeat.objects.create(
        name="host:1",
        connected=True,
        subscribed=True,
        last_message_at=now - timedelta(seconds=7),
        started_at=now,
        updated_at=now,
    )
    # should report it connected, and how long since it heard the broker
    assert read("listener_connected") == 1
    assert 7 <= read("listener_last_event_age_seconds") < 30

    ListenerHeartbeat.objects.filter(pk=beat.pk).update(updated_at=now - timedelta(minutes=10))
    # should stop trusting a heartbeat that is no longer being written
    assert read("listener_connected") == 0
