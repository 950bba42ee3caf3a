"""manage.py archive_orders on the real PostgreSQL: exactly the right rows move, whole batches
at a time, and an interrupted or repeated run leaves nothing half-moved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from fills.models import ArchivedFill, Fill
from ops.archival import orders_archive
from orders.models import (
    ArchivedOrder,
    ArchivedOrderTransition,
    IdempotencyRecord,
    Order,
    OrderTransition,
)
from tests.factories import make_account
from tests.ops.builders import aged_order

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres


class TerminalStringIO(StringIO):
    def isatty(self) -> bool:
        return True


def archive(*args: str) -> str:
    out = StringIO()
    call_command("archive_orders", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def hot_ids() -> set:
    return set(Order.objects.values_list("pk", flat=True))


def archived_ids() -> set:
    return set(ArchivedOrder.objects.values_list("pk", flat=True))


def command_env() -> dict[str, str]:
    """The environment for a real `manage.py` process on this test database."""
    db = connection.settings_dict
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ordermgmt.settings",
        "DATABASE_URL": f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:"
        f"{db['PORT'] or 5432}/{db['NAME']}",
        "DJANGO_SECRET_KEY": "tests",
        "LOG_LEVEL": "WARNING",
    }


def wait_for(condition, timeout: float = 20.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {message}")


@pytest.mark.django_db
class TestWhatMoves:
    def test_it_moves_exactly_the_old_terminal_orders_with_their_fills_and_transitions(
        self,
    ) -> None:
        account = make_account()
        old = [aged_order(account, status=s) for s in ("filled", "cancelled", "failed")]
        old_with_expired_key = aged_order(
            account, status="rejected", key="bot-old", key_expires_in=timedelta(hours=-1)
        )
        recent = aged_order(account, status="filled", days_old=5)
        working = aged_order(account, status="open", days_old=90)
        partially = aged_order(account, status="partially_filled", days_old=90)
        live_key = aged_order(account, status="cancelled", key="bot-live")
        moving = [*old, old_with_expired_key]
        staying = [recent, working, partially, live_key]
        before = {o.pk: Order.objects.filter(pk=o.pk).values().get() for o in moving}
        transitions_before = {
            o.pk: list(OrderTransition.objects.filter(order=o).values_list("id", "to_state"))
            for o in moving
        }
        fills_before = {
            o.pk: set(Fill.objects.filter(order=o).values_list("id", "price")) for o in moving
        }

        output = archive()

        # should move the old terminal orders, and only them
        assert archived_ids() == {o.pk for o in moving}
        assert hot_ids() == {o.pk for o in staying}
        # should copy every column as it was, and stamp when it was archived
        for order in moving:
            row = ArchivedOrder.objects.filter(pk=order.pk).values().get()
            assert row.pop("archived_at") is not None
            assert row == before[order.pk]
        # should move each order's transitions and fills with it, keeping their ids
        for order in moving:
            assert (
                list(
                    ArchivedOrderTransition.objects.filter(order_id=order.pk)
                    .order_by("version")
                    .values_list("id", "to_state")
                )
                == transitions_before[order.pk]
            )
            assert (
                set(ArchivedFill.objects.filter(order_id=order.pk).values_list("id", "price"))
                == fills_before[order.pk]
            )
        assert not OrderTransition.objects.filter(order_id__in=[o.pk for o in moving]).exists()
        assert not Fill.objects.filter(order_id__in=[o.pk for o in moving]).exists()
        # should leave the staying orders' history where it was
        assert OrderTransition.objects.filter(order=working).count() == 2
        # should remove the expired key's record with its order, and keep the live one
        assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["bot-live"]
        # should say what it did, in plain counts
        assert "archived 4 order(s) older than 30 day(s), with 11 transition(s) and 4 fill(s)" in (
            output
        )
        assert "kept 1 order(s) whose idempotency key is still live" in output

    def test_it_deletes_archived_orders_past_the_deletion_retention(self) -> None:
        account = make_account()
        ancient = aged_order(account, days_old=400)
        old = aged_order(account, days_old=40)

        output = archive()

        # should archive both, then delete the one past 365 days with its history
        assert archived_ids() == {old.pk}
        assert not ArchivedOrderTransition.objects.filter(order_id=ancient.pk).exists()
        assert not ArchivedFill.objects.filter(order_id=ancient.pk).exists()
        assert hot_ids() == set()
        assert "deleted 1 archived order(s) older than 365 day(s), with 3 transition(s)" in output

    def test_a_dry_run_changes_nothing_and_says_what_it_would_do(self) -> None:
        account = make_account()
        orders = [aged_order(account) for _ in range(3)]
        aged_order(account, days_old=400)

        output = archive("--dry-run")

        # should leave every table as it was
        assert hot_ids() >= {o.pk for o in orders}
        assert archived_ids() == set()
        # should count what a real run would move and delete
        assert "would archive 4 order(s)" in output
        assert "with 12 transition(s) and 4 fill(s)" in output
        assert "would delete 1 archived order(s)" in output

    def test_a_second_run_finds_nothing_left_to_do(self) -> None:
        account = make_account()
        orders = [aged_order(account) for _ in range(3)]
        archive()

        output = archive()

        # should move nothing twice and lose nothing
        assert "archived 0 order(s)" in output
        assert archived_ids() == {o.pk for o in orders}
        assert ArchivedOrderTransition.objects.count() == 9

    def test_it_works_in_batches_oldest_first(self) -> None:
        account = make_account()
        orders = [aged_order(account, days_old=100 - n) for n in range(5)]
        seen: list[int] = []

        stopped = orders_archive(
            batch_size=2,
            on_batch=lambda batch: seen.append(batch.orders),
            should_stop=lambda: len(seen) == 1,
        )
        # should commit a whole batch of the two oldest orders, then stop when asked
        assert stopped.interrupted
        assert archived_ids() == {orders[0].pk, orders[1].pk}

        finished = orders_archive(batch_size=2, on_batch=lambda batch: seen.append(batch.orders))
        # should continue in batches of at most two, one commit each
        assert seen == [2, 2, 1]
        assert finished.batches == 2
        assert archived_ids() == {o.pk for o in orders}


@pytest.mark.django_db
def test_the_progress_bar_shows_on_a_terminal_and_not_in_cron() -> None:
    account = make_account()
    for _ in range(3):
        aged_order(account)
    terminal = TerminalStringIO()
    call_command("archive_orders", "--batch-size", "1", stdout=terminal, stderr=StringIO())
    # should redraw a bar in place on a terminal
    assert "\rarchiving [" in terminal.getvalue()
    assert "3/3" in terminal.getvalue()

    aged_order(account)
    cron = StringIO()
    call_command("archive_orders", stdout=cron, stderr=StringIO())
    # should print only plain counts when nobody watches
    assert "\r" not in cron.getvalue()
    assert "archived 1 order(s)" in cron.getvalue()


@pytest.mark.django_db
def test_a_batch_that_fails_midway_is_rolled_back_whole_and_the_run_goes_on() -> None:
    account = make_account()
    orders = [aged_order(account, days_old=100 - n) for n in range(4)]
    doomed_batch = {orders[2].pk, orders[3].pk}
    # A real database error in the middle of the second batch: after its orders, transitions
    # and fills were copied, when its fills are deleted.
    # The order's id is written into the function's body (a parameter cannot be bound inside
    # it), and the two statements go one at a time (the server binds parameters, one command a
    # statement).
    doomed = str(uuid.UUID(str(orders[3].pk)))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            CREATE FUNCTION test_refuse_fill_delete() RETURNS trigger AS $$
            BEGIN
                IF OLD.order_id = '{doomed}'::uuid THEN RAISE EXCEPTION 'disk on fire'; END IF;
                RETURN OLD;
            END $$ LANGUAGE plpgsql
            """
        )
        cursor.execute(
            "CREATE TRIGGER test_refuse_fill_delete BEFORE DELETE ON fills_fill"
            " FOR EACH ROW EXECUTE FUNCTION test_refuse_fill_delete()"
        )
    errors = StringIO()
    with pytest.raises(CommandError, match="1 batch"):
        call_command("archive_orders", "--batch-size", "2", stdout=StringIO(), stderr=errors)

    # should have committed the first batch and rolled the failed one back entirely
    assert archived_ids() == {orders[0].pk, orders[1].pk}
    assert hot_ids() == doomed_batch
    assert OrderTransition.objects.filter(order_id__in=doomed_batch).count() == 6
    assert not ArchivedOrderTransition.objects.filter(order_id__in=doomed_batch).exists()
    assert not ArchivedFill.objects.filter(order_id__in=doomed_batch).exists()
    # should name the failure
    assert "disk on fire" in errors.getvalue()

    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER test_refuse_fill_delete ON fills_fill")
    archive()
    # should finish the job on the next run
    assert archived_ids() == {o.pk for o in orders}
    assert hot_ids() == set()


@pytest.mark.django_db(transaction=True)
def test_a_run_killed_mid_batch_leaves_every_order_in_exactly_one_place() -> None:
    account = make_account()
    orders = {aged_order(account).pk for _ in range(6)}
    # Hold the first batch in the middle (copied, not yet deleted) long enough to kill it.
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE FUNCTION test_slow_fill_delete() RETURNS trigger AS $$
            BEGIN PERFORM pg_sleep(30); RETURN NULL; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER test_slow_fill_delete BEFORE DELETE ON fills_fill
                FOR EACH STATEMENT EXECUTE FUNCTION test_slow_fill_delete();
            """
        )
    process = subprocess.Popen(
        [sys.executable, "manage.py", "archive_orders", "--batch-size", "4"],
        cwd=ROOT,
        env=command_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def archiver_backend() -> int | None:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                    "AND application_name = 'ordermgmt archive_orders'"
                )
                row = cursor.fetchone()
            return row[0] if row else None

        wait_for(lambda: archiver_backend() is not None, message="the archiver mid-batch")
        backend = archiver_backend()
        process.kill()
        process.wait(timeout=10)
        # The server notices a vanished client only at its next write; end the session now.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [backend])
        wait_for(lambda: archiver_backend() is None, message="the session to end")
    finally:
        if process.poll() is None:
            process.kill()
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER IF EXISTS test_slow_fill_delete ON fills_fill")

    # should have rolled the killed batch back: every order hot, nothing half-archived
    assert hot_ids() == orders
    assert archived_ids() == set()
    assert ArchivedOrderTransition.objects.count() == ArchivedFill.objects.count() == 0
    assert OrderTransition.objects.count() == 18

    output = archive()
    # should move everything on the next run, exactly once
    assert "archived 6 order(s)" in output
    assert archived_ids() == orders
    assert hot_ids() == set()
    assert ArchivedOrderTransition.objects.count() == 18
    assert ArchivedFill.objects.count() == 6


@pytest.mark.django_db(transaction=True)
def test_sigterm_stops_after_the_current_batch_and_the_next_run_continues() -> None:
    account = make_account()
    orders = {aged_order(account).pk for _ in range(9)}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "archive_orders", "--batch-size", "3", "--sleep", "1"],
        cwd=ROOT,
        env=command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(lambda: ArchivedOrder.objects.exists(), message="the first batch")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()

    archived = archived_ids()
    # should stop cleanly between batches, say so, and leave only whole batches archived
    assert process.returncode == 0, output
    assert "interrupted" in output
    assert len(archived) in {3, 6}
    assert archived | hot_ids() == orders
    assert ArchivedOrderTransition.objects.count() == 3 * len(archived)

    archive()
    # should pick up where it stopped
    assert archived_ids() == orders
