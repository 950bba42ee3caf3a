"""Two writers, one order, one version: PostgreSQL decides, nothing is lost."""

from __future__ import annotations

import threading

import pytest
from django.db import DataError, connection, transaction

from orders.exceptions import VersionConflict
from orders.models import Order, OrderTransition
from orders.services import order_transition, order_update, order_writes_batched
from tests.factories import make_order


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("targets", [("submitting", "submitting"), ("submitting", "cancelled")])
def test_two_threads_from_the_same_version_exactly_one_wins(targets: tuple[str, str]) -> None:
    order = make_order()
    barrier = threading.Barrier(len(targets))
    outcomes: list[object] = [None] * len(targets)

    def writer(index: int, to_state: str) -> None:
        try:
            barrier.wait(timeout=5)
            outcomes[index] = order_transition(
                order_id=order.pk, to_state=to_state, trigger="api", expected_version=1
            )
        except Exception as exc:  # the test inspects whatever happened
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(i, t)) for i, t in enumerate(targets)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    winners = [o for o in outcomes if isinstance(o, Order)]
    conflicts = [o for o in outcomes if isinstance(o, VersionConflict)]
    # should let exactly one writer through and give the other the version conflict
    assert len(winners) == 1, outcomes
    assert len(conflicts) == 1, outcomes
    # should hand the loser the order as it now is, so it can decide again
    assert conflicts[0].current.version == 2
    stored = Order.objects.get(pk=order.pk)
    # should keep the winner's change and exactly one history row for it
    assert stored.version == 2
    assert stored.status == winners[0].status
    assert list(stored.transitions.values_list("version", flat=True)) == [2]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_batch_over_several_orders_writes_each_from_its_own_version_or_none() -> None:
    # The listener's batches write many orders in one UPDATE: each row still only from the
    # version it was locked at. One whose row moved underneath fails the whole batch, and
    # nothing of it is stored; without that, each order carries exactly its own writes.
    first, second, third = (make_order(size=5) for _ in range(3))

    def write_batch(*, move_underneath: Order | None) -> None:
        with transaction.atomic(), order_writes_batched() as batch:
            for order, size in ((first, 7), (second, 8), (third, 9)):
                locked = batch.hold(Order.objects.select_for_update().get(pk=order.pk))
                order_update(
                    order_id=order.pk, changes={"size": size}, trigger="api", locked=locked
                )
            if move_underneath is not None:
                Order.objects.filter(pk=move_underneath.pk).update(version=99)

    with pytest.raises(VersionConflict):
        write_batch(move_underneath=second)
    assert [Order.objects.get(pk=o.pk).size for o in (first, second, third)] == [5, 5, 5]

    write_batch(move_underneath=None)
    stored = [Order.objects.get(pk=o.pk) for o in (first, second, third)]
    assert [(o.size, o.version) for o in stored] == [(7, 2), (8, 2), (9, 2)]
    assert [o.transitions.count() for o in stored] == [1, 1, 1]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("orders", [1, 2], ids=["one order", "two orders in one statement"])
def test_a_write_that_loses_its_version_stores_no_audit_row_for_it(orders: int) -> None:
    # The audit rows go in with the UPDATE they record, in one statement: one that lost its
    # version condition must leave no history row behind, even in a transaction that goes on.
    mine, *others = (make_order(size=5) for _ in range(orders))

    with transaction.atomic():
        with pytest.raises(VersionConflict), order_writes_batched() as batch:
            for order in (mine, *others):
                locked = batch.hold(Order.objects.select_for_update().get(pk=order.pk))
                order_update(order_id=order.pk, changes={"size": 7}, trigger="api", locked=locked)
            Order.objects.filter(pk=mine.pk).update(version=99)  # another writer, in effect
        # should have stored nothing for the write that lost, in the same transaction
        assert not OrderTransition.objects.filter(order_id=mine.pk).exists()
        assert Order.objects.get(pk=mine.pk).size == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_value_an_order_column_cannot_hold_is_refused_never_cut() -> None:
    # An order write binds its values server-side: a string too long for its column must fail
    # the write, as it did when the values were quoted into the statement, and store nothing.
    order = make_order(size=5)
    with pytest.raises(DataError), transaction.atomic():
        order_update(order_id=order.pk, changes={"custom_tag": "X" * 65}, trigger="api")
    stored = Order.objects.get(pk=order.pk)
    assert (stored.custom_tag, stored.version) == (order.custom_tag, order.version)
    assert OrderTransition.objects.filter(order_id=order.pk).count() == 0
