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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q

from accounts.gateway import get_gateway
from accounts.models import Account
from common import metrics
from fills.averages import add_to_notional, average_price, fill_totals
from fills.models import Fill
from orders import lifecycle
from orders import wire as wire_maps
from orders.exceptions import IllegalTransition
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.services import (
    BrokerEvidence,
    BrokerOrderResult,
    order_apply_broker_order,
    order_create,
    order_transition,
    order_update,
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
    return (
        Order.objects.select_for_update()
        .filter(account=account, broker_order_id=broker_order_id)
        .first()
    )


def _settle_fills(
    order: Order, *, filled: int, notional: Decimal, last_fill_at: Any, trigger: str, reason: str
) -> Order:
    """Write new fill totals onto a locked order and move it where they take it."""
    overfilled = filled > order.size
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
    transaction.on_commit(lambda: metrics.order_fill_events_total.labels(outcome).inc())


@transaction.atomic
def fill_apply(*, account: Account, trade: WireTrade, trigger: str) -> FillResult:
    result = _fill_apply(account, trade, trigger)
    _count_fill_event(result.outcome)
    return result


def _fill_apply(account: Account, trade: WireTrade, trigger: str) -> FillResult:
    order = _lock_order_by_broker_id(account, trade.order_id)
    fill = Fill(
        account=account,
        order=order,
        broker_trade_id=trade.id,
        broker_order_id=trade.order_id,
        contract_id=trade.contract_id,
        side=wire_maps.from_wire_side(trade.side),
        size=trade.size,
        price=trade.price,
        fees=trade.fees or Decimal(0),
        profit_and_loss=trade.profit_and_loss,
        voided=trade.voided,
        broker_ts=trade.creation_timestamp,
    )
    if not _insert_unless_stored(fill):
        existing = Fill.objects.select_for_update().get(account=account, broker_trade_id=trade.id)
        if trade.voided and not existing.voided:
            return _void(existing, order, trigger)
        return FillResult(FillOutcome.DUPLICATE, existing, order)

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
    logger.error(
        "ALERT trade %s voided by the broker (order %s)", fill.broker_trade_id, fill.order_id
    )
    if order is not None:
        order = _recompute(order, trigger=trigger, reason=f"trade {fill.broker_trade_id} voided")
    return FillResult(FillOutcome.VOIDED, fill, order)


def _recompute(order: Order, *, trigger: str, reason: str) -> Order:
    fills = list(Fill.objects.filter(order=order))
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
    order = Order.objects.select_for_update().get(pk=order_id)
    if order.broker_order_id is None:
        return 0
    attached = Fill.objects.filter(
        account_id=order.account_id, broker_order_id=order.broker_order_id, order__isnull=True
    ).update(order=order)
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


def _find_or_mirror(account: Account, wire: WireOrder, trigger: str) -> Order:
    """The local order for a broker order, locked: by broker id, else by our customTag, else
    a mirror of an order placed outside this system (so its fills have an order to belong to).
    Call inside a transaction."""
    match = Q(broker_order_id=wire.id)
    if wire.custom_tag:
        match |= Q(custom_tag=wire.custom_tag)
    order = Order.objects.select_for_update().filter(account=account).filter(match).first()
    if order is not None:
        return order
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
            )
            order_transition(
                order_id=order.pk,
                to_state=OrderStatus.SUBMITTING,
                trigger=trigger,
                reason="placed outside ordermgmt",
            )
    except IntegrityError:
        pass  # another listener mirrored it first
    return Order.objects.select_for_update().get(account=account, broker_order_id=wire.id)


@transaction.atomic
def order_event_apply(*, account: Account, wire: WireOrder, trigger: str) -> BrokerOrderResult:
    order = _find_or_mirror(account, wire, trigger)
    had_broker_id = order.broker_order_id is not None
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
