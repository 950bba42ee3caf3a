"""Every write to an order goes through here.

`order_transition` is the one function that changes an order's state; `order_update` is the one
that changes its other fields. Both:

1. lock the order row (`select_for_update`) inside a transaction,
2. check the version the caller read (optimistic locking across processes),
3. apply the change (the state machine refuses illegal moves with `IllegalTransition`),
4. bump the version with a conditional UPDATE (`WHERE version = <old>`),
5. write the `OrderTransition` audit row in the same transaction,
6. after commit, send `order_changed` (live desk, metrics).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.db import connection, transaction
from django.utils import timezone
from django_fsm import TransitionNotAllowed

from common.bulk import Along, insert_row, update_row_sent, update_rows_sent
from orders import lifecycle
from orders.exceptions import IllegalTransition, VersionConflict
from orders.models import (
    CORRECTIONS,
    TRANSITION_METHODS,
    BracketRole,
    Order,
    OrderStatus,
    OrderTransition,
    TransitionTrigger,
)
from orders.signals import order_changed, order_fills_missing

logger = logging.getLogger(__name__)

# Fields a caller may change through order_update / alongside a transition. The state, version
# and timestamps are ours to manage.
_WRITABLE_FIELDS = frozenset(
    {
        "size",
        "limit_price",
        "stop_price",
        "trail_price",
        "broker_order_id",
        "status_reason",
        "filled_size",
        "avg_fill_price",
        "last_server_ts",
        "submitted_at",
        "verification_attempts",
        "fill_notional",
        "last_fill_at",
        "broker_fill_volume",
        "overfilled",
        "fill_timeout_handled_at",
        # Released (set to None) only when a placement ended without reaching the broker, so
        # that the same key can place later; the audit row keeps the old values.
        "idempotency_key",
        "custom_tag",
        # The bracket guard's records (orders/brackets.py): audited like any other write.
        "bracket_parent_id",
        "bracket_role",
        "protection",
        "protection_checked_at",
        "unprotected_at",
        "oco_cancelled_by",
    }
)

# Evidence from the broker (its answers, its events, what verification found). The order's
# terms (size, prices) change on a terminal order only on such evidence: a person or a bot
# cannot modify a finished order, but the broker can tell us what it did before it finished.
BROKER_TRIGGERS = frozenset(
    {
        TransitionTrigger.BROKER_STREAM,
        TransitionTrigger.BROKER_REST,
        TransitionTrigger.VERIFICATION,
        TransitionTrigger.SWEEPER,
    }
)
_TERMS = frozenset({"size", "limit_price", "stop_price", "trail_price"})


def _check_version(order: Order, expected_version: int | None) -> Order:
    if expected_version is not None and order.version != expected_version:
        raise VersionConflict(current=order, expected_version=expected_version)
    return order


def _lock_order(order_id: uuid.UUID | str, expected_version: int | None) -> Order:
    flush_batched_writes()  # the row is read from the database: nothing may be pending for it
    return _check_version(Order.objects.select_for_update().get(pk=order_id), expected_version)


def _in_callers_lock(locked: Order | None) -> Any:
    """The transaction a write runs in.

    Without `locked` the write is its own atomic block (a savepoint inside an outer one). With
    `locked`, the caller's transaction already holds the order's row lock (the fills path):
    every check has run before this, and the write joins that transaction without a savepoint,
    which under a burst of fills saves two round trips per write; inside a write batch (which
    runs in the caller's transaction by definition) not even an atomic block is entered.
    """
    if locked is not None and _batch.get() is not None:
        return contextlib.nullcontext()
    return transaction.atomic(savepoint=locked is None)


def _write(
    order: Order,
    *,
    from_state: str,
    now: datetime,
    state_changed: bool,
    trigger: str,
    actor: str,
    reason: str,
    server_ts: datetime | None,
    changes: Mapping[str, Any],
) -> OrderTransition:
    unknown = set(changes) - _WRITABLE_FIELDS
    if unknown:
        raise ValueError(f"not writable through the order services: {sorted(unknown)}")
    previous_version = order.version
    changed_fields: dict[str, list[str]] = {}
    for name, value in changes.items():
        old = getattr(order, name)
        if old != value:
            changed_fields[name] = [_jsonable(old), _jsonable(value)]
            setattr(order, name, value)

    time_in_previous_state = now - order.state_entered_at
    if state_changed:
        order.state_entered_at = now
    if server_ts is not None and (order.last_server_ts is None or server_ts > order.last_server_ts):
        order.last_server_ts = server_ts
    order.updated_at = now

    batch = _batch.get()
    if batch is not None and batch.holds(order):
        record_so_far = (
            batch.coalescible(order, trigger=trigger, actor=actor)
            if from_state == order.status
            else None
        )
        if record_so_far is not None:
            # Another write of the same kind to the same order in the same batch (the fills of
            # a burst): it joins the batch's audit row for them, whose reason names every fill
            # and whose changed_fields run from the first old value to the last new one. The
            # version counts audit rows, so it does not move again.
            _coalesce(record_so_far, changed_fields, reason=reason, now=now, server_ts=server_ts)
            batch.stage(order, None, changes.keys(), previous_version)
            return record_so_far
    order.version = previous_version + 1

    record = OrderTransition(
        order=order,
        from_state=from_state,
        to_state=order.status,
        at=now,
        time_in_previous_state=time_in_previous_state,
        trigger=trigger,
        actor=actor,
        reason=reason,
        is_correction=(from_state, order.status) in CORRECTIONS,
        changed_fields=changed_fields,
        server_ts=server_ts,
        version=order.version,
    )
    if batch is not None and batch.holds(order):
        # The caller's batch holds this order's row lock: the write is kept in memory and
        # flushed with the batch (one UPDATE per order, the audit rows in one INSERT).
        batch.stage(order, record, changes.keys(), previous_version)
        return record

    # Conditional UPDATE: the row lock makes a lost race impossible here, but the version
    # filter keeps the rule "every write is conditional on the version" true for every writer.
    _update_row(order, changes.keys(), previous_version, [record])
    committed_order = order
    transaction.on_commit(
        lambda: order_changed.send(
            sender=Order, order=committed_order, transition=record, transitions=[record]
        )
    )
    return record


def _coalesce(
    record: OrderTransition,
    changed_fields: dict[str, list[Any]],
    *,
    reason: str,
    now: datetime,
    server_ts: datetime | None,
) -> None:
    for name, (old, new) in changed_fields.items():
        if name in record.changed_fields:
            record.changed_fields[name][1] = new
        else:
            record.changed_fields[name] = [old, new]
    if reason:
        record.reason = f"{record.reason}; {reason}" if record.reason else reason
    record.at = now
    if server_ts is not None and (record.server_ts is None or server_ts > record.server_ts):
        record.server_ts = server_ts


# Written on every write, whatever changed.
_ALWAYS_WRITTEN = ("status", "state_entered_at", "version", "last_server_ts", "updated_at")
_ORDER_FIELDS = {f.name: f for f in Order._meta.concrete_fields}


def _update_row(
    order: Order,
    changed: Iterable[str],
    previous_version: int,
    records: Sequence[OrderTransition] = (),
) -> None:
    """UPDATE ... WHERE id = %s AND version = %s, written directly, with the write's audit
    rows inserted by the same statement (`bulk.update_row`): every order write (each
    placement's, each batch of fills') goes through here, and building the ORM's UPDATE was
    the larger part of its cost. A lost condition writes neither."""
    _update_row_sent(order, changed, previous_version, records)()


def _update_row_sent(
    order: Order,
    changed: Iterable[str],
    previous_version: int,
    records: Sequence[OrderTransition] = (),
) -> Callable[[], None]:
    """`_update_row` for statements sent together (`common.pipeline`): the function returned
    checks the write (`VersionConflict` when it lost its condition) after the block."""
    fields = [_ORDER_FIELDS[name] for name in sorted({*_ALWAYS_WRITTEN, *changed})]
    answer = update_row_sent(
        Order,
        {f.name: getattr(order, f.attname) for f in fields},
        key=order.pk,
        guard="version",
        expected=previous_version,
        along=_audit_rows(records),
    )

    def check() -> None:
        written, audit_ids = answer()
        if not written:
            current = Order.objects.get(pk=order.pk)
            raise VersionConflict(current=current, expected_version=previous_version)
        if len(records) == 1:
            (records[0].pk,) = audit_ids
            records[0]._state.adding = False
            records[0]._state.db = connection.alias

    return check


_TRANSITION_COLUMNS = (
    "order_id",
    "from_state",
    "to_state",
    "at",
    "time_in_previous_state",
    "trigger",
    "actor",
    "reason",
    "is_correction",
    "changed_fields",
    "server_ts",
    "version",
)


@dataclass
class _StagedOrder:
    order: Order
    version_at_lock: int
    changed: set[str] = field(default_factory=set)
    records: list[OrderTransition] = field(default_factory=list)


class OrderWriteBatch:
    """Writes to orders the caller has locked, kept in memory and flushed together.

    For the listener's batches of broker events: every write still goes through
    `order_transition` / `order_update` (the same checks, the same state machine, one audit row
    per write, versions counted one by one), but instead of one UPDATE and one INSERT per
    write, `flush` sends one conditional UPDATE per order (from the version it was locked at)
    and every audit row in one INSERT, and after commit one `order_changed` per order carries
    all of that order's audit rows. Reads of a held order must come from `held(...)`, never
    from the database, until the batch is flushed.
    """

    def __init__(self) -> None:
        self._held: dict[object, Order] = {}
        self._staged: dict[object, _StagedOrder] = {}

    def hold(self, order: Order) -> Order:
        """Keep an order the caller just locked (`select_for_update`) in this batch."""
        return self._held.setdefault(order.pk, order)

    def held_orders(self) -> list[Order]:
        return list(self._held.values())

    def holds(self, order: Order) -> bool:
        return self._held.get(order.pk) is order

    def stage(
        self, order: Order, record: OrderTransition | None, changed: Iterable[str], previous: int
    ) -> None:
        """Keep a write (`record` None: it joined the order's last audit row)."""
        staged = self._staged.get(order.pk)
        if staged is None:
            staged = self._staged[order.pk] = _StagedOrder(order, version_at_lock=previous)
        staged.changed.update(changed)
        if record is not None:
            staged.records.append(record)

    def coalescible(self, order: Order, *, trigger: str, actor: str) -> OrderTransition | None:
        """The order's last staged audit row, when a write of the same trigger and actor that
        leaves the order in its state may join it: that row left the order in its state too
        (fills accumulating on a working order), so no move of the state machine is hidden."""
        staged = self._staged.get(order.pk)
        if staged is None or not staged.records:
            return None
        last = staged.records[-1]
        if (
            last.from_state == last.to_state == order.status
            and last.trigger == trigger
            and last.actor == actor
            and not last.is_correction
        ):
            return last
        return None

    def flush(self) -> None:
        """Write what is staged, in the caller's transaction; after commit, tell receivers."""
        self.flush_sent()()

    def flush_sent(self) -> Callable[[], None]:
        """`flush` for statements sent together (`common.pipeline`): the writes are sent now;
        the function returned checks them (`VersionConflict`) after the block."""
        staged = self.take_staged()
        if not staged:
            return lambda: None
        check = _write_staged_sent(staged)

        def written() -> None:
            check()
            transaction.on_commit(lambda: _announce(staged))

        return written

    def take_staged(self) -> list[_StagedOrder]:
        """What is staged, without writing it (the caller writes the rows itself)."""
        staged, self._staged = list(self._staged.values()), {}
        self._held = {}
        return staged


def _write_staged(staged: list[_StagedOrder]) -> None:
    """The staged orders' UPDATEs, each conditional on the version the order was locked at,
    each order's audit rows inserted by the statement that writes it.

    On PostgreSQL, orders writing the same columns share one statement (`bulk.update_rows`):
    a batch of fills across twenty orders is one UPDATE with its audit rows, not twenty round
    trips. An order is written exactly as alone: the same columns, from the same version.
    """
    _write_staged_sent(staged)()


def _write_staged_sent(staged: list[_StagedOrder]) -> Callable[[], None]:
    """`_write_staged` for statements sent together (`common.pipeline`): the function returned
    checks every write (`VersionConflict`) after the block."""
    by_columns: dict[tuple[str, ...], list[_StagedOrder]] = {}
    for item in sorted(staged, key=lambda s: str(s.order.pk)):
        names = tuple(sorted({*_ALWAYS_WRITTEN, *item.changed}))
        by_columns.setdefault(names, []).append(item)
    checks: list[Callable[[], None]] = []
    for names, items in by_columns.items():
        if connection.vendor != "postgresql" or len(items) == 1:
            checks += [
                _update_row_sent(item.order, item.changed, item.version_at_lock, item.records)
                for item in items
            ]
            continue
        attnames = [_ORDER_FIELDS[name].attname for name in names]
        answer = update_rows_sent(
            Order,
            names,
            [
                [item.order.pk, item.version_at_lock, *(getattr(item.order, a) for a in attnames)]
                for item in items
            ],
            guard="version",
            along=_audit_rows([record for item in items for record in item.records]),
        )
        checks.append(functools.partial(_check_written, items, answer))

    def check_all() -> None:
        for check in checks:
            check()

    return check_all


def _check_written(items: list[_StagedOrder], answer: Callable[[], set[Any]]) -> None:
    written = answer()
    for item in items:
        if item.order.pk not in written:
            current = Order.objects.get(pk=item.order.pk)
            raise VersionConflict(current=current, expected_version=item.version_at_lock)


def _audit_rows(records: Sequence[OrderTransition]) -> Along:
    return Along(
        OrderTransition,
        _TRANSITION_COLUMNS,
        [[getattr(record, name) for name in _TRANSITION_COLUMNS] for record in records],
        link="order_id",
    )


def _announce(staged: list[_StagedOrder]) -> None:
    for item in staged:
        order_changed.send(
            sender=Order, order=item.order, transition=item.records[-1], transitions=item.records
        )


_batch: contextvars.ContextVar[OrderWriteBatch | None] = contextvars.ContextVar(
    "order_write_batch", default=None
)


@contextlib.contextmanager
def order_writes_batched() -> Iterator[OrderWriteBatch]:
    """Within the block (inside the caller's transaction), writes to orders held by the batch
    are staged and flushed at its end. A write to an order the batch does not hold, or one
    that reads the row itself, flushes the batch first, so nothing ever reads a stale row."""
    batch = OrderWriteBatch()
    token = _batch.set(batch)
    try:
        yield batch
        batch.flush()
    finally:
        _batch.reset(token)


def flush_batched_writes() -> None:
    """Write what the current batch has staged (for a path about to read orders itself)."""
    batch = _batch.get()
    if batch is not None:
        batch.flush()


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _move(order: Order, to_state: str) -> str:
    """Apply the state machine's move in memory; raise IllegalTransition if there is none."""
    from_state: str = order.status
    method_name = TRANSITION_METHODS.get(to_state)
    if method_name is None:
        raise IllegalTransition(order_id=order.pk, from_state=from_state, to_state=to_state)
    try:
        getattr(order, method_name)()
    except TransitionNotAllowed:
        raise IllegalTransition(
            order_id=order.pk, from_state=from_state, to_state=to_state
        ) from None
    return from_state


def order_transition(
    *,
    order_id: uuid.UUID | str,
    to_state: str,
    trigger: str,
    expected_version: int | None = None,
    actor: str = "",
    reason: str = "",
    server_ts: datetime | None = None,
    changes: Mapping[str, Any] | None = None,
    locked: Order | None = None,
) -> Order:
    """Move an order to `to_state`, or raise IllegalTransition / VersionConflict.

    `expected_version=None` means "whatever the current version is": for writers that act on
    the broker's evidence (listener, verification), which re-read under the lock instead of
    asking a person to retry. `locked`: the order as the caller locked it in its transaction.
    """
    TransitionTrigger(trigger)  # a typo in a trigger is a programming error: fail loudly
    if locked is not None:
        from_state = _move(_check_version(locked, expected_version), to_state)
    with _in_callers_lock(locked):
        if locked is None:
            order = _lock_order(order_id, expected_version)
            from_state = _move(order, to_state)
        else:
            order = locked
        record = _write(
            order,
            from_state=from_state,
            now=timezone.now(),
            state_changed=True,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes or {},
        )
    if record.is_correction:
        logger.warning(
            "order %s corrected from %s to %s: %s", order.pk, from_state, order.status, reason
        )
    return order


@dataclass(frozen=True)
class Settled:
    order: Order
    # False: the order had moved on (newer evidence got there first) and was left as it is.
    applied: bool


def order_settle(
    *,
    order_id: uuid.UUID | str,
    to_state: str,
    applies: Callable[[Order], bool],
    trigger: str,
    actor: str = "",
    reason: str = "",
    changes: Mapping[str, Any] | None = None,
) -> Settled:
    """Move the order to `to_state` only while `applies(order)` holds under its row lock.

    For a writer whose evidence is about an earlier moment (a placement's REST answer, a
    verification's search): when the order has moved on meanwhile, the newer evidence wins and
    the order is returned as it stands, unchanged (see `orders.lifecycle`).
    """
    with transaction.atomic():
        order = _lock_order(order_id, None)
        if not applies(order):
            return Settled(order, applied=False)
        order = order_transition(
            order_id=order.pk,
            to_state=to_state,
            trigger=trigger,
            actor=actor,
            reason=reason,
            changes=changes,
            locked=order,
        )
    return Settled(order, applied=True)


def order_update(
    *,
    order_id: uuid.UUID | str,
    changes: Mapping[str, Any],
    trigger: str,
    expected_version: int | None = None,
    actor: str = "",
    reason: str = "",
    server_ts: datetime | None = None,
    locked: Order | None = None,
) -> Order:
    """Change an order's fields without changing its state; audited and versioned like a move."""
    TransitionTrigger(trigger)

    def check(order: Order) -> Order:
        if (
            order.status in lifecycle.TERMINAL
            and set(changes) & _TERMS
            and trigger not in BROKER_TRIGGERS
        ):
            raise IllegalTransition(
                order_id=order.pk, from_state=order.status, to_state=order.status
            )
        return order

    if locked is not None:
        check(_check_version(locked, expected_version))
    with _in_callers_lock(locked):
        order = locked if locked is not None else check(_lock_order(order_id, expected_version))
        _write(
            order,
            from_state=order.status,
            now=timezone.now(),
            state_changed=False,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
        )
    return order


def order_create(
    *,
    order_id: uuid.UUID | None = None,
    account_id: int,
    contract_id: str,
    side: str,
    type: str,
    size: int,
    limit_price: Any = None,
    stop_price: Any = None,
    trail_price: Any = None,
    idempotency_key: str | None = None,
    custom_tag: str | None = None,
    broker_order_id: int | None = None,
    created_by: str = "",
    account_seq: int | None = None,
    stop_loss_ticks: int | None = None,
    take_profit_ticks: int | None = None,
    bracket_role: str | None = None,
    bracket_parent_id: uuid.UUID | None = None,
    submitting: InitialMove | None = None,
) -> Order:
    """Store a new order in `created`. Placement (issue: placing orders) builds on this.

    An order placed with brackets is their entry; a mirrored bracket child is given its role
    and entry (`orders.brackets.bracket_child_fields`). `order_id`: a primary key chosen before
    the insert (acceptance inserts the idempotency record naming it first).

    `submitting`: the order is sent at once (first in its account's queue, with the turn): it
    moves `created` -> `submitting` through `order_transition` as any move does (the same
    checks, its audit row, its version, `order_changed` after commit), and is inserted as it
    stands after the move, with its audit row: two statements where an INSERT, an UPDATE and
    an INSERT were three, on every placement."""
    if bracket_role is None:
        has_brackets = stop_loss_ticks is not None or take_profit_ticks is not None
        bracket_role = BracketRole.ENTRY if has_brackets else ""
    fields = dict(
        id=order_id or uuid.uuid4(),
        stop_loss_ticks=stop_loss_ticks,
        take_profit_ticks=take_profit_ticks,
        bracket_role=bracket_role,
        bracket_parent_id=bracket_parent_id,
        account_id=account_id,
        contract_id=contract_id,
        side=side,
        type=type,
        size=size,
        limit_price=limit_price,
        stop_price=stop_price,
        trail_price=trail_price,
        idempotency_key=idempotency_key,
        custom_tag=custom_tag,
        broker_order_id=broker_order_id,
        created_by=created_by,
        account_seq=account_seq,
        status=OrderStatus.CREATED,
        state_entered_at=timezone.now(),
    )
    order = Order(**fields)
    staged: list[_StagedOrder] = []
    if submitting is not None:
        batch = OrderWriteBatch()
        token = _batch.set(batch)
        try:
            batch.hold(order)  # in memory until inserted below: nobody else can see it yet
            order_transition(
                order_id=order.pk,
                to_state=OrderStatus.SUBMITTING,
                trigger=submitting.trigger,
                actor=submitting.actor,
                changes=submitting.changes,
                locked=order,
            )
        finally:
            _batch.reset(token)
        staged = batch.take_staged()
    # Written directly, not through the ORM's INSERT (on a busy account every order after the
    # first is stored in `created`, under the account's row lock); a `submitting` order with
    # its audit row, in one statement.
    insert_row(
        Order,
        _INSERTED_COLUMNS,
        [f.pre_save(order, add=True) for f in _INSERTED_FIELDS],
        along=_audit_rows([record for item in staged for record in item.records]),
    )
    order._state.adding = False
    order._state.db = connection.alias
    if staged:
        transaction.on_commit(lambda: _announce(staged))
    return order


@dataclass(frozen=True)
class InitialMove:
    """Who moves an order to `submitting` as it is created (`order_create(submitting=...)`)."""

    trigger: str
    actor: str
    changes: Mapping[str, Any]


_INSERTED_FIELDS = list(Order._meta.concrete_fields)
_INSERTED_COLUMNS = [f.attname for f in _INSERTED_FIELDS]


class BrokerEvidence(StrEnum):
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    STALE = "stale"


@dataclass(frozen=True)
class BrokerOrderResult:
    order: Order
    outcome: BrokerEvidence
    # The broker reports more filled than the fills we hold: fetch them (Trade/search).
    fills_missing: bool = False


def order_apply_broker_order(
    *,
    order_id: uuid.UUID | str,
    broker_order: Any,
    trigger: str,
    reason: str,
    actor: str = "",
    locked: Order | None = None,
    cancel_refused: bool = False,
) -> BrokerOrderResult:
    """Bring an order to the state the broker reports (a `projectx.models.Order`).

    The decision is `orders.lifecycle.state_for_broker_report`'s; `cancel_refused`: the broker
    definitively refused a cancel of this order, so "still working" is believed at once.

    Evidence older than the newest already applied (by the broker's `updateTimestamp`, else
    `creationTimestamp`) never moves the state backwards: it is reported as stale. When the
    broker counts more filled than the fills we hold, `order_fills_missing` is sent after
    commit so the fills app fetches them.
    """
    # A savepoint only when the caller does not already hold the row lock in its transaction
    # (the listener's batches apply hundreds of these per transaction).
    with _in_callers_lock(locked):
        return _apply_broker_order(
            order_id=order_id,
            broker_order=broker_order,
            trigger=trigger,
            reason=reason,
            actor=actor,
            locked=locked,
            cancel_refused=cancel_refused,
        )


def _apply_broker_order(
    *,
    order_id: uuid.UUID | str,
    broker_order: Any,
    trigger: str,
    reason: str,
    actor: str,
    locked: Order | None,
    cancel_refused: bool,
) -> BrokerOrderResult:
    order = locked if locked is not None else _lock_order(order_id, None)
    server_ts = broker_order.update_timestamp or broker_order.creation_timestamp
    if lifecycle.is_stale(order, server_ts):
        return BrokerOrderResult(order, BrokerEvidence.STALE)

    changes: dict[str, Any] = {}
    if order.broker_order_id is None:
        changes["broker_order_id"] = broker_order.id
    # The broker's terms are the truth: a modify it accepted shows here even when its answer
    # was lost, or when the order filled before the answer arrived.
    changes.update(
        lifecycle.broker_terms_differ(
            order,
            size=broker_order.size,
            limit_price=broker_order.limit_price,
            stop_price=broker_order.stop_price,
        )
    )
    fills_missing = broker_order.fill_volume > order.filled_size
    # Only a count ahead of the fills we hold is worth a write (the sweep backfills from it);
    # an event that repeats what the fills already say changes nothing.
    if fills_missing and broker_order.fill_volume != order.broker_fill_volume:
        changes["broker_fill_volume"] = broker_order.fill_volume
    if fills_missing:
        transaction.on_commit(lambda: order_fills_missing.send(sender=Order, order_id=order.pk))

    target = lifecycle.state_for_broker_report(
        order, broker_status=broker_order.status, now=timezone.now(), cancel_refused=cancel_refused
    )
    if lifecycle.broker_reports_back_to_working(order, target):
        reason = f"{reason}; the cancel did not take effect, the broker still has it working"
        changes["status_reason"] = reason[:2000]
    if target is None or target == order.status:
        # No move (a repeated working state is the fills' to record). Write only what is new.
        if not changes:
            return BrokerOrderResult(order, BrokerEvidence.UNCHANGED, fills_missing)
        order = order_update(
            order_id=order.pk,
            changes=changes,
            trigger=trigger,
            reason=reason,
            actor=actor,
            server_ts=server_ts,
            locked=order,
        )
        return BrokerOrderResult(order, BrokerEvidence.APPLIED, fills_missing)

    if lifecycle.needs_open_first(order.status, target):
        order = order_transition(
            order_id=order.pk,
            to_state=OrderStatus.OPEN,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
            locked=order,
        )
        changes = {}
    try:
        order = order_transition(
            order_id=order.pk,
            to_state=target,
            trigger=trigger,
            actor=actor,
            reason=reason,
            server_ts=server_ts,
            changes=changes,
            locked=order,
        )
    except IllegalTransition:
        logger.warning(
            "broker reports %s for order %s, which is %s locally: not applied",
            broker_order.status,
            order.pk,
            order.status,
        )
        return BrokerOrderResult(order, BrokerEvidence.UNCHANGED, fills_missing)
    return BrokerOrderResult(order, BrokerEvidence.APPLIED, fills_missing)
