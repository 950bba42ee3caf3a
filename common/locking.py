"""Deadlock retry and advisory locks, for every app (this package imports no app).

The row-lock hierarchy itself (Account -> Position -> Order, `lock_in_order`) is the domain's
and lives in `orders/locking.py`: two transactions that lock in the same global order can wait
for each other but never deadlock. PostgreSQL still aborts a transaction now and then (a
deadlock among paths we do not order, a serialization failure): `retry_on_deadlock` re-runs it
from fresh state with jittered backoff, a bounded number of times, and counts it."""

from __future__ import annotations

import contextlib
import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import OperationalError, connection

from common import metrics
from common.statements import execute_prepared

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# SQLSTATEs PostgreSQL uses for "your transaction lost a race; run it again".
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired


def _sqlstate(exc: BaseException) -> str | None:
    cause = exc.__cause__ or exc
    return getattr(cause, "sqlstate", None)


def is_retryable(exc: BaseException) -> bool:
    return _sqlstate(exc) in {DEADLOCK_DETECTED, SERIALIZATION_FAILURE}


def retry_on_deadlock(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` (which must open its own transaction) again when PostgreSQL aborts it for a
    deadlock or a serialization failure. Never use inside an outer transaction: the retry must
    start from fresh state."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        control = settings.ORDER_MANAGEMENT.concurrency_control
        delay = control.retry_backoff_initial_ms / 1000
        for attempt in range(control.deadlock_max_retries + 1):
            try:
                return func(*args, **kwargs)
            except OperationalError as exc:
                if not is_retryable(exc) or attempt == control.deadlock_max_retries:
                    raise
                if connection.in_atomic_block:
                    raise  # inside someone else's transaction: let the outermost retry
                metrics.deadlocks_total.inc()
                metrics.transaction_retries_total.inc()
                logger.warning("%s: %s; retry %d", func.__name__, _sqlstate(exc), attempt + 1)
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, control.retry_backoff_max_ms / 1000)
        raise AssertionError("unreachable")

    return wrapper


# --- Advisory locks: one holder at a time across every process -----------------------------

ADVISORY_NAMESPACE_PLACEMENT = 0x6F70  # "op": an account's placement turn
_local_locks: dict[tuple[int, int], Any] = {}
_local_locks_guard = threading.Lock()


class TurnTimeout(Exception):
    """The lock was not free within the time allowed."""


@contextlib.contextmanager
def advisory_lock(namespace: int, key: int, *, timeout: float) -> Any:
    """Hold a PostgreSQL session advisory lock (namespace, key) for the block.

    Taken outside any transaction, so that the block may call the broker (no network I/O in a
    transaction), and released in `finally`; if the process dies, PostgreSQL releases it with
    the session. Waits up to `timeout` seconds, then raises TurnTimeout.

    Within one process, the waiters for one key first queue on a process-local lock, having
    given their database connection back to the pool: only one of them per process waits at
    PostgreSQL, holding a connection. Without that funnel, fifty requests waiting for one
    account's turn held fifty pooled connections and starved every other request. The lock in
    PostgreSQL is still what decides across processes. On SQLite (the embedded default, one
    process) the process-local lock is the whole lock.
    """
    if connection.in_atomic_block:
        raise RuntimeError("advisory_lock must not be taken inside a transaction")
    started = time.perf_counter()
    with _local_locks_guard:
        local = _local_locks.setdefault((namespace, key), threading.Lock())
    if not local.acquire(blocking=False):
        connection.close()  # back to the pool while we wait in memory
        if not local.acquire(timeout=timeout):
            raise TurnTimeout(f"lock {namespace}:{key} busy for {timeout} s")
    try:
        if connection.vendor != "postgresql":
            yield
            return
        remaining = max(0.001, timeout - (time.perf_counter() - started))
        with _postgres_advisory_lock(namespace, key, remaining):
            metrics.lock_wait_seconds.labels("advisory").observe(time.perf_counter() - started)
            metrics.lock_acquisitions_total.labels("advisory").inc()
            yield
    finally:
        local.release()


class Turn:
    """A session advisory lock (namespace, key) held across statements and transactions: one
    holder at a time across every process, like `advisory_lock`, taken in one of two ways.

    - `try_sql()` puts `pg_try_advisory_lock` into a statement the caller runs anyway (inside
      its transaction), then `took(result)` records the answer: an uncontended turn costs no
      round trip of its own. A session lock outlives the transaction, rolled back or not, so
      whoever tries must `release()` on every path (`held` says whether there is anything).
    - `wait(timeout)`: the blocking wait of `advisory_lock` (the process-local funnel first).

    `release()` gives it back (one statement); it is safe to call when not held. On SQLite (one
    process) the process-local lock is the whole lock.
    """

    def __init__(self, namespace: int, key: int) -> None:
        self.namespace = namespace
        self.key = key
        self.held = False
        self._local_held = False
        self._local: Any = None

    def _local_lock(self) -> Any:
        if self._local is None:
            with _local_locks_guard:
                self._local = _local_locks.setdefault((self.namespace, self.key), threading.Lock())
        return self._local

    def try_sql(self) -> tuple[str, list[int]] | None:
        """SQL for a select list that tries the lock, or None when it cannot be tried there
        (held already; not PostgreSQL: then `try_local()` instead)."""
        if self.held or connection.vendor != "postgresql":
            return None
        return "pg_try_advisory_lock(%s, %s)", [self.namespace, self.key]

    def took(self, acquired: bool) -> None:
        if acquired:
            self.held = True
            metrics.lock_acquisitions_total.labels("advisory").inc()

    def try_local(self) -> bool:
        """SQLite: the process-local lock, without waiting."""
        if not self.held and connection.vendor != "postgresql":
            self.held = self._local_held = self._local_lock().acquire(blocking=False)
        return self.held

    def wait(self, *, timeout: float, still_needed: Callable[[], bool] | None = None) -> bool:
        """Block until the lock is ours, at most `timeout` seconds (TurnTimeout); True then.

        `still_needed` is asked after a wait in memory, before waiting at PostgreSQL: False
        (what the turn was wanted for was done meanwhile by a holder) ends the wait at once
        and returns False. Under a queue of waiters this keeps those whose work is done from
        taking empty turns one after another."""
        if self.held:
            return True
        if connection.in_atomic_block:
            raise RuntimeError("a turn must not be waited for inside a transaction")
        started = time.perf_counter()
        local = self._local_lock()
        if not local.acquire(blocking=False):
            connection.close()  # back to the pool while we wait in memory
            if not local.acquire(timeout=timeout):
                raise TurnTimeout(f"lock {self.namespace}:{self.key} busy for {timeout} s")
            if still_needed is not None and not still_needed():
                local.release()
                return False
        self._local_held = True
        if connection.vendor == "postgresql":
            remaining = max(0.001, timeout - (time.perf_counter() - started))
            try:
                _wait_for_advisory_lock(self.namespace, self.key, remaining)
            except BaseException:
                self._local_held = False
                local.release()
                raise
            # Only one thread of this process waits at PostgreSQL, and the funnel stays shut
            # for the whole turn: the next waiter of this process asks whether it still needs
            # a turn once this one is over (its order is often sent in it), instead of queueing
            # at PostgreSQL for an empty turn.
            metrics.lock_wait_seconds.labels("advisory").observe(time.perf_counter() - started)
            metrics.lock_acquisitions_total.labels("advisory").inc()
        self.held = True
        return True

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._local_held:
            self._local_held = False
            self._local_lock().release()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                execute_prepared(
                    cursor, "SELECT pg_advisory_unlock(%s, %s)", [self.namespace, self.key]
                )


# A blocking wait for a session advisory lock, bounded by its own lock_timeout, in one
# statement: the session's timeout is read, the wait's set, the lock waited for, the session's
# set back, each in a derived table of the one before (OFFSET 0 keeps the planner from merging
# them, so they run innermost first). Were the wait to time out, the statement's transaction
# is rolled back and the setting with it. PostgreSQL queues the waiters in arrival order and
# wakes the next one when the lock frees; no polling. Three statements before (SET, the
# wait, RESET): on one busy account each was a wait for a web worker's GIL on the turn's path.
_WAIT_FOR_ADVISORY_LOCK_SQL = (
    "SELECT set_config('lock_timeout', saved, false) FROM ("
    " SELECT saved, pg_advisory_lock(%s, %s) FROM ("
    "  SELECT saved, set_config('lock_timeout', %s, false) FROM ("
    "   SELECT current_setting('lock_timeout') AS saved OFFSET 0"
    "  ) AS session OFFSET 0"
    " ) AS bounded OFFSET 0"
    ") AS taken"
)


def _wait_for_advisory_lock(namespace: int, key: int, timeout: float) -> None:
    with connection.cursor() as cursor:
        try:
            execute_prepared(
                cursor,
                _WAIT_FOR_ADVISORY_LOCK_SQL,
                [namespace, key, f"{max(1, int(timeout * 1000))}ms"],
            )
        except OperationalError as exc:
            if _sqlstate(exc) == LOCK_NOT_AVAILABLE:
                raise TurnTimeout(f"lock {namespace}:{key} busy for {timeout} s") from exc
            raise


@contextlib.contextmanager
def _postgres_advisory_lock(namespace: int, key: int, timeout: float) -> Any:
    _wait_for_advisory_lock(namespace, key, timeout)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            execute_prepared(cursor, "SELECT pg_advisory_unlock(%s, %s)", [namespace, key])
