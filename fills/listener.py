"""The user-hub listener: the broker's live events into the services, plus catch-up and sweeps.

The async side (`GatewayListener`) keeps the hub connection, asks PostgreSQL which accounts it
leads, and hands every event to a plain synchronous function (`apply_event`) on one database
thread, in the order the broker sent them. The synchronous functions are the testable units;
the command `listen_gateway` is a thin loop around this class.

Several listeners may run at once (more machines, a restart overlapping the old process).
Correctness never depends on that being rare: fills are unique per (account, trade id), order
events are applied under the order's row lock in server-time order. On top of that, each account
has one leader at a time: a PostgreSQL session advisory lock held on a connection of the
listener's own, released by PostgreSQL the moment the process dies, so a standby takes over
within one `leadership_poll` and catches up from the account's checkpoint.

Supervision. Every long-running task of the listener (the applier, the leadership follower,
the sweeper, the heartbeat and the recovery catch-up) runs under a `TaskSupervisor`: when one
raises, the failure is logged with its traceback and counted in
`listener_task_restarts_total{task}`, the Django connection of the thread is reset (the next
attempt reconnects), and the task starts again after a jittered exponential backoff (0.5 s
doubling, capped at 10 s). No task is ever lost silently, whatever the database does.

A database outage. A batch the database cannot take (the connection is gone, the COMMIT
fails) is never half-applied: `apply_events` raises, the transaction rolls back, and the
applier keeps the batch and applies it again, whole and first, once the database answers
(applying is idempotent: fills are unique per trade id, stale order events are ignored). After
that recovery, and after any batch in which an event failed alone, a REST catch-up from the
account checkpoint fetches what the broker holds, for anything the stream did not give us.
The leadership session is probed before each use: when PostgreSQL ended it, its advisory locks
are gone, so the listener takes them again (or stands by) and resubscribes.

Health. The heartbeat runs on a thread of its own, so it is written even while the applier's
database thread is blocked. Its `applied_at` means "applied events recently or had nothing to
apply": it is the last batch commit, or now when the queue is empty and nothing is pending. A
listener whose applier fails or hangs therefore goes stale there while it still hears the
broker, and /readyz answers 503 saying the listener is not applying events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, Min, Q
from django.utils import timezone

from accounts import services as account_services
from accounts.broker_session import SharedSessionClient
from accounts.models import Account
from common import metrics
from common.pipeline import Sent
from common.supervision import TaskSupervisor
from common.transactions import applied_whole
from fills import services
from fills.models import ListenerHeartbeat
from orders import brackets, fill_timeouts
from orders.lifecycle import TERMINAL
from orders.models import Order, TransitionTrigger
from projectx.client import ProjectXClient
from projectx.config import GatewayConfig
from projectx.enums import EventAction
from projectx.hub import UserHubClient
from projectx.models import Order as WireOrder
from projectx.models import Position as WirePosition
from projectx.models import Trade as WireTrade

logger = logging.getLogger(__name__)

ADVISORY_LOCK_NAMESPACE = 0x6F6D  # "om": keeps our lock keys apart from other users of the DB


# --- The synchronous units ----------------------------------------------------------------


def _account(broker_account_id: int) -> Account | None:
    return Account.objects.filter(broker_account_id=broker_account_id).first()


Event = tuple[str, Any, EventAction | None]  # kind, typed payload, envelope action

# Events per transaction at most. The applier takes whatever is queued up to this, so under a
# light load a batch is one event (no added latency) and under a burst the round trips and the
# commit are shared by hundreds of events (a fill comes with its order, position and account
# events: four each).
MAX_BATCH = 1000
# The longest the applier keeps the database thread while events keep coming (it is shared
# with the leadership and the catch-up).
APPLIER_TURN_SECONDS = 0.25


def _apply_one(
    kind: str, payload: Any, action: EventAction | None, trigger: str, accounts: dict[int, Account]
) -> str:
    if kind == "account":
        account_services.account_apply(wire=payload)
        return "applied"
    account = _known_account(payload.account_id, accounts)
    if account is None:
        return "ignored"  # not an account we trade
    if kind == "trade":
        return services.fill_apply(account=account, trade=payload, trigger=trigger).outcome
    if kind == "order":
        return services.order_event_apply(account=account, wire=payload, trigger=trigger).outcome
    if kind == "position":
        return account_services.position_apply(
            account=account, wire=payload, closed=action == EventAction.DELETE
        )
    raise ValueError(f"unknown event kind {kind!r}")


def apply_events(
    events: list[Event], trigger: str, accounts: dict[int, Account] | None = None
) -> list[str]:
    """Apply a batch of broker events, in order, in one transaction; one outcome per event.

    Set-wise (`_apply_setwise`): every event goes through the same services as alone, but the
    batch shares its round trips (its orders locked in one SELECT, its fills stored in one
    INSERT, one UPDATE per order and the audit rows in one INSERT, one desk message per order),
    and one commit. Should the batch fail as a whole for a reason other than the database
    going away, it is applied again event by event (`_apply_one_by_one`), where an event that
    fails is rolled back alone, logged and counted, and the catch-up re-applies it later.

    When the transaction itself is lost (the connection is gone, or the COMMIT fails) this
    raises instead: nothing of the batch is stored, and the caller applies the whole batch
    again once the database answers.
    """
    close_old_connections()
    accounts = accounts if accounts is not None else {}
    try:
        with services.backfill_deferred(), transaction.atomic(), applied_whole():
            outcomes = _apply_setwise(events, trigger, accounts)
    except Exception:
        if not connection.is_usable():
            raise
        logger.warning(
            "a batch of %d events could not be applied together; applying them one by one",
            len(events),
            exc_info=True,
        )
        return _apply_one_by_one(events, trigger, accounts)
    _observe_fill_latency(events, outcomes)
    return outcomes


def _apply_setwise(events: list[Event], trigger: str, accounts: dict[int, Account]) -> list[str]:
    outcomes: list[str | None] = [None] * len(events)
    groups: dict[int, services.AccountEvents] = {}
    newest_position: dict[tuple[int, str], int] = {}
    newest_account: dict[int, int] = {}
    for index, (kind, payload, _) in enumerate(events):
        if kind == "account":
            # The broker's account figures are absolute and carry no time of their own: the
            # last event of the batch says all the others said.
            previous_account = newest_account.get(payload.id)
            if previous_account is not None:
                outcomes[previous_account] = "coalesced"
            newest_account[payload.id] = index
            continue
        account = _known_account(payload.account_id, accounts)
        if account is None:
            outcomes[index] = "ignored"  # not an account we trade
            continue
        group = groups.setdefault(account.pk, services.AccountEvents(account))
        if kind == "trade":
            group.trades.append(payload)
        elif kind == "order":
            group.orders.append(payload)
        elif kind == "position":
            # Positions are the broker's net figures, newest wins: only the newest event per
            # contract is written. First, before any order is locked (Account -> Position ->
            # Order).
            key = (account.pk, payload.contract_id)
            previous = newest_position.get(key)
            if previous is None or (
                payload.creation_timestamp >= events[previous][1].creation_timestamp
            ):
                if previous is not None:
                    outcomes[previous] = "coalesced"
                newest_position[key] = index
            else:
                outcomes[index] = "coalesced"
        else:
            raise ValueError(f"unknown event kind {kind!r}")

    def send_first() -> Sent:
        # Accounts, then positions, then (in the batch) orders: the lock hierarchy. Sent with
        # the batch's order locks, answered together (one round trip where there were four).
        sent = [
            (index, _send_one(events[index], accounts))
            for index in sorted([*newest_account.values(), *newest_position.values()])
        ]
        return lambda: [(index, outcome()) for index, outcome in sent]

    with services.events_batched(list(groups.values()), send_first=send_first) as first:
        for index, outcome in first:
            outcomes[index] = outcome
        for index, (kind, payload, action) in enumerate(events):
            if outcomes[index] is None:
                outcomes[index] = _apply_one(kind, payload, action, trigger, accounts)
    return [outcome or "ignored" for outcome in outcomes]


def _send_one(event: Event, accounts: dict[int, Account]) -> Sent:
    """An account or position event's write, sent (`common.pipeline`): the function returned
    reads its outcome. Its account is known (`_apply_setwise` looked it up)."""
    kind, payload, action = event
    if kind == "account":
        account_services.account_apply(wire=payload)
        return lambda: "applied"
    if kind == "position":
        account = accounts[payload.account_id]
        return account_services.position_apply_sent(
            account=account, wire=payload, closed=action == EventAction.DELETE
        )
    raise ValueError(f"{kind!r} events are not sent ahead")


def _known_account(broker_account_id: int, accounts: dict[int, Account]) -> Account | None:
    account = accounts.get(broker_account_id)
    if account is None:
        account = _account(broker_account_id)
        if account is not None:
            accounts[broker_account_id] = account
    return account


def _apply_one_by_one(events: list[Event], trigger: str, accounts: dict[int, Account]) -> list[str]:
    close_old_connections()
    outcomes: list[str] = []
    with services.backfill_deferred(), transaction.atomic():
        for kind, payload, action in events:
            # Every service is its own atomic block (a savepoint here): one that fails is
            # rolled back alone and the batch goes on.
            try:
                outcomes.append(_apply_one(kind, payload, action, trigger, accounts))
            except Exception:
                if connection.needs_rollback or not connection.is_usable():
                    # The transaction is lost (the savepoint could not be rolled back, or the
                    # connection is gone): the batch will not commit, and going on would only
                    # report events as applied that are not.
                    raise
                logger.exception("could not apply %s event %r", kind, payload)
                outcomes.append("error")
    _observe_fill_latency(events, outcomes)
    return outcomes


def _observe_fill_latency(events: list[Event], outcomes: list[str]) -> None:
    """Broker time of each applied fill to now, just after the batch committed."""
    committed_at = datetime.now(UTC)
    for (kind, payload, _), outcome in zip(events, outcomes, strict=True):
        if kind == "trade" and outcome == "applied":
            # Clamped: the broker's clock may run a little ahead of ours.
            latency = (committed_at - payload.creation_timestamp).total_seconds()
            metrics.fill_processing_seconds.observe(max(latency, 0.0))


def apply_event(kind: str, payload: Any, action: EventAction | None, trigger: str) -> str:
    """Apply one broker event through the services; returns the outcome for counting."""
    return apply_events([(kind, payload, action)], trigger)[0]


def catch_up_start(account: Account, margin: timedelta) -> datetime:
    """Where a REST catch-up starts: the checkpoint, or the oldest order still working, minus
    the margin; never later than now minus the margin."""
    candidates = [timezone.now()]
    if account.stream_checkpoint is not None:
        candidates.append(account.stream_checkpoint)
    oldest_working = (
        Order.objects.filter(account=account)
        .exclude(status__in=TERMINAL)
        .aggregate(oldest=Min("created_at"))["oldest"]
    )
    if oldest_working is not None:
        candidates.append(oldest_working)
    return min(candidates) - margin


def apply_catch_up(
    account_id: int,
    orders: list[WireOrder],
    trades: list[WireTrade],
    positions: list[WirePosition],
    as_of: datetime,
) -> Counter[str]:
    """Apply what the REST catch-up fetched, through the same functions as live events."""
    close_old_connections()
    account = _account(account_id)
    outcomes: Counter[str] = Counter()
    if account is None:
        return outcomes
    # The catch-up fetched the trades itself and applies them right after the orders, in
    # batches as the live events are (one transaction, shared round trips, per batch).
    events: list[Event] = [
        ("order", wire, None)
        for wire in sorted(orders, key=lambda o: o.update_timestamp or o.creation_timestamp)
    ] + [("trade", trade, None) for trade in sorted(trades, key=lambda t: t.creation_timestamp)]
    known = {account.broker_account_id: account}
    for start in range(0, len(events), MAX_BATCH):
        chunk = events[start : start + MAX_BATCH]
        for (kind, _, _), outcome in zip(
            chunk, apply_events(chunk, TransitionTrigger.BROKER_REST, known), strict=True
        ):
            outcomes[f"{'fill' if kind == 'trade' else kind}:{outcome}"] += 1
    account_services.positions_reconcile(account=account, open_positions=positions, as_of=as_of)
    newest = [as_of - timedelta(seconds=1)]
    Account.objects.filter(pk=account.pk).filter(
        Q(stream_checkpoint__isnull=True) | Q(stream_checkpoint__lt=newest[0])
    ).update(stream_checkpoint=newest[0])
    return outcomes


BACKFILL_RETRY_SECONDS = 30.0


def sweep(
    *,
    now: datetime,
    checkpoints: dict[int, datetime],
    backfill_attempts: dict[object, datetime] | None = None,
) -> Counter[str]:
    """The periodic work: checkpoints, orphan fills, missing fills, completion timeouts.

    `backfill_attempts` remembers when each order was last backfilled, so an order whose fills
    the broker cannot show us costs one Trade/search per BACKFILL_RETRY_SECONDS, not per sweep.
    """
    attempts = backfill_attempts if backfill_attempts is not None else {}
    close_old_connections()
    done: Counter[str] = Counter()
    for broker_account_id, newest in checkpoints.items():
        Account.objects.filter(broker_account_id=broker_account_id).filter(
            Q(stream_checkpoint__isnull=True) | Q(stream_checkpoint__lt=newest)
        ).update(stream_checkpoint=newest)
    done["orphans_attached"] = services.fills_attach_all_orphans()
    grace = now - timedelta(seconds=2)
    behind = Order.objects.filter(
        broker_fill_volume__gt=F("filled_size"),
        updated_at__lt=grace,
        broker_order_id__isnull=False,
    ).values_list("pk", flat=True)[:20]
    for order_id in behind:
        last = attempts.get(order_id)
        if last is not None and (now - last).total_seconds() < BACKFILL_RETRY_SECONDS:
            continue
        attempts[order_id] = now
        try:
            done["backfilled"] += services.fills_backfill(order_id=order_id)
        except Exception:
            logger.warning("backfill of order %s failed", order_id, exc_info=True)
    action = settings.ORDER_MANAGEMENT.partial_fill_tracking.timeout_action
    for order in fill_timeouts.orders_past_fill_timeout(now=now):
        try:
            handled = fill_timeouts.order_handle_fill_timeout(order=order, action=action, now=now)
            done[f"timeout:{handled}"] += 1
        except Exception:
            logger.warning("fill timeout action for order %s failed", order.pk, exc_info=True)
    return done


def _guard_brackets(**kwargs: Any) -> Counter[str]:
    """One bracket guard pass on the guard's thread; its connection is given back after each
    pass, so a stopped listener leaves none open on a thread nobody will close it on."""
    try:
        return brackets.brackets_guard(**kwargs)
    finally:
        connection.close()


def _close_connection() -> None:
    # Looked up in the calling thread: Django's connections are per thread.
    connection.close()


def _reset_connection() -> None:
    """After a database error: drop this thread's connection, so the next unit reconnects
    instead of reusing a session PostgreSQL already ended."""
    with contextlib.suppress(DatabaseError):
        connection.close()


def write_heartbeat(name: str, started_at: datetime, **fields: Any) -> None:
    close_old_connections()
    ListenerHeartbeat.objects.update_or_create(
        name=name, defaults={**fields, "started_at": started_at, "updated_at": timezone.now()}
    )


# --- Leadership ------------------------------------------------------------------------------


class Leadership:
    """Per-account leadership through PostgreSQL session advisory locks.

    The locks live on a connection of their own (not Django's, which may be closed or pooled
    between events), so they last exactly as long as this process. On SQLite (the embedded
    default, one process) every account is led.
    """

    def __init__(self) -> None:
        self._conn: psycopg.Connection | None = None
        self.led: set[int] = set()

    def _connect(self) -> psycopg.Connection | None:
        if connection.vendor != "postgresql":
            return None
        if self._conn is not None and not self._conn.closed:
            try:
                # psycopg notices a session PostgreSQL ended only when it next uses it; with
                # the session went every lock we held, so we must not go on believing we lead.
                self._conn.execute("SELECT 1")
            except psycopg.Error:
                logger.warning("the leadership session was lost; taking the locks again")
                self.release()
        if self._conn is None or self._conn.closed:
            params = connection.get_connection_params()
            params.pop("cursor_factory", None)
            params.pop("context", None)
            params.pop("pool", None)
            self._conn = psycopg.connect(**params, autocommit=True)
            self.led.clear()  # a new session holds no locks
        return self._conn

    def acquire(self, account_ids: list[int]) -> set[int]:
        conn = self._connect()
        if conn is None:
            self.led = set(account_ids)
            return self.led
        for account_id in account_ids:
            if account_id in self.led:
                continue
            row = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (ADVISORY_LOCK_NAMESPACE, account_id)
            ).fetchone()
            if row and row[0]:
                self.led.add(account_id)
        return self.led

    def release(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()  # closing the session releases every advisory lock
        self._conn = None
        self.led.clear()


# --- Supervision -----------------------------------------------------------------------------


def _count_restart(task: str) -> None:
    metrics.listener_task_restarts_total.labels(task=task).inc()


def listener_supervisor(
    name: str, *, on_failure: Callable[[str, BaseException], Awaitable[None]] | None = None
) -> TaskSupervisor:
    """The listener's tasks, supervised (`common.supervision`), each restart counted in
    `listener_task_restarts_total{task}`."""
    return TaskSupervisor(f"listener {name}", on_failure=on_failure, on_restart=_count_restart)


# --- The async side --------------------------------------------------------------------------


@dataclass
class ListenerStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    last_event_at: datetime | None = None
    reconnects: int = 0
    checkpoints: dict[int, datetime] = field(default_factory=dict)


class GatewayListener:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        account_ids: list[int] | None = None,
        stale_after: float | None = None,
        sweep_interval: float = 2.0,
        leadership_poll: float = 5.0,
        name: str | None = None,
        client_factory: Callable[[GatewayConfig], ProjectXClient] = SharedSessionClient,
    ) -> None:
        tracking = settings.ORDER_MANAGEMENT.partial_fill_tracking
        self.config = config
        self.requested_accounts = account_ids
        self.stale_after = stale_after if stale_after is not None else tracking.stale_feed_seconds
        self.catch_up_margin = timedelta(seconds=tracking.catch_up_margin_seconds)
        self.sweep_interval = sweep_interval
        self.leadership_poll = leadership_poll
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = ListenerStats()
        self.started_at = timezone.now()
        self._client_factory = client_factory
        self._leadership = Leadership()
        self._hub: UserHubClient | None = None
        self._client: ProjectXClient | None = None
        self._backfill_attempts: dict[object, datetime] = {}
        self._accounts: dict[int, Account] = {}
        # Appended on the event loop, taken in the database thread (a deque's append and
        # popleft are atomic), in the broker's order.
        self._queue: deque[Event] = deque()
        self._events_queued = asyncio.Event()
        # Taken from the queue and not committed yet: kept across a failure, applied again first.
        self._unapplied: list[Event] = []
        self._waiting_for_events = False  # the applier is idle: nothing queued, nothing pending
        self._applied_at: datetime | None = None  # the last batch commit
        self._catch_up_wanted = asyncio.Event()
        self._supervisor = listener_supervisor(self.name, on_failure=self._after_task_failure)
        # One database thread, so events are applied one at a time in the broker's order.
        self._db = sync_to_async(lambda fn, *a, **k: fn(*a, **k), thread_sensitive=True)
        # The heartbeat has a thread (and so a connection) of its own: it must still be written
        # while the applier's thread is blocked, to say that the listener is not applying.
        self._heartbeat_thread: ThreadPoolExecutor | None = None
        # So has the sweep: its queries, and the Trade/search of a backfill, would otherwise hold
        # up the batch behind them (a sweep on the applier's thread made the p99 of event ->
        # commit at 1,000 fills/s several times its p50). Its writes take the same row locks
        # as the applier's, as a second listener's would.
        self._sweep_thread: ThreadPoolExecutor | None = None

    @property
    def hub(self) -> UserHubClient | None:
        return self._hub

    async def run(self, stop: asyncio.Event) -> None:
        self._client = self._client_factory(self.config)
        self._queue.clear()
        self._events_queued = asyncio.Event()
        self._heartbeat_thread = ThreadPoolExecutor(1, thread_name_prefix="listener-heartbeat")
        self._sweep_thread = ThreadPoolExecutor(1, thread_name_prefix="listener-sweep")
        supervisor = self._supervisor
        supervisor.start("leadership", self._follow_leadership_forever)
        supervisor.start("applier", self._apply_queued)
        supervisor.start("catch-up", self._catch_up_when_wanted)
        supervisor.start("sweeper", self._sweep_forever)
        supervisor.start("heartbeat", self._heartbeat_forever)
        supervisor.start("brackets", self._guard_brackets_forever)
        try:
            await stop.wait()
        finally:
            await supervisor.stop()  # events still queued are caught up by the next listener
            await self._stop_hub()
            await self._db(self._leadership.release)
            await self._client.aclose()
            try:
                await self._write_heartbeat(connected=False, subscribed=False)
            except Exception:
                logger.warning("listener %s: last heartbeat not written", self.name, exc_info=True)
            await self._in_heartbeat_thread(_close_connection)
            self._heartbeat_thread.shutdown()
            await self._in_sweep_thread(_close_connection)
            self._sweep_thread.shutdown()
            await self._db(_close_connection)

    async def _after_task_failure(self, task: str, error: BaseException) -> None:
        if isinstance(error, DatabaseError | psycopg.Error):
            await self._db(_reset_connection)
            await self._in_heartbeat_thread(_reset_connection)
            await self._in_sweep_thread(_reset_connection)

    # -- The supervised tasks: each loops until cancelled -------------------------------------

    async def _follow_leadership_forever(self) -> None:
        while True:
            await self._follow_leadership()
            self._supervisor.succeeded("leadership")
            await asyncio.sleep(self.sweep_interval)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            done = await self._in_sweep_thread(
                sweep,
                now=timezone.now(),
                checkpoints=dict(self.stats.checkpoints),
                backfill_attempts=self._backfill_attempts,
            )
            self.stats.outcomes.update({k: v for k, v in done.items() if v})
            self._supervisor.succeeded("sweeper")

    async def _guard_brackets_forever(self) -> None:
        """The bracket guard (orders/brackets.py: OCO and the protection guarantee) for the
        accounts this listener leads. On a thread of its own: a flatten waits for the broker,
        and the applier must keep applying the events it waits for meanwhile."""
        checked: dict[object, datetime] = {}
        thread = ThreadPoolExecutor(1, thread_name_prefix="listener-brackets")
        loop = asyncio.get_running_loop()
        try:
            while True:
                await asyncio.sleep(self.sweep_interval)
                led = sorted(self._leadership.led)
                if led:
                    done = await loop.run_in_executor(
                        thread,
                        functools.partial(_guard_brackets, account_ids=led, last_checked=checked),
                    )
                    self.stats.outcomes.update({k: v for k, v in done.items() if v})
                self._supervisor.succeeded("brackets")
        finally:
            thread.shutdown(wait=False)  # a pass in flight finishes on its own

    async def _heartbeat_forever(self) -> None:
        while True:
            hub = self._hub
            await self._write_heartbeat(
                connected=bool(hub and hub.connected), subscribed=bool(hub and hub.subscribed)
            )
            self._supervisor.succeeded("heartbeat")
            await asyncio.sleep(self.sweep_interval)

    async def _apply_queued(self) -> None:
        while True:
            if not self._unapplied and not self._queue:
                # The hub's handler and this task share the event loop: nothing is queued
                # between the check above and the wait below.
                self._events_queued.clear()
                self._waiting_for_events = True
                try:
                    await self._events_queued.wait()
                finally:
                    self._waiting_for_events = False
            try:
                await self._db(self._apply_while_queued, asyncio.get_running_loop())
            except Exception:
                # The batch stays in `_unapplied` for the restarted task; after it, a catch-up
                # fetches whatever else the broker did meanwhile.
                self._catch_up_wanted.set()
                raise

    def _apply_while_queued(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the database thread: batch after batch for as long as events are queued.

        The next batch starts as soon as the last commits, without a trip through the event
        loop: that trip (the result handed to the loop, the loop busy reading the hub's frames
        before it takes it, the next batch handed back) kept the applier's thread idle for a
        fifth of its time at 1,000 fills/s (py-spy, `--idle`), and every event waited for it.
        After `APPLIER_TURN_SECONDS` the thread is handed back, so the leadership and the
        catch-up, which run on it too, are never kept out by a long burst."""
        handed_back_at = time.monotonic() + APPLIER_TURN_SECONDS
        while True:
            if not self._unapplied:
                if not self._queue:
                    return
                taken = min(len(self._queue), MAX_BATCH)
                self._unapplied = [self._queue.popleft() for _ in range(taken)]
            outcomes = apply_events(
                self._unapplied, TransitionTrigger.BROKER_STREAM, self._accounts
            )
            batch, self._unapplied = self._unapplied, []
            loop.call_soon_threadsafe(self._note_applied, batch, outcomes)
            if time.monotonic() >= handed_back_at:
                return

    def _note_applied(self, batch: list[Event], outcomes: list[str]) -> None:
        """On the event loop, after a batch committed (in order: the loop runs these callbacks
        in the order the database thread scheduled them)."""
        self._applied_at = self.stats.last_event_at = datetime.now(UTC)
        self._supervisor.succeeded("applier")
        if "error" in outcomes:
            self._catch_up_wanted.set()  # the events that failed alone
        # Per batch, not per event: this runs on the event loop, beside the hub's frames.
        counted = Counter(zip([kind for kind, _, _ in batch], outcomes, strict=True))
        self.stats.outcomes.update({f"{k}:{o}": n for (k, o), n in counted.items()})
        _advance_checkpoints(self.stats.checkpoints, batch)

    async def _catch_up_when_wanted(self) -> None:
        while True:
            await self._catch_up_wanted.wait()
            if self._unapplied:
                # Not before the failed batch is in: the catch-up would only fail the same way.
                await asyncio.sleep(self.sweep_interval)
                continue
            self._catch_up_wanted.clear()
            try:
                await self._catch_up(sorted(self._leadership.led))
            except BaseException:
                self._catch_up_wanted.set()  # still owed: the restarted task tries again
                raise
            self._supervisor.succeeded("catch-up")

    # -- Heartbeat ------------------------------------------------------------------------------

    async def _in_heartbeat_thread(self, fn: Callable[..., Any], /, **kwargs: Any) -> None:
        if self._heartbeat_thread is None:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._heartbeat_thread, functools.partial(fn, **kwargs))

    async def _in_sweep_thread(self, fn: Callable[..., Any], /, **kwargs: Any) -> Any:
        assert self._sweep_thread is not None, "the sweep thread starts with run()"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._sweep_thread, functools.partial(fn, **kwargs))

    async def _write_heartbeat(self, **fields: Any) -> None:
        """Gathered here, on the event loop, then written in the heartbeat's thread."""
        hub = self._hub
        health = hub.health() if hub else None
        await self._in_heartbeat_thread(
            write_heartbeat,
            name=self.name,
            started_at=self.started_at,
            leading_accounts=sorted(self._leadership.led),
            last_message_at=health.last_message_at if health else None,
            last_event_at=self.stats.last_event_at,
            # "Applied events recently or had nothing to apply": never just "still running".
            applied_at=timezone.now() if self._waiting_for_events else self._applied_at,
            failing_tasks=self._supervisor.failing,
            events_applied=sum(v for k, v in self.stats.outcomes.items() if ":" not in k),
            reconnects=self.stats.reconnects,
            **fields,
        )

    # -- Leadership and the hub -----------------------------------------------------------------

    async def _follow_leadership(self) -> None:
        wanted = self.requested_accounts or await self._db(
            lambda: list(
                Account.objects.filter(active=True).values_list("broker_account_id", flat=True)
            )
        )
        before = set(self._leadership.led)
        led = await self._db(self._leadership.acquire, list(wanted))
        if led != before or (led and self._hub is None):
            logger.info("listener %s leads accounts %s", self.name, sorted(led))
            await self._stop_hub()
            if led:
                await self._start_hub(sorted(led))

    async def _start_hub(self, account_ids: list[int]) -> None:
        assert self._client is not None
        self._hub = UserHubClient(
            self.config.user_hub_url,
            self._client.get_token,
            account_ids,
            on_order=self._event_handler("order"),
            on_trade=self._event_handler("trade"),
            on_position=self._event_handler("position"),
            on_account=self._event_handler("account"),
            on_connected=lambda: self._catch_up(account_ids),
            on_disconnected=self._on_disconnected,
            stale_after=self.stale_after,
        )
        await self._hub.start()

    async def _stop_hub(self) -> None:
        if self._hub is not None:
            await self._hub.stop()
            self._hub = None

    async def _on_disconnected(self, reason: str) -> None:
        self.stats.reconnects += 1
        logger.warning("listener %s: hub disconnected (%s)", self.name, reason)

    def _event_handler(self, kind: str) -> Callable[[Any, EventAction | None], Any]:
        async def handle(payload: Any, action: EventAction | None) -> None:
            # The hub's receive loop only queues; `_apply_queued` applies in batches, in order.
            self._queue.append((kind, payload, action))
            self._events_queued.set()

        return handle

    async def _catch_up(self, account_ids: list[int]) -> None:
        """After every (re)connect and after a failed batch: REST from the checkpoint minus the
        margin, then apply."""
        assert self._client is not None
        as_of = datetime.now(UTC)
        for account_id in account_ids:
            account = await self._db(_account, account_id)
            if account is None:
                continue
            since = await self._db(catch_up_start, account, self.catch_up_margin)
            orders = await self._client.search_orders(account_id=account_id, start=since)
            trades = await self._client.search_trades(account_id=account_id, start=since)
            positions = await self._client.search_open_positions(account_id=account_id)
            outcomes = await self._db(apply_catch_up, account_id, orders, trades, positions, as_of)
            logger.info(
                "listener %s caught up account %s since %s: %s",
                self.name,
                account_id,
                since.isoformat(),
                dict(outcomes),
            )


def _advance_checkpoints(checkpoints: dict[int, datetime], batch: list[Event]) -> None:
    """Each broker account's checkpoint to the newest server time among its applied events."""
    for _, payload, _ in batch:
        if type(payload) is WireOrder:  # the hub's payloads are these classes, never subclasses
            at = payload.update_timestamp or payload.creation_timestamp
        elif type(payload) is WireTrade or type(payload) is WirePosition:
            at = payload.creation_timestamp
        else:
            continue  # account events carry no server time
        known = checkpoints.get(payload.account_id)
        if known is None or at > known:
            checkpoints[payload.account_id] = at
