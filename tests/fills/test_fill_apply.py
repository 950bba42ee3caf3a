"""Applying the broker's fills and order events: dedup, exact averages, voids, orphans,
overfills, ordering, and the races the spec names."""

from __future__ import annotations

import itertools
import random
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Position
from common.pipeline import sent_together
from fills.listener import apply_events
from fills.models import Fill
from fills.services import (
    FillOutcome,
    _fill_from,
    _orders_locked,
    average_price,
    fill_apply,
    fill_totals,
    order_event_apply,
)
from orders import wire as wire_maps
from orders.models import Order
from orders.services import BrokerEvidence, order_transition, order_update
from projectx.enums import OrderStatus as Broker
from projectx.models import Position as WirePosition
from tests.factories import make_account, make_order
from tests.fills.wire import broker_order, trade

_broker_ids = itertools.count(70_000)


def working_order(size: int = 5, state: str = "open"):
    """An order acknowledged by the broker, in `state`."""
    account = make_account()
    order = make_order(account=account, size=size)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    order = order_transition(
        order_id=order.pk,
        to_state="open",
        trigger="broker-rest",
        changes={"broker_order_id": next(_broker_ids)},
    )
    if state == "pending_cancel":
        order = order_transition(order_id=order.pk, to_state="pending_cancel", trigger="api")
    return order


def apply(order: Order, **kwargs):
    account = order.account
    return fill_apply(
        account=account,
        trade=trade(order_id=order.broker_order_id, account_id=account.broker_account_id, **kwargs),
        trigger="broker-stream",
    )


@pytest.mark.django_db
def test_the_specs_example_averages_to_101_30() -> None:
    order = working_order(size=5)
    for size, price in [(2, "101.25"), (1, "101.00"), (2, "101.50")]:
        apply(order, size=size, price=price)
    order.refresh_from_db()
    # should fill 5 at an exact weighted average of 101.30
    assert (order.status, order.filled_size, order.avg_fill_price) == (
        "filled",
        5,
        Decimal("101.30"),
    )


fills_strategy = st.lists(
    st.tuples(st.integers(1, 5), st.integers(80_000, 88_000)),  # size, price in ticks of 0.25
    min_size=1,
    max_size=12,
)


@pytest.mark.django_db
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(fills=fills_strategy, seed=st.integers(0, 2**16), duplicate_every=st.integers(1, 4))
def test_any_arrival_order_with_duplicates_ends_at_the_recomputed_average(
    fills: list[tuple[int, int]], seed: int, duplicate_every: int
) -> None:
    order = working_order(size=sum(size for size, _ in fills))
    deliveries = [
        {"trade_id": 1_000_000 + n, "size": size, "price": str(Decimal(ticks) / 4), "seconds": n}
        for n, (size, ticks) in enumerate(fills)
    ]
    deliveries += deliveries[::duplicate_every]  # replayed events
    random.Random(seed).shuffle(deliveries)  # out-of-order arrival
    outcomes = [apply(order, **delivery).outcome for delivery in deliveries]
    order.refresh_from_db()
    history = Fill.objects.filter(order=order)
    filled, notional = fill_totals(history)
    # should store each trade once and count every replay as a duplicate
    assert history.count() == len(fills)
    assert outcomes.count(FillOutcome.DUPLICATE) == len(deliveries) - len(fills)
    # should keep size and average equal to the recomputation from the fill history
    assert order.filled_size == filled == sum(size for size, _ in fills)
    assert order.avg_fill_price == average_price(notional, filled)
    assert order.status == "filled"


@pytest.mark.django_db
def test_a_duplicate_changes_nothing() -> None:
    order = working_order(size=5)
    apply(order, trade_id=42, size=2, price="100.00")
    version = Order.objects.get(pk=order.pk).version
    result = apply(order, trade_id=42, size=2, price="100.00")
    # should report the duplicate and leave the order untouched
    assert result.outcome == FillOutcome.DUPLICATE
    assert Order.objects.get(pk=order.pk).version == version


@pytest.mark.django_db
def test_a_voided_trade_is_taken_out_of_the_totals() -> None:
    order = working_order(size=5)
    apply(order, trade_id=1, size=2, price="100.00")
    apply(order, trade_id=2, size=1, price="101.00")
    result = apply(order, trade_id=2, size=1, price="101.00", voided=True)
    order.refresh_from_db()
    # should mark the fill voided and recompute size and average from what remains
    assert result.outcome == FillOutcome.VOIDED
    assert Fill.objects.get(broker_trade_id=2).voided
    assert (order.filled_size, order.avg_fill_price) == (2, Decimal("100.000000000"))


@pytest.mark.django_db
def test_an_overfill_is_kept_and_flagged_never_clamped() -> None:
    order = working_order(size=2)
    apply(order, size=2, price="100.00")
    apply(order, size=1, price="100.25")
    order.refresh_from_db()
    # should keep the broker's quantities and flag the order
    assert order.filled_size == 3
    assert order.overfilled
    assert order.status == "filled"


@pytest.mark.django_db(transaction=True)
def test_a_fill_before_its_order_is_known_is_attached_when_the_order_appears() -> None:
    account = make_account()
    broker_id = next(_broker_ids)
    early = fill_apply(
        account=account,
        trigger="broker-stream",
        trade=trade(
            order_id=broker_id, account_id=account.broker_account_id, size=1, price="100.00"
        ),
    )
    # should keep the fill with its broker order id
    assert early.outcome == FillOutcome.ORPHAN
    order = make_order(account=account, size=2)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    order_update(order_id=order.pk, changes={"broker_order_id": broker_id}, trigger="broker-stream")
    order.refresh_from_db()
    # should attach it once the order has its broker id, and count it
    assert Fill.objects.get(broker_trade_id=early.fill.broker_trade_id).order_id == order.pk
    assert (order.filled_size, order.status) == (1, "partially_filled")


@pytest.mark.postgres  # counts row locks: SQLite takes none (no FOR UPDATE)
@pytest.mark.django_db(transaction=True)
def test_an_order_with_no_fill_ahead_is_not_locked_again_to_look_for_one() -> None:
    account = make_account()
    order = make_order(account=account, size=2)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    with CaptureQueriesContext(connection) as queries:
        order_transition(
            order_id=order.pk,
            to_state="open",
            trigger="broker-rest",
            changes={"broker_order_id": next(_broker_ids)},
        )
    locks = [q["sql"] for q in queries if "FOR UPDATE" in q["sql"]]
    # should lock the order once, for its own change: with no fill waiting for its broker id
    # there is nothing to attach, and no second transaction after every placement answer
    assert len(locks) == 1, locks
    # should still have looked: a fill that came first is attached (the test above)
    assert any('"fills_fill"' in q["sql"] for q in queries)


@pytest.mark.django_db
def test_a_filled_status_waits_for_its_fills() -> None:
    order = working_order(size=2)
    account = order.account
    result = order_event_apply(
        account=account,
        trigger="broker-stream",
        wire=broker_order(
            order_id=order.broker_order_id,
            account_id=account.broker_account_id,
            status=Broker.FILLED,
            fill_volume=2,
            seconds=5,
        ),
    )
    # should not call the order filled before holding the fills
    assert result.order.status == "open"
    assert result.fills_missing
    assert result.order.broker_fill_volume == 2
    apply(order, size=1, price="100.00")
    apply(order, size=1, price="100.50")
    # should become filled when the fills arrive
    assert Order.objects.get(pk=order.pk).status == "filled"


@pytest.mark.django_db
def test_an_older_order_event_never_moves_the_state_back() -> None:
    order = working_order(size=2)
    account = order.account

    def event(status: int, seconds: float):
        return order_event_apply(
            account=account,
            trigger="broker-stream",
            wire=broker_order(
                order_id=order.broker_order_id,
                account_id=account.broker_account_id,
                status=status,
                seconds=seconds,
            ),
        )

    event(Broker.CANCELLED, seconds=10)
    late = event(Broker.OPEN, seconds=5)
    # should record the late event as stale and stay cancelled
    assert late.outcome == BrokerEvidence.STALE
    assert Order.objects.get(pk=order.pk).status == "cancelled"


@pytest.mark.django_db
@pytest.mark.parametrize("state", ["pending_cancel", "cancelled"])
def test_a_fill_that_races_a_cancel_ends_filled(state: str) -> None:
    order = working_order(size=2, state="pending_cancel")
    if state == "cancelled":
        order_transition(order_id=order.pk, to_state="cancelled", trigger="broker-stream")
    apply(order, size=2, price="100.00")
    order = Order.objects.get(pk=order.pk)
    # should end filled because the broker filled it
    assert order.status == "filled"
    if state == "cancelled":
        # should record the correction of the terminal state
        assert order.transitions.latest("version").is_correction


@pytest.mark.django_db
def test_a_partial_fill_before_a_cancel_stays_cancelled_with_its_fill() -> None:
    order = working_order(size=2, state="pending_cancel")
    order_transition(order_id=order.pk, to_state="cancelled", trigger="broker-stream")
    apply(order, size=1, price="100.00")
    order = Order.objects.get(pk=order.pk)
    # should keep the fill and the cancelled remainder
    assert (order.status, order.filled_size) == ("cancelled", 1)


@pytest.mark.django_db
def test_an_order_placed_outside_the_system_is_mirrored() -> None:
    account = make_account()
    result = order_event_apply(
        account=account,
        trigger="broker-stream",
        wire=broker_order(order_id=4242, account_id=account.broker_account_id, status=Broker.OPEN),
    )
    # should create a local order for it, so its fills have an order to belong to
    assert result.order.broker_order_id == 4242
    assert result.order.status == "open"
    assert result.order.created_by == "broker"


@pytest.mark.django_db
def test_our_own_order_acknowledged_on_the_stream_first_is_found_by_custom_tag() -> None:
    account = make_account()
    order = make_order(account=account, custom_tag="om-abc")
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    result = order_event_apply(
        account=account,
        trigger="broker-stream",
        wire=broker_order(
            order_id=777,
            account_id=account.broker_account_id,
            status=Broker.OPEN,
            custom_tag="om-abc",
        ),
    )
    # should match the event to our order by its tag and take the broker's id
    assert result.order.pk == order.pk
    assert result.order.broker_order_id == 777
    assert Order.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_orders_a_batch_locks_read_exactly_as_the_orm_reads_them() -> None:
    # A batch builds its locked orders from the raw row (no ORM query) and writes them back
    # from memory: every field must come out as the ORM would give it, or a batch would
    # store a value the ORM never read (a JSON column as text, a naive time, a str for a UUID).
    order = working_order(size=7)
    order_update(
        order_id=order.pk,
        changes={"filled_size": 2, "avg_fill_price": Decimal("21000.125"), "overfilled": False},
        trigger="broker-stream",
    )
    tagged = make_order(account=order.account, custom_tag="bot-1:abc", size=3)
    with transaction.atomic():
        with sent_together():  # as a batch sends it: with its account and position writes
            read = _orders_locked(order.account, {order.broker_order_id}, {"bot-1:abc"})
        locked = read()
    expected = [Order.objects.get(pk=order.pk), Order.objects.get(pk=tagged.pk)]
    expected.sort(key=lambda o: o.pk)
    for got, want in zip(locked, expected, strict=True):
        for field in Order._meta.concrete_fields:
            ours, theirs = getattr(got, field.attname), getattr(want, field.attname)
            assert (type(ours), ours) == (type(theirs), theirs), field.name


@pytest.mark.django_db
@pytest.mark.parametrize("orphan", [False, True])
def test_a_fill_built_from_a_trade_equals_the_orms_and_reads_its_relations_without_a_query(
    orphan: bool,
) -> None:
    order = working_order()
    account = order.account
    wire = trade(
        order_id=order.broker_order_id,
        account_id=account.broker_account_id,
        size=2,
        price=Decimal("21000.25"),
    )
    owner = None if orphan else order
    built = _fill_from(account, wire, owner)
    expected = Fill(
        account=account,
        order=owner,
        broker_trade_id=wire.id,
        broker_order_id=wire.order_id,
        contract_id=wire.contract_id,
        side=wire_maps.from_wire_side(wire.side),
        size=wire.size,
        price=wire.price,
        fees=wire.fees or Decimal(0),
        profit_and_loss=wire.profit_and_loss,
        voided=wire.voided,
        broker_ts=wire.creation_timestamp,
    )
    for field in Fill._meta.concrete_fields:
        ours, theirs = getattr(built, field.attname), getattr(expected, field.attname)
        assert (type(ours), ours) == (type(theirs), theirs), field.name
    assert built._state.adding is True
    with CaptureQueriesContext(connection) as queries:
        assert built.account is account
        assert built.order is owner
    assert len(queries) == 0
    built.save()  # and it stores like one built by the ORM
    stored = Fill.objects.get(pk=built.pk)
    assert (stored.order_id, stored.size, stored.received_at is not None) == (
        owner and owner.pk,
        2,
        True,
    )


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_position_the_database_refuses_fails_alone_and_its_batchs_fill_is_kept() -> None:
    # A batch sends its account and position writes together with its order locks, answered
    # in one round trip (common.pipeline): a write the database refuses there must still fail
    # the batch, which is then applied event by event, and nothing but that event is lost.
    order = working_order(size=5)
    account = order.account
    fill = trade(
        order_id=order.broker_order_id,
        account_id=account.broker_account_id,
        size=2,
        price="21000.25",
    )
    refused = WirePosition(
        id=9,
        account_id=account.broker_account_id,
        contract_id="X" * 65,  # longer than the column: PostgreSQL refuses the row
        creation_timestamp=fill.creation_timestamp,
        type=1,
        size=2,
        average_price=Decimal("21000.25"),
    )
    outcomes = apply_events([("trade", fill, None), ("position", refused, None)], "broker-stream")
    assert outcomes == ["applied", "error"]
    order.refresh_from_db()
    assert (order.filled_size, order.status) == (2, "partially_filled")
    assert not Position.objects.filter(account=account).exists()
