"""Turning the broker's events into fills, order states and positions.

Every event, live from the hub or fetched by the REST catch-up, goes through these functions,
so a replayed event changes nothing: fills are keyed by (account, broker trade id), order
events are ordered by the broker's server time, positions by theirs. Each function takes its
row locks in the documented order (Account -> Position -> Order) inside one transaction and
calls the broker, when it must, only after committing.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import Account
from accounts.services import RealizedEntry, realized_pnl_add, realized_pnl_add_sent
from common import metrics
from common.bulk import (
    column_arrays,
    column_list,
    fetch_instances_sent,
    insert_rows,
    instances_from_rows,
    rows_sent,
)
from common.pipeline import Sent, sent_together
from fills.averages import add_to_notional, average_price, fill_totals
from fills.models import Fill
from orders import brackets, lifecycle
from orders import wire as wire_maps
from orders.exceptions import IllegalTransition
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.services import (
    BrokerEvidence,
    BrokerOrderResult,
    OrderWriteBatch,
    flush_batched_writes,
    order_apply_broker_order,
    order_create,
    order_transition,
    order_update,
    order_writes_batched,
)
from projectx import enums
from projectx.models import Order as WireOrder
from projectx.models import Trade as WireTrade

logger = logging.getLogger(__name__)


class FillOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    VOIDED = "voided"
    ORPHAN = "orphan"  # kept with its broker order id until the order appears


@dataclass(frozen=True)
class FillResult:
    outcome: FillOutcome
    fill: Fill
    order: Order | None = None


def _lock_order_by_broker_id(account: Account, broker_order_id: int) -> Order | None:
    batch = _event_batch.get()
    if batch is not None:
        return batch.order_by_broker_id(account, broker_order_id)
    return (
        Order.objects.select_for_update()
        .filter(account=account, broker_order_id=broker_order_id)
        .first()
    )


def _settle_fills(
    order: Order, *, filled: int, notional: Decimal, last_fill_at: Any, trigger: str, reason: str
) -> Order:
    """Write new fill totals onto a locked order and move it where they take it."""
    overfilled = lifecycle.is_overfilled(order, filled=filled)
    if overfilled and not order.overfilled:
        logger.error(
            "ALERT order %s is overfilled: %d filled of %d; kept as the broker reported",
            order.pk,
            filled,
            order.size,
        )
        # Checked on the locked row, so two listeners applying fills at once count it once.
        transaction.on_commit(metrics.order_overfills_total.inc)
    changes = {
        "filled_size": filled,
        "fill_notional": notional,
        "avg_fill_price": average_price(notional, filled),
        "last_fill_at": last_fill_at,
        "overfilled": overfilled,
    }
    target = lifecycle.state_for_fills(order, filled=filled)
    self_loop = target in {OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL}
    if target is not None and (target != order.status or self_loop):
        try:
            return order_transition(
                order_id=order.pk,
                to_state=target,
                trigger=trigger,
                reason=reason,
                changes=changes,
                locked=order,
            )
        except IllegalTransition:
            pass  # e.g. more fills on a filled order: record the numbers below
    return order_update(
        order_id=order.pk, changes=changes, trigger=trigger, reason=reason, locked=order
    )


def _insert_unless_stored(fill: Fill) -> bool:
    """INSERT ... ON CONFLICT (account, broker_trade_id) DO NOTHING, in one round trip.

    True when this call stored the fill; False when the trade was already there (a replay, or
    another listener a moment ago). Cheaper than look-up-then-insert and race-free.
    """
    fields = [f for f in Fill._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(fill, add=True), connection) for f in fields]
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    table = connection.ops.quote_name(Fill._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders}) "
            "ON CONFLICT (account_id, broker_trade_id) DO NOTHING RETURNING id",
            values,
        )
        row = cursor.fetchone()
    if row is None:
        return False
    fill.pk = row[0]
    return True


def _count_fill_event(outcome: str) -> None:
    # After commit: an event whose transaction rolls back (alone, or with its batch) did not
    # happen, and a retry of it will count instead.
    batch = _event_batch.get()
    if batch is not None:
        batch.outcomes[outcome] += 1  # counted once, after the batch commits
        return
    transaction.on_commit(lambda: metrics.order_fill_events_total.labels(outcome).inc())


def fill_apply(*, account: Account, trade: WireTrade, trigger: str) -> FillResult:
    # Inside an event batch the batch's transaction is the unit: no savepoint per fill.
    with _own_transaction_unless_batched():
        result = _fill_apply(account, trade, trigger)
        _count_fill_event(result.outcome)
    return result


def _fill_apply(account: Account, trade: WireTrade, trigger: str) -> FillResult:
    order = _lock_order_by_broker_id(account, trade.order_id)
    batch = _event_batch.get()
    taken = batch.take_stored(account, trade) if batch is not None else None
    if taken is None:
        fill = _fill_from(account, trade, order)
        stored = _insert_unless_stored(fill)
    else:
        fill, stored = taken
    if stored and not fill.voided:
        _realized(account.pk, fill, 1)  # the day's realized P&L (daily loss limit)
    if not stored:
        if not trade.voided:
            return FillResult(FillOutcome.DUPLICATE, fill, order)  # a replay: nothing to do
        existing = Fill.objects.select_for_update().get(account=account, broker_trade_id=trade.id)
        if not existing.voided:
            return _void(existing, order, trigger)
        return FillResult(FillOutcome.DUPLICATE, existing, order)
    if batch is not None and fill.order_id is None and order is not None:
        # Stored ahead as an orphan, but its order appeared earlier in the batch (a mirror):
        # it belongs to it now, as it would had it been stored at its turn.
        Fill.objects.filter(pk=fill.pk).update(order=order)
        fill.order = order

    if order is None:
        logger.info(
            "fill %s for unknown broker order %s kept as an orphan", trade.id, trade.order_id
        )
        return FillResult(FillOutcome.ORPHAN, fill, None)
    if fill.voided:
        return FillResult(FillOutcome.VOIDED, fill, order)

    last_fill_at = max(filter(None, [order.last_fill_at, fill.broker_ts]))
    order = _settle_fills(
        order,
        filled=order.filled_size + fill.size,
        notional=add_to_notional(order.fill_notional, price=fill.price, size=fill.size),
        last_fill_at=last_fill_at,
        trigger=trigger,
        reason=f"fill {trade.id}: {fill.size} @ {format(fill.price.normalize(), 'f')}",
    )
    return FillResult(FillOutcome.APPLIED, fill, order)


def _void(fill: Fill, order: Order | None, trigger: str) -> FillResult:
    fill.voided = True
    fill.save(update_fields=["voided"])
    _realized(fill.account_id, fill, -1)  # a voided trade's P&L is taken back
    logger.error(
        "ALERT trade %s voided by the broker (order %s)", fill.broker_trade_id, fill.order_id
    )
    if order is not None:
        order = _recompute(order, trigger=trigger, reason=f"trade {fill.broker_trade_id} voided")
    return FillResult(FillOutcome.VOIDED, fill, order)


# The realized P&L of the trading day, kept by accounts (orders may not read
# fills, so the daily loss limit reads these totals). Alone: one upsert per trade; in an
# event batch: collected, one upsert per account when the batch ends.


def _realized(account_id: int, fill: Fill, sign: int) -> None:
    entry = RealizedEntry(
        contract_id=fill.contract_id,
        at=fill.broker_ts,
        profit_and_loss=sign * (fill.profit_and_loss or Decimal(0)),
        fees=sign * (fill.fees or Decimal(0)),
        trades=sign,
    )
    batch = _event_batch.get()
    if batch is not None:
        batch.realized.setdefault(account_id, []).append(entry)
        return
    realized_pnl_add(account_id=account_id, entries=[entry])


def _recompute(order: Order, *, trigger: str, reason: str) -> Order:
    fills = list(Fill.objects.filter(order=order))
    batch = _event_batch.get()
    if batch is not None:
        # Fills the batch stored ahead but whose events have not been applied yet are counted
        # when they are, not here.
        pending = batch.pending_fill_ids()
        fills = [f for f in fills if f.pk not in pending]
    filled, notional = fill_totals(fills)
    live = [f.broker_ts for f in fills if not f.voided]
    return _settle_fills(
        order,
        filled=filled,
        notional=notional,
        last_fill_at=max(live) if live else None,
        trigger=trigger,
        reason=reason,
    )


@transaction.atomic
def fills_attach_orphans(
    *, order_id: uuid.UUID | str, trigger: str = TransitionTrigger.BROKER_STREAM
) -> int:
    """Attach fills that arrived before their order was known, and recompute its totals."""
    flush_batched_writes()  # the order is read from the database below
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.broker_order_id is None:
        return 0
    batch = _event_batch.get()
    attached = (
        Fill.objects.filter(
            account_id=order.account_id, broker_order_id=order.broker_order_id, order__isnull=True
        )
        # Fills a batch stored ahead arrive at their own event's turn, not now.
        .exclude(pk__in=batch.pending_fill_ids() if batch is not None else ())
        .update(order=order)
    )
    if attached:
        _recompute(order, trigger=trigger, reason=f"{attached} earlier fill(s) attached")
    return attached


def fills_attach_all_orphans() -> int:
    """Sweep: attach every orphan fill whose order has appeared since."""
    order_ids = set(
        Order.objects.filter(
            broker_order_id__isnull=False,
            account__fills__order__isnull=True,
            account__fills__broker_order_id=F("broker_order_id"),
        ).values_list("pk", flat=True)
    )
    return sum(fills_attach_orphans(order_id=order_id) for order_id in order_ids)


# The listener sets this: it backfills from its periodic sweep (orders whose broker fill volume
# is still ahead of their fills after a grace period) instead of one Trade/search per event,
# which would spend the broker's rate limit on fills that are usually a few ms behind.
defer_backfill: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "defer_backfill", default=False
)


@contextlib.contextmanager
def backfill_deferred() -> Iterator[None]:
    """Within the block, a missing-fills signal does not call the broker (see defer_backfill);
    the setting ends with the block, so it never leaks into a caller's later work."""
    token = defer_backfill.set(True)
    try:
        yield
    finally:
        defer_backfill.reset(token)


def fills_backfill(
    *, order_id: uuid.UUID | str, trigger: str = TransitionTrigger.BROKER_REST
) -> int:
    """Fetch an order's trades from the broker (Trade/search) and apply the ones we lack."""
    order = Order.objects.select_related("account").get(pk=order_id)
    if order.broker_order_id is None:
        return 0
    margin = timedelta(
        seconds=settings.ORDER_MANAGEMENT.partial_fill_tracking.catch_up_margin_seconds
    )
    since = (order.submitted_at or order.created_at) - margin
    trades = get_gateway().search_trades(
        account_id=order.account.broker_account_id, start=since, budget=5.0
    )
    applied = 0
    for trade in trades:
        if trade.order_id == order.broker_order_id:
            result = fill_apply(account=order.account, trade=trade, trigger=trigger)
            applied += result.outcome in {FillOutcome.APPLIED, FillOutcome.VOIDED}
    return applied


# --- Order events --------------------------------------------------------------------------


def _find_or_mirror(account: Account, wire: WireOrder, trigger: str) -> tuple[Order, bool]:
    """The local order for a broker order, locked: by broker id, else by our customTag, else
    a mirror of an order placed outside this system (so its fills have an order to belong to).
    Returns (order, whether this call created the mirror). Call inside a transaction."""
    batch = _event_batch.get()
    if batch is not None:
        held = batch.order_for_wire(account, wire)
        if held is not None:
            return held, False
        flush_batched_writes()  # a mirror is created and read from the database
    match = Q(broker_order_id=wire.id)
    if wire.custom_tag:
        match |= Q(custom_tag=wire.custom_tag)
    order = Order.objects.select_for_update().filter(account=account).filter(match).first()
    if order is not None:
        return _held_by_batch(account, order), False
    created = False
    try:
        with transaction.atomic():
            order = order_create(
                account_id=account.pk,
                contract_id=wire.contract_id,
                side=wire_maps.from_wire_side(wire.side),
                type=wire_maps.from_wire_type(wire.type),
                size=wire.size,
                limit_price=wire.limit_price,
                stop_price=wire.stop_price,
                trail_price=wire.trail_price,
                custom_tag=wire.custom_tag or None,
                broker_order_id=wire.id,
                created_by="broker",
                # A bracket child: its role and its entry.
                **brackets.bracket_child_fields(account_id=account.pk, wire=wire),
            )
            order_transition(
                order_id=order.pk,
                to_state=OrderStatus.SUBMITTING,
                trigger=trigger,
                reason="placed outside ordermgmt",
            )
            created = True
    except IntegrityError:
        pass  # another listener mirrored it first
    order = Order.objects.select_for_update().get(account=account, broker_order_id=wire.id)
    return _held_by_batch(account, order), created


def _held_by_batch(account: Account, order: Order) -> Order:
    batch = _event_batch.get()
    if batch is None:
        return order
    order.account = account
    batch.known(account, order)
    return batch.writes.hold(order)


def order_event_apply(*, account: Account, wire: WireOrder, trigger: str) -> BrokerOrderResult:
    with _own_transaction_unless_batched():
        return _order_event_apply(account, wire, trigger)


def _order_event_apply(account: Account, wire: WireOrder, trigger: str) -> BrokerOrderResult:
    order, mirrored = _find_or_mirror(account, wire, trigger)
    had_broker_id = order.broker_order_id is not None and not mirrored
    result = order_apply_broker_order(
        order_id=order.pk,
        broker_order=wire,
        trigger=trigger,
        reason=f"broker status {enums.OrderStatus(wire.status).name}",
        locked=order,
    )
    if not had_broker_id:
        fills_attach_orphans(order_id=order.pk, trigger=trigger)
    if result.outcome == BrokerEvidence.STALE:
        _count_fill_event("stale")
    return result


# --- Applying a batch of broker events set-wise --------------------------------------------


def _orders_locked(account: Account, broker_order_ids: set[int], tags: set[str]) -> Sent:
    """The account's orders with these broker ids or tags, locked, in primary-key order: the
    statement is sent now (`common.pipeline`), the function returned reads the orders.

    On PostgreSQL, one statement written once: the ORM compiled this query afresh for every
    batch, about a fifth of the CPU of a batch of one fill. The same statement makes the batch
    commit without waiting for its WAL to reach the disk (`set_config(..., true)` is SET LOCAL,
    so it costs no round trip of its own). Safe because the broker keeps what a lost commit
    held and the catch-up fetches it again (docs/decisions/0008).
    """
    if connection.vendor != "postgresql":
        match = Q(broker_order_id__in=broker_order_ids)
        if tags:
            match |= Q(custom_tag__in=tags)
        orders = (
            Order.objects.select_for_update(of=("self",))
            .filter(account=account)
            .filter(match)
            .order_by("pk")
        )
        return lambda: list(orders)
    return fetch_instances_sent(
        Order, _LOCK_ORDERS_SQL, [account.pk, sorted(broker_order_ids), sorted(tags)]
    )


_LOCK_ORDERS_SQL = (
    f"SELECT {column_list(Order)}, set_config('synchronous_commit', 'off', true) AS _commit "
    f"FROM {Order._meta.db_table} WHERE account_id = %s "
    "AND (broker_order_id = ANY(%s::bigint[]) OR custom_tag = ANY(%s::varchar[])) "
    f"ORDER BY {Order._meta.pk.column} FOR UPDATE"
)


class _EventBatch:
    """The orders and fills a batch of broker events touches, read and written together.

    Every event is still applied by the functions above, one after the other in the broker's
    order, with the same decisions; only the round trips are shared: the batch's orders are
    locked in one SELECT (in primary-key order, so two listeners never deadlock), its new
    fills are stored in one multi-row INSERT ... ON CONFLICT DO NOTHING, and the orders'
    writes are staged (`orders.services.OrderWriteBatch`): one UPDATE per order, the audit rows
    in one INSERT, one `order_changed` per order after commit.
    """

    def __init__(self, writes: OrderWriteBatch) -> None:
        self.writes = writes
        self.outcomes: Counter[str] = Counter()
        # (account pk, broker trade id) -> the fill stored for it, until its event takes it
        self._stored: dict[tuple[int, int], Fill] = {}
        # Broker order ids the batch looked for and found no order of (their fills are
        # orphans): not asked again, unless an order event mirrors one.
        self._absent: set[tuple[int, int]] = set()
        # account pk -> the realized P&L entries of the batch's trades
        self.realized: dict[int, list[RealizedEntry]] = {}

    # Orders ---------------------------------------------------------------------------------

    def lock_sent(
        self, account: Account, *, broker_order_ids: set[int], tags: set[str]
    ) -> Callable[[], None]:
        """Send the lock of the account's orders of the batch; the function returned holds
        them once the statement is answered (`common.pipeline`)."""
        if not broker_order_ids and not tags:
            return lambda: None
        locked = _orders_locked(account, broker_order_ids, tags)
        return lambda: self._hold(account, locked(), broker_order_ids)

    def _hold(self, account: Account, locked: list[Order], broker_order_ids: set[int]) -> None:
        """Hold the orders the batch locked; the broker ids it found none of are absent."""
        found: set[int | None] = set()
        for order in locked:
            order.account = account  # known: no query for it later (the desk row names it)
            self.writes.hold(order)
            found.add(order.broker_order_id)
        self._absent |= {(account.pk, i) for i in broker_order_ids if i not in found}

    def _held_orders(self, account: Account) -> list[Order]:
        return [o for o in self.writes.held_orders() if o.account_id == account.pk]

    def order_by_broker_id(self, account: Account, broker_order_id: int) -> Order | None:
        for order in self._held_orders(account):
            if order.broker_order_id == broker_order_id:
                return order
        if (account.pk, broker_order_id) in self._absent:
            return None
        flush_batched_writes()  # read from the database: nothing may be pending
        found = (
            Order.objects.select_for_update(of=("self",))
            .filter(account=account, broker_order_id=broker_order_id)
            .first()
        )
        if found is not None:
            found.account = account
            self.writes.hold(found)
        return found

    def known(self, account: Account, order: Order) -> None:
        if order.broker_order_id is not None:
            self._absent.discard((account.pk, order.broker_order_id))

    def order_for_wire(self, account: Account, wire: WireOrder) -> Order | None:
        held = self._held_orders(account)
        for order in held:
            if order.broker_order_id == wire.id:
                return order
        if wire.custom_tag:
            for order in held:
                if order.custom_tag == wire.custom_tag:
                    return order
        return None

    def lock_and_store_sent(
        self,
        account: Account,
        *,
        broker_order_ids: set[int],
        tags: set[str],
        trades: list[WireTrade],
    ) -> Callable[[], None]:
        """Send the lock of the account's orders of the batch and the INSERT of its new fills;
        the function returned holds the orders and keeps the fills stored, once answered.

        On PostgreSQL one statement: the fills take their orders from the rows it locks
        (`_lock_and_store_sql`), so a fill belongs to exactly the order the batch then holds,
        as when the INSERT followed the lock. Elsewhere, the lock then the INSERT."""
        new = _new_trades(trades)
        if connection.vendor != "postgresql" or not new:
            hold = self.lock_sent(account, broker_order_ids=broker_order_ids, tags=tags)

            def hold_then_store() -> None:
                hold()
                self.store(account, trades)

            return hold_then_store
        fills = [_fill_from(account, trade, None) for trade in new]
        received_at = timezone.now()
        arrays, params = column_arrays(
            Fill,
            _STORED_COLUMNS,
            [[*(getattr(fill, n) for n in _STORED_COLUMNS[:-1]), received_at] for fill in fills],
        )
        answer = rows_sent(
            _lock_and_store_sql(arrays),
            [account.pk, sorted(broker_order_ids), sorted(tags), *params],
        )

        def hold_and_keep() -> None:
            rows = answer()
            locked = instances_from_rows(Order, [r for r in rows if r[_ORDER_PK_AT] is not None])
            self._hold(account, locked, broker_order_ids)
            trade_ids, fill_ids = rows[0][-2:]
            stored = dict(zip(trade_ids or (), fill_ids or (), strict=True))
            for fill in fills:
                if fill.broker_trade_id not in stored:
                    continue
                owner = self.order_by_broker_id(account, fill.broker_order_id)
                fill.order_id = None if owner is None else owner.pk
                _fill_order.set_cached_value(fill, owner)
                fill.pk = stored[fill.broker_trade_id]
                self._stored[(account.pk, fill.broker_trade_id)] = fill

        return hold_and_keep

    # Fills ----------------------------------------------------------------------------------

    def store(self, account: Account, trades: list[WireTrade]) -> None:
        """Store the batch's new fills in one INSERT; each trade event then takes its own."""
        fills = [
            _fill_from(account, trade, self.order_by_broker_id(account, trade.order_id))
            for trade in _new_trades(trades)
        ]
        if not fills:
            return
        received_at = timezone.now()
        stored = dict(
            insert_rows(
                Fill,
                _FILL_COLUMNS,
                [
                    [*(getattr(fill, name) for name in _FILL_COLUMNS[:-1]), received_at]
                    for fill in fills
                ],
                on_conflict="(account_id, broker_trade_id) DO NOTHING",
                returning=("broker_trade_id", "id"),
            )
        )
        for fill in fills:
            if fill.broker_trade_id in stored:
                fill.pk = stored[fill.broker_trade_id]
                self._stored[(account.pk, fill.broker_trade_id)] = fill

    def pending_fill_ids(self) -> set[int]:
        """Fills stored ahead whose trade events are still to be applied: in the broker's
        order they have not arrived yet, so nothing counts or attaches them before then."""
        return {fill.pk for fill in self._stored.values()}

    def take_stored(self, account: Account, trade: WireTrade) -> tuple[Fill, bool] | None:
        """The fill the batch stored for this trade and True, once, for its first event;
        (a fill, False) for a replay; None for a trade the batch did not store (a void), which
        the caller stores itself. The fill's order is as stored: an orphan stays an orphan."""
        key = (account.pk, trade.id)
        if trade.voided:
            ahead = self._stored.pop(key, None)
            if ahead is None:
                return None  # not stored by the batch: the caller voids it as alone
            # The trade's void came before its own event: stored voided, as alone, and the
            # later event finds it stored (a replay), never counting it.
            ahead.voided = True
            ahead.save(update_fields=["voided"])
            return ahead, True
        fill = self._stored.pop(key, None)
        if fill is None:
            return _fill_from(account, trade, None), False
        return fill, True


# The columns the batch writes for a fill; received_at last (set once for the whole batch).
_FILL_COLUMNS = (
    "account_id",
    "order_id",
    "broker_trade_id",
    "broker_order_id",
    "contract_id",
    "side",
    "size",
    "price",
    "fees",
    "profit_and_loss",
    "voided",
    "broker_ts",
    "received_at",
)

# The same, but the order: the lock-and-store statement takes it from the rows it locks.
_STORED_COLUMNS = tuple(name for name in _FILL_COLUMNS if name != "order_id")


def _new_trades(trades: list[WireTrade]) -> list[WireTrade]:
    """The trades a batch stores ahead: each once, and no void (a void changes a stored fill:
    applied by its event, one at a time)."""
    new: list[WireTrade] = []
    seen: set[int] = set()
    for trade in trades:
        if not trade.voided and trade.id not in seen:
            seen.add(trade.id)
            new.append(trade)
    return new


_LOCK_AND_STORE: dict[str, str] = {}
# Where the order's primary key is in `column_list(Order)`: NULL there is the row of no order.
_ORDER_PK_AT = [f.attname for f in Order._meta.concrete_fields].index(Order._meta.pk.attname)


def _lock_and_store_sql(arrays: str) -> str:
    """The order lock (`_LOCK_ORDERS_SQL`) and the INSERT of the fills from `arrays`, each
    fill's order the locked row with its broker order id, in one statement. Its rows are the
    locked orders (none: one row of NULLs), each ending with the stored fills' broker trade
    ids and ids (NULL when none was stored)."""
    known = _LOCK_AND_STORE.get(arrays)
    if known is not None:
        return known
    order_id = (
        f"(SELECT locked.{Order._meta.pk.column} FROM locked "
        "WHERE locked.broker_order_id = source.broker_order_id)"
    )
    values = ", ".join(order_id if c == "order_id" else f"source.{c}" for c in _FILL_COLUMNS)
    sql = (
        f"WITH locked AS ({_LOCK_ORDERS_SQL}), "
        f"stored AS (INSERT INTO {Fill._meta.db_table} ({', '.join(_FILL_COLUMNS)}) "
        f"SELECT {values} "
        f"FROM unnest({arrays}) AS source({', '.join(_STORED_COLUMNS)}) "
        "ON CONFLICT (account_id, broker_trade_id) DO NOTHING RETURNING broker_trade_id, id) "
        "SELECT locked.*, fills.trade_ids, fills.fill_ids FROM (SELECT "
        "array_agg(broker_trade_id) AS trade_ids, array_agg(id) AS fill_ids FROM stored) AS fills "
        "LEFT JOIN locked ON true"
    )
    _LOCK_AND_STORE[arrays] = sql
    return sql


_event_batch: contextvars.ContextVar[_EventBatch | None] = contextvars.ContextVar(
    "fills_event_batch", default=None
)


def _own_transaction_unless_batched() -> Any:
    """Alone, an event is applied in an atomic block of its own; inside an event batch, in the
    batch's transaction (no savepoint per event, not even an atomic block to enter)."""
    if _event_batch.get() is not None:
        return contextlib.nullcontext()
    return transaction.atomic()


# A fill built positionally, its fields in the model's order (id, broker_trade_id, ...,
# account_id, order_id, received_at), skips the model's keyword path (a lookup per name, the
# relation descriptors): 26 -> 8 us a fill, and every trade event builds one. A test compares
# it with the ORM's, field for field.
_new_fill: Callable[..., Fill] = Fill  # the django-stubs plugin types keyword arguments only
_fill_account = Fill._meta.get_field("account")
_fill_order = Fill._meta.get_field("order")


def _fill_from(account: Account, trade: WireTrade, order: Order | None) -> Fill:
    values: tuple[Any, ...] = (
        None,
        trade.id,
        trade.order_id,
        trade.contract_id,
        wire_maps.from_wire_side(trade.side),
        trade.size,
        trade.price,
        trade.fees or Decimal(0),
        trade.profit_and_loss,
        trade.voided,
        trade.creation_timestamp,
        account.pk,
        None if order is None else order.pk,
        None,  # set when stored
    )
    fill = _new_fill(*values)
    # As Fill(account=..., order=...) would: the relations read from memory, not by a query.
    _fill_account.set_cached_value(fill, account)
    _fill_order.set_cached_value(fill, order)
    return fill


@dataclass
class AccountEvents:
    """One account's share of a batch: its trades and order events, in the broker's order."""

    account: Account
    trades: list[WireTrade] = field(default_factory=list)
    orders: list[WireOrder] = field(default_factory=list)


@contextlib.contextmanager
def events_batched(
    groups: list[AccountEvents], *, send_first: Callable[[], Sent] | None = None
) -> Iterator[Any]:
    """Apply these accounts' events set-wise within the block (inside the caller's
    transaction): `fill_apply` and `order_event_apply` behave exactly as alone, sharing the
    batch's reads and writes. Writes are flushed when the block ends.

    `send_first` sends the writes that come before the orders in the lock hierarchy (the
    batch's accounts and positions) and returns the function that reads their answers: they
    are sent with the order locks, one round trip for all (`common.pipeline`, PostgreSQL).
    The block gets what that function returned."""
    with order_writes_batched() as writes:
        batch = _EventBatch(writes)
        token = _event_batch.set(batch)
        try:
            with sent_together():
                first = send_first() if send_first is not None else None
                holds = [
                    batch.lock_and_store_sent(
                        group.account,
                        broker_order_ids={t.order_id for t in group.trades}
                        | {o.id for o in group.orders},
                        tags={o.custom_tag for o in group.orders if o.custom_tag},
                        trades=group.trades,
                    )
                    for group in sorted(groups, key=lambda g: g.account.pk)
                ]
            answered = first() if first is not None else None
            for hold in holds:
                hold()
            yield answered
            # The day's realized P&L (one upsert per account) and the orders' writes, sent
            # together: one round trip, the writes checked before the batch commits.
            with sent_together():
                sent = [
                    realized_pnl_add_sent(account_id=account_id, entries=entries)
                    for account_id, entries in sorted(batch.realized.items())
                ]
                sent.append(writes.flush_sent())
            for read in sent:
                read()
        finally:
            _event_batch.reset(token)
        outcomes = dict(batch.outcomes)
    if outcomes:
        transaction.on_commit(lambda: _count_outcomes(outcomes))


def _count_outcomes(outcomes: dict[str, int]) -> None:
    for outcome, count in outcomes.items():
        metrics.order_fill_events_total.labels(outcome).inc(count)
