"""Moving old terminal orders out of the hot tables, and deleting them after the long retention.

Storage: three archive tables, `orders_archivedorder`, `orders_archivedordertransition` and
`fills_archivedfill`, with the same columns as the hot tables (and the original ids). Chosen
over one partitioned table because:

1. PostgreSQL requires every unique constraint of a partitioned table to include the partition
   key. The order's guards are global, "(account, idempotency key) is unique" and its
   siblings: partitioning by age would split them per partition, and they are what keeps a
   retried request from placing a second order.
2. The rows to move are chosen by state *and* age; a partition key on those changes with every
   transition, so rows would migrate between partitions on ordinary updates.
3. Django has no declarative partitioning, and the embedded SQLite default has none at all:
   separate tables work the same on both, with plain migrations.
4. The hot tables, and the indexes the placement and listener paths use, stay as small as the
   recent orders, and the archive can live on cheaper storage (a tablespace) if it grows.

The API and the admin read both through `OrderIncludingArchived` (a UNION ALL view).

`orders_archive` follows these steps:

1. Archivable: terminal, unchanged (`updated_at`) for `lifecycle.archive.hotRetentionDays`,
   and no idempotency record that has not expired: a retry of that request must still find
   its order and replay the stored response.
2. Walk them oldest first by (updated_at, id), `batchSize` at a time, with that pair as a
   cursor: each batch starts where the last one ended, so the order is fixed and a row held
   back (a live key, a lock) is not read again in this run.
3. One transaction per batch: lock the batch's orders (`FOR UPDATE SKIP LOCKED`: an order
   another transaction is changing is left for the next run, and the lock re-checks the
   conditions against the newest version of the row), copy orders, transitions and fills with
   `INSERT ... SELECT`, delete the orders' expired idempotency records, then the fills,
   transitions and orders; commit. Interrupted at any point, a batch is either all moved or
   not at all; running again picks up what is left, so running twice is safe.
4. A batch that fails is rolled back, logged and counted; the run goes on with the next one.

`archived_orders_delete` deletes archived orders (with their fills and transitions) unchanged
for `deleteRetentionDays`, in the same batched, cursor-walked, one-transaction-per-batch way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from fills.models import ArchivedFill, Fill  # archival moves an order with its fills
from orders.models import (
    TERMINAL_STATES,
    ArchivedOrder,
    ArchivedOrderTransition,
    IdempotencyRecord,
    Order,
    OrderTransition,
)

logger = logging.getLogger(__name__)

ProgressCallback = Callable[["BatchDone"], None]


@dataclass(frozen=True)
class BatchDone:
    phase: str  # "archive" or "delete"
    orders: int  # in this batch
    done: int  # orders handled so far in this phase
    total: int  # orders the phase expected when it started


@dataclass
class ArchiveReport:
    dry_run: bool = False
    orders_archived: int = 0
    transitions_archived: int = 0
    fills_archived: int = 0
    idempotency_records_deleted: int = 0
    held_back_by_live_key: int = 0
    orders_deleted: int = 0
    transitions_deleted: int = 0
    fills_deleted: int = 0
    batches: int = 0
    failed_batches: int = 0
    interrupted: bool = False
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


# --- Which rows -------------------------------------------------------------------------------


def _live_key(now: datetime) -> tuple[Exists, Exists]:
    """An unexpired record for the order: linked by the order, or by (account, key) should a
    record ever lose its order link. Two EXISTS rather than one with OR: each can use its own
    index (order_id; the unique account and key) however many keys are live."""
    live = IdempotencyRecord.objects.filter(expires_at__gt=now)
    by_order = Exists(live.filter(order_id=OuterRef("pk")))
    by_key = Exists(live.filter(account_id=OuterRef("account_id"), key=OuterRef("idempotency_key")))
    return by_order, by_key


# Sorted: the same SQL text every run (a frozenset's order changes from process to process).
_TERMINAL = sorted(state.value for state in TERMINAL_STATES)


def _terminal_older_than(cutoff: datetime) -> QuerySet[Order]:
    return Order.objects.filter(status__in=_TERMINAL, updated_at__lt=cutoff)


def orders_archivable(*, cutoff: datetime, now: datetime) -> QuerySet[Order]:
    """Terminal orders unchanged since `cutoff` whose idempotency key has expired by `now`."""
    by_order, by_key = _live_key(now)
    return _terminal_older_than(cutoff).filter(~by_order).filter(~by_key)


def _after(cursor: tuple[datetime, Any] | None) -> Q:
    """Rows after the cursor in (updated_at, id) order, written so the index range starts at
    the cursor's time (a plain OR would make PostgreSQL scan from the beginning)."""
    if cursor is None:
        return Q()
    updated_at, last_id = cursor
    return Q(updated_at__gte=updated_at) & ~Q(updated_at=updated_at, id__lte=last_id)


# --- Set-based moves ------------------------------------------------------------------------


def _columns(model: type[models.Model]) -> list[str]:
    return [f.column for f in model._meta.concrete_fields]


def _check_archive_mirrors(source: type[models.Model], archive: type[models.Model]) -> list[str]:
    """The source's columns, after checking the archive has every one of them: a column added
    to a hot table and forgotten in its archive must stop archival, not lose data."""
    columns = _columns(source)
    missing = set(columns) - set(_columns(archive))
    if missing:
        raise ImproperlyConfigured(
            f"{archive._meta.db_table} lacks {sorted(missing)} of {source._meta.db_table}: "
            "add them to the archive model before archiving"
        )
    return columns


def _matching(column: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """`column` in `values`: one array parameter on PostgreSQL, a placeholder list elsewhere."""
    if connection.vendor == "postgresql":
        return f"{column} = ANY(%s)", [list(values)]
    return f"{column} IN ({', '.join(['%s'] * len(values))})", list(values)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _copy(
    cursor: Any,
    source: type[models.Model],
    archive: type[models.Model],
    key_column: str,
    keys: Sequence[Any],
    extra: dict[str, Any] | None = None,
) -> int:
    columns = _check_archive_mirrors(source, archive)
    extra = extra or {}
    target_columns = ", ".join(_q(c) for c in [*columns, *extra])
    selected = ", ".join([*(_q(c) for c in columns), *(["%s"] * len(extra))])
    where, params = _matching(_q(key_column), keys)
    cursor.execute(
        f"INSERT INTO {_q(archive._meta.db_table)} ({target_columns}) "
        f"SELECT {selected} FROM {_q(source._meta.db_table)} WHERE {where}",
        [*extra.values(), *params],
    )
    return cursor.rowcount


def _delete(cursor: Any, model: type[models.Model], key_column: str, keys: Sequence[Any]) -> int:
    where, params = _matching(_q(key_column), keys)
    cursor.execute(f"DELETE FROM {_q(model._meta.db_table)} WHERE {where}", params)
    return cursor.rowcount


def _db_ids(model: type[models.Model], ids: Sequence[Any]) -> list[Any]:
    pk = model._meta.pk
    assert pk is not None
    return [pk.get_db_prep_value(value, connection) for value in ids]


def _move_batch(order_ids: Sequence[Any], report: ArchiveReport, archived_at: datetime) -> None:
    ids = _db_ids(Order, order_ids)
    stamp = connection.ops.adapt_datetimefield_value(archived_at)
    with connection.cursor() as cursor:
        report.orders_archived += _copy(
            cursor, Order, ArchivedOrder, "id", ids, extra={"archived_at": stamp}
        )
        report.transitions_archived += _copy(
            cursor, OrderTransition, ArchivedOrderTransition, "order_id", ids
        )
        report.fills_archived += _copy(cursor, Fill, ArchivedFill, "order_id", ids)
        # Only expired records point at these orders (the selection made sure, under the lock).
        report.idempotency_records_deleted += _delete(cursor, IdempotencyRecord, "order_id", ids)
        _delete(cursor, Fill, "order_id", ids)
        _delete(cursor, OrderTransition, "order_id", ids)
        _delete(cursor, Order, "id", ids)


def _delete_batch(order_ids: Sequence[Any], report: ArchiveReport) -> None:
    ids = _db_ids(ArchivedOrder, order_ids)
    with connection.cursor() as cursor:
        report.fills_deleted += _delete(cursor, ArchivedFill, "order_id", ids)
        report.transitions_deleted += _delete(cursor, ArchivedOrderTransition, "order_id", ids)
        report.orders_deleted += _delete(cursor, ArchivedOrder, "id", ids)


# --- The walk -------------------------------------------------------------------------------


def _walk(
    *,
    phase: str,
    candidates: QuerySet[Any],
    act: Callable[[Sequence[Any]], None],
    batch_size: int,
    total: int,
    report: ArchiveReport,
    should_stop: Callable[[], bool],
    on_batch: ProgressCallback | None,
    pause_seconds: float,
) -> None:
    """Run `act` on `candidates` in (updated_at, id) batches, one transaction each."""
    cursor: tuple[datetime, Any] | None = None
    done = 0
    while not should_stop():
        batch: list[tuple[Any, datetime]] = []
        try:
            with transaction.atomic():
                batch = list(
                    candidates.filter(_after(cursor))
                    .order_by("updated_at", "id")
                    .select_for_update(skip_locked=True)
                    .values_list("id", "updated_at")[:batch_size]
                )
                if not batch:
                    return
                act([order_id for order_id, _ in batch])
        except DatabaseError as exc:
            if not batch:
                raise  # the selection itself failed: nothing sensible to continue with
            report.failed_batches += 1
            report.failures.append(f"{phase} batch after {cursor}: {exc}")
            logger.exception("%s batch of %d orders failed; rolled back", phase, len(batch))
        else:
            report.batches += 1
        last_id, last_updated_at = batch[-1]
        cursor = (last_updated_at, last_id)
        done += len(batch)
        if on_batch is not None:
            on_batch(BatchDone(phase=phase, orders=len(batch), done=done, total=total))
        if pause_seconds > 0:
            time.sleep(pause_seconds)
    report.interrupted = True


def _label_connection() -> None:
    # Visible in pg_stat_activity: an operator can tell the archiver's sessions apart.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET application_name = 'ordermgmt archive_orders'")


def orders_archive(
    *,
    now: datetime | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: ProgressCallback | None = None,
    on_start: Callable[[str, int], None] | None = None,
    pause_seconds: float = 0.0,
) -> ArchiveReport:
    """Archive old terminal orders, then delete archived orders past the deletion retention.

    `should_stop` is asked before every batch (a signal handler sets it); `on_start` hears each
    phase's expected total, `on_batch` every finished batch (the command's progress bar).
    """
    config = settings.ORDER_MANAGEMENT.lifecycle.archive
    now = now or timezone.now()
    batch_size = batch_size or config.batch_size
    archive_cutoff = now - timedelta(days=config.hot_retention_days)
    delete_cutoff = now - timedelta(days=config.delete_retention_days)
    report = ArchiveReport(dry_run=dry_run)
    started = time.perf_counter()

    archivable = orders_archivable(cutoff=archive_cutoff, now=now)
    deletable = ArchivedOrder.objects.filter(updated_at__lt=delete_cutoff)
    by_order, by_key = _live_key(now)
    report.held_back_by_live_key = (
        _terminal_older_than(archive_cutoff).filter(Q(by_order) | Q(by_key)).count()
    )
    if dry_run:
        report.orders_archived = archivable.count()
        report.transitions_archived = OrderTransition.objects.filter(
            order__in=archivable.values("pk")
        ).count()
        report.fills_archived = Fill.objects.filter(order__in=archivable.values("pk")).count()
        # Orders archived in this run and already past the deletion retention count here too.
        doomed = deletable.count() + archivable.filter(updated_at__lt=delete_cutoff).count()
        report.orders_deleted = doomed
        report.seconds = time.perf_counter() - started
        return report

    _label_connection()
    for phase, candidates, act in (
        ("archive", archivable, lambda ids: _move_batch(ids, report, archived_at=now)),
        ("delete", deletable, lambda ids: _delete_batch(ids, report)),
    ):
        total = candidates.count()
        if on_start is not None:
            on_start(phase, total)
        _walk(
            phase=phase,
            candidates=candidates,
            act=act,
            batch_size=batch_size,
            total=total,
            report=report,
            should_stop=should_stop,
            on_batch=on_batch,
            pause_seconds=pause_seconds,
        )
        if report.interrupted:
            break
    report.seconds = time.perf_counter() - started
    return report
