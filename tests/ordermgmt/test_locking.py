"""Lock ordering and deadlock handling on the real PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import Account, Position
from common import metrics
from common.locking import Turn, TurnTimeout, retry_on_deadlock
from orders.locking import lock_in_order
from tests.factories import make_account, make_order
from tests.helpers import another_session

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def counter_value(counter) -> float:
    return counter._value.get()


def test_a_real_deadlock_is_detected_retried_and_resolved() -> None:
    first, second = make_account(), make_account()
    both_hold_one = threading.Barrier(2)
    attempts = {"a": 0, "b": 0}
    deadlocks_before = counter_value(metrics.deadlocks_total)

    def writer(name: str, lock_first: Account, lock_second: Account) -> None:
        @retry_on_deadlock
        @transaction.atomic
        def work() -> None:
            attempts[name] += 1
            Account.objects.select_for_update().get(pk=lock_first.pk)
            if attempts[name] == 1:
                both_hold_one.wait(timeout=10)  # each now holds one row and wants the other
            Account.objects.select_for_update().get(pk=lock_second.pk)
            Account.objects.filter(pk=lock_second.pk).update(name=f"written by {name}")

        try:
            work()
        finally:
            connection.close()

    # Deliberately the wrong order in one of them: what lock_in_order exists to prevent.
    threads = [
        threading.Thread(target=writer, args=("a", first, second)),
        threading.Thread(target=writer, args=("b", second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    # should have seen PostgreSQL abort one transaction, retried it, and finished both
    assert sorted(attempts.values()) == [1, 2]
    assert counter_value(metrics.deadlocks_total) == deadlocks_before + 1
    assert {a.name for a in Account.objects.filter(pk__in=[first.pk, second.pk])} == {
        "written by a",
        "written by b",
    }


def test_lock_in_order_takes_accounts_then_positions_then_orders() -> None:
    account = make_account()
    position = Position.objects.create(account=account, contract_id="CON.F.US.MNQ.Z26")
    orders = [make_order(account=account) for _ in range(3)]
    with CaptureQueriesContext(connection) as queries, transaction.atomic():
        locked = lock_in_order(orders=reversed(orders), positions=[position], accounts=[account])
    tables = [
        next(t for t in ("accounts_account", "accounts_position", "orders_order") if t in q["sql"])
        for q in queries.captured_queries
        if "FOR UPDATE" in q["sql"]
    ]
    # should lock the kinds in the hierarchy's order, and orders by primary key
    assert tables == ["accounts_account", "accounts_position", "orders_order"]
    assert [o.pk for o in locked["order"]] == sorted((o.pk for o in orders), key=str)


def test_lock_in_order_refuses_to_run_outside_a_transaction() -> None:
    # should insist on a transaction: a lock outside one is released at once
    with pytest.raises(RuntimeError):
        lock_in_order(accounts=[make_account()])


def test_waiters_for_one_turn_do_not_each_hold_a_database_connection() -> None:
    from common.locking import advisory_lock

    key = 424_242
    holding, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def holder() -> None:
        try:
            with advisory_lock(0x6F70, key, timeout=10):
                holding.set()
                release.wait(10)
        finally:
            connection.close()

    def waiter(index: int) -> None:
        try:
            Account.objects.exists()  # a request has used its connection before it waits
            with advisory_lock(0x6F70, key, timeout=10):
                finished.append(f"waiter {index}")
        finally:
            connection.close()

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    assert holding.wait(5)
    threads += [threading.Thread(target=waiter, args=(n,)) for n in range(10)]
    for thread in threads[1:]:
        thread.start()
    threading.Event().wait(0.5)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
        )
        waiting_in_postgres = cursor.fetchone()[0]
    release.set()
    for thread in threads:
        thread.join(timeout=20)
    # should keep at most one waiter of this process at PostgreSQL (holding a connection); the
    # others wait in memory, and every one of them gets its turn
    assert waiting_in_postgres <= 1
    assert len(finished) == 10


class TestWaitingForATurn:
    """A turn is waited for at PostgreSQL bounded by its own timeout, in one statement; the
    session's lock_timeout is the configured one again after, taken or timed out."""

    def configured_lock_timeout(self) -> str:
        return f"{settings.ORDER_MANAGEMENT.concurrency_control.lock_timeout_ms}ms"

    def lock_timeout_now(self) -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT setting || unit FROM pg_settings WHERE name = 'lock_timeout'")
            return cursor.fetchone()[0]

    def test_a_turn_taken_leaves_the_sessions_lock_timeout_as_configured(self) -> None:
        turn = Turn(0x6F70, 515_151)
        with CaptureQueriesContext(connection) as queries:
            assert turn.wait(timeout=30) is True
        try:
            # should wait in one statement, and leave the session's timeout as it was
            assert len(queries) == 1, [q["sql"] for q in queries.captured_queries]
            assert self.lock_timeout_now() == self.configured_lock_timeout()
        finally:
            turn.release()

    def test_a_turn_not_taken_in_time_raises_and_leaves_the_timeout_as_configured(self) -> None:
        key = 515_152
        with another_session() as other_process:
            other_process.execute("SELECT pg_advisory_lock(%s, %s)", (0x6F70, key))
            turn = Turn(0x6F70, key)
            # should give up after the turn's own timeout, not the session's (5 s)
            with pytest.raises(TurnTimeout):
                turn.wait(timeout=0.2)
            assert not turn.held
            assert self.lock_timeout_now() == self.configured_lock_timeout()
