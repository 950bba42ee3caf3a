"""Orders that stopped moving: finding them, counting them, and handing them to verification.

An order is stuck when it has stayed in its state longer than that state's threshold:
`lifecycle.stuckAfterSeconds` for created, submitting, unknown and pending_cancel; for open and
partially_filled, the fill timeout (`partialFillTracking.timeoutSeconds`): a market or join
order still without a fill that long after it was sent, a partially filled order without a new
fill that long. A resting limit or stop order without fills is waiting for its price, not stuck.

`stuck_orders_sweep(verify=True)` hands each one, oldest first, to what can move it:

1. created: never sent (the placing process died). Cancelled locally, under the account's
   placement turn: while another process holds the turn it may be sending this very order, so
   the order is left to it ("busy").
2. submitting: the request's outcome is unknown. Under the account's turn (so no process is
   still waiting for the broker's answer) it becomes `unknown`, then is verified.
3. unknown: verification (`order_verify`): found, verified absent, or still unknown.
4. pending_cancel: the broker is asked for the order and its answer adopted. It is never
   guessed into a terminal state: when the broker cannot be asked, or does not confirm, the
   order stays and an ALERT is logged.
5. open, partially_filled: the broker's view of the order is adopted (fills it counts that we
   lack are fetched); an order the broker still has working stays as it is.

6. bracket groups (with `verify`): the bracket guard (orders/brackets.py), OCO and the
   protection guarantee, exactly as the listener runs it.

A position close is stuck when it is in progress and its lease expired: the process running it
died (see orders/position_close.py). `stuck_closes_sweep(verify=True)` takes each over and
finishes it from the broker's truth, exactly as the next close request on the contract would.

Broker reads are paced to `lifecycle.stuckDetection.brokerReadsPerMinute`: the broker's limit
(200 per minute) is per user and shared with the web workers and the listener, and this
process's own limiter only knows about this process.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from django.conf import settings
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import PositionClose
from common import metrics
from common.locking import ADVISORY_NAMESPACE_PLACEMENT, TurnTimeout, advisory_lock
from orders.brackets import brackets_guard
from orders.exceptions import IllegalTransition, VersionConflict
from orders.models import FILL_AT_ONCE_TYPES, Order, OrderStatus, TransitionTrigger
from orders.placement import order_release_unsent
from orders.position_close import position_close_take_over
from orders.services import order_apply_broker_order, order_transition
from orders.verification import Outcome, order_verify
from projectx.errors import BrokerRejected, GatewayError

logger = logging.getLogger(__name__)

ACTOR = "stuck-detection"
BROKER_READ_BUDGET_SECONDS = 5.0
# How long to wait for an account's placement turn before leaving its order to the holder.
TURN_WAIT_SECONDS = 1.0
# Worst-case broker reads to handle one order: verification looks up and searches; adopting
# the broker's view reads the order; either may fetch missing fills (Trade/search).
READS_PER_ORDER: dict[str, int] = {
    OrderStatus.CREATED: 0,
    OrderStatus.SUBMITTING: 3,
    OrderStatus.UNKNOWN: 3,
    OrderStatus.PENDING_CANCEL: 2,
    OrderStatus.OPEN: 2,
    OrderStatus.PARTIALLY_FILLED: 2,
}
STUCK_STATES = tuple(READS_PER_ORDER)


class Resolution(StrEnum):
    RESOLVED = "resolved"  # it left the state it was stuck in
    UNCHANGED = "unchanged"  # handled; the broker (or verification) keeps it where it is
    UNCONFIRMED = "unconfirmed"  # the broker could not confirm anything: stays, alerts
    BUSY = "busy"  # another process holds the account's placement turn
    FAILED = "failed"  # handling raised; logged


@dataclass(frozen=True)
class StuckOrder:
    order_id: uuid.UUID | str
    state: str
    stuck_for: float  # seconds in the state (since the last fill, for the fill timeout)
    threshold: float


@dataclass(frozen=True)
class Handled:
    stuck: StuckOrder
    resolution: Resolution
    state_after: str
    detail: str = ""


@dataclass
class StuckReport:
    found: list[StuckOrder] = field(default_factory=list)
    handled: list[Handled] = field(default_factory=list)
    remaining: dict[str, int] = field(default_factory=dict)
    # What the bracket guard did on this run (OCO, protection; orders/brackets.py).
    brackets: Counter[str] = field(default_factory=Counter)

    @property
    def found_by_state(self) -> Counter[str]:
        return Counter(stuck.state for stuck in self.found)


# --- Finding ---------------------------------------------------------------------------------


def stuck_thresholds() -> dict[str, float]:
    config = settings.ORDER_MANAGEMENT
    after = config.lifecycle.stuck_after_seconds
    fill_timeout = config.partial_fill_tracking.timeout_seconds
    return {
        OrderStatus.CREATED: after.created,
        OrderStatus.SUBMITTING: after.submitting,
        OrderStatus.UNKNOWN: after.unknown,
        OrderStatus.PENDING_CANCEL: after.pending_cancel,
        OrderStatus.OPEN: fill_timeout,
        OrderStatus.PARTIALLY_FILLED: fill_timeout,
    }


def _stuck_condition(now: datetime) -> Q:
    def before(state: str) -> datetime:
        return now - timedelta(seconds=thresholds[state])

    thresholds = stuck_thresholds()
    condition = Q()
    for state in (
        OrderStatus.CREATED,
        OrderStatus.SUBMITTING,
        OrderStatus.UNKNOWN,
        OrderStatus.PENDING_CANCEL,
    ):
        condition |= Q(status=state, state_entered_at__lt=before(state))
    # Orders placed outside this system have no send time: their time in the state counts.
    open_cutoff = before(OrderStatus.OPEN)
    condition |= Q(status=OrderStatus.OPEN, type__in=FILL_AT_ONCE_TYPES, filled_size=0) & (
        Q(submitted_at__lt=open_cutoff)
        | Q(submitted_at__isnull=True, state_entered_at__lt=open_cutoff)
    )
    partial_cutoff = before(OrderStatus.PARTIALLY_FILLED)
    condition |= Q(status=OrderStatus.PARTIALLY_FILLED) & (
        Q(last_fill_at__lt=partial_cutoff)
        | Q(last_fill_at__isnull=True, state_entered_at__lt=partial_cutoff)
    )
    return condition


def stuck_orders(*, now: datetime) -> QuerySet[Order]:
    return Order.objects.filter(_stuck_condition(now))


def stuck_orders_count(*, now: datetime) -> dict[str, int]:
    """How many orders are stuck now, by state (every stuck state, zero included)."""
    counts = dict.fromkeys(STUCK_STATES, 0)
    by_state = stuck_orders(now=now).values_list("status").annotate(n=Count("pk")).order_by()
    for state, count in by_state:
        counts[state] = count
    return counts


def _since(order: Order) -> datetime:
    if order.status == OrderStatus.OPEN and order.submitted_at is not None:
        return order.submitted_at
    if order.status == OrderStatus.PARTIALLY_FILLED and order.last_fill_at is not None:
        return order.last_fill_at
    return order.state_entered_at


def stuck_orders_find(*, now: datetime, limit: int) -> list[StuckOrder]:
    thresholds = stuck_thresholds()
    orders = stuck_orders(now=now).order_by("state_entered_at")[:limit]
    return [
        StuckOrder(
            order_id=order.pk,
            state=order.status,
            stuck_for=(now - _since(order)).total_seconds(),
            threshold=thresholds[order.status],
        )
        for order in orders
    ]


# --- Handling --------------------------------------------------------------------------------


def _cancel_unsent(order: Order, stuck: StuckOrder) -> Handled:
    reason = f"stuck in created for {stuck.stuck_for:.0f} s: never sent; cancelled unsent"
    # Nothing reached the broker: the bot's retry with the same key places it, once.
    if not order_release_unsent(
        order=order,
        to_state=OrderStatus.CANCELLED,
        reason=reason,
        applies=lambda current: current.version == order.version,
        actor=ACTOR,
    ):
        current = Order.objects.get(pk=order.pk)
        return Handled(stuck, Resolution.RESOLVED, current.status, "moved meanwhile")
    return Handled(stuck, Resolution.RESOLVED, OrderStatus.CANCELLED, "never sent: cancelled")


def _declare_unknown(order: Order, stuck: StuckOrder) -> None:
    reason = f"stuck in submitting for {stuck.stuck_for:.0f} s: placement outcome unknown"
    order_transition(
        order_id=order.pk,
        to_state=OrderStatus.UNKNOWN,
        expected_version=order.version,
        trigger=TransitionTrigger.SWEEPER,
        actor=ACTOR,
        reason=reason,
        changes={"status_reason": reason},
    )


def _in_placement_turn(order: Order, stuck: StuckOrder) -> Handled | None:
    """created / submitting: act only while holding the account's placement turn."""
    try:
        with advisory_lock(
            ADVISORY_NAMESPACE_PLACEMENT, order.account_id, timeout=TURN_WAIT_SECONDS
        ):
            current = Order.objects.get(pk=order.pk)
            if current.status != stuck.state:
                return Handled(stuck, Resolution.RESOLVED, current.status, "moved meanwhile")
            if current.status == OrderStatus.CREATED:
                return _cancel_unsent(current, stuck)
            _declare_unknown(current, stuck)
            return None  # now unknown: verification follows, outside the turn
    except TurnTimeout:
        return Handled(stuck, Resolution.BUSY, stuck.state, "the account's placement turn is held")


def _verify(order: Order, stuck: StuckOrder) -> Handled:
    result = order_verify(order_id=order.pk, actor=ACTOR)
    state_after = result.order.status
    if result.outcome == Outcome.INCONCLUSIVE:
        return Handled(stuck, Resolution.UNCHANGED, state_after, f"verification: {result.detail}")
    detail = f"verification: {result.outcome}" + (f" by {result.rule}" if result.rule else "")
    return Handled(stuck, Resolution.RESOLVED, state_after, detail)


def _adopt_broker_view(order: Order, stuck: StuckOrder) -> Handled:
    """pending_cancel / open / partially_filled: the broker's view of the order, or nothing."""
    if order.broker_order_id is None:
        return _unconfirmed(order, stuck, "no broker order id to ask about")
    try:
        wire = get_gateway().get_order(
            account_id=order.account.broker_account_id,
            order_id=order.broker_order_id,
            budget=BROKER_READ_BUDGET_SECONDS,
        )
    except BrokerRejected as exc:
        return _unconfirmed(order, stuck, f"the broker does not know the order: {exc}")
    except GatewayError as exc:
        return _unconfirmed(order, stuck, f"the broker could not be asked: {exc}")
    order_apply_broker_order(
        order_id=order.pk,
        broker_order=wire,
        trigger=TransitionTrigger.SWEEPER,
        actor=ACTOR,
        reason=f"stuck in {stuck.state} for {stuck.stuck_for:.0f} s: broker state adopted",
    )
    # Re-read: fills the broker counts and we lacked were fetched after that commit, and may
    # have moved the order on (to filled) since.
    state_after = Order.objects.values_list("status", flat=True).get(pk=order.pk)
    if state_after != stuck.state:
        return Handled(stuck, Resolution.RESOLVED, state_after, "broker state adopted")
    if stuck.state == OrderStatus.PENDING_CANCEL:
        return _unconfirmed(order, stuck, "the broker still has the cancel pending")
    return Handled(stuck, Resolution.UNCHANGED, state_after, "the broker has it working")


def _unconfirmed(order: Order, stuck: StuckOrder, detail: str) -> Handled:
    logger.error(
        "ALERT order %s stuck in %s for %.0f s, not confirmed by the broker (%s); it stays %s",
        order.pk,
        stuck.state,
        stuck.stuck_for,
        detail,
        stuck.state,
    )
    return Handled(stuck, Resolution.UNCONFIRMED, stuck.state, detail)


def stuck_order_handle(*, stuck: StuckOrder) -> Handled:
    """Hand one stuck order to what can move it (see the module's steps)."""
    order = Order.objects.select_related("account").get(pk=stuck.order_id)
    if order.status != stuck.state:
        return Handled(stuck, Resolution.RESOLVED, order.status, "moved meanwhile")
    try:
        if order.status in {OrderStatus.CREATED, OrderStatus.SUBMITTING}:
            handled = _in_placement_turn(order, stuck)
            if handled is not None:
                return handled
            return _verify(order, stuck)
        if order.status == OrderStatus.UNKNOWN:
            return _verify(order, stuck)
        return _adopt_broker_view(order, stuck)
    except (IllegalTransition, VersionConflict):
        current = Order.objects.get(pk=order.pk)
        return Handled(stuck, Resolution.RESOLVED, current.status, "moved meanwhile")


class BrokerReadPacer:
    """Spaces out work so that its broker reads stay under `reads_per_minute`."""

    def __init__(
        self,
        reads_per_minute: int,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds_per_read = 60.0 / reads_per_minute
        self._sleep = sleep
        self._clock = clock
        self._next_at: float | None = None

    def take(self, reads: int) -> None:
        """Wait until `reads` more reads fit, then book them."""
        if reads <= 0:
            return
        now = self._clock()
        if self._next_at is not None and self._next_at > now:
            self._sleep(self._next_at - now)
            now = self._next_at
        self._next_at = now + reads * self.seconds_per_read


def stuck_orders_sweep(
    *,
    verify: bool,
    now: datetime | None = None,
    limit: int | None = None,
    reads_per_minute: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    on_handled: Callable[[Handled], None] | None = None,
) -> StuckReport:
    """Find stuck orders, count them, and (with `verify`) hand each to what can move it."""
    detection = settings.ORDER_MANAGEMENT.lifecycle.stuck_detection
    now = now or timezone.now()
    report = StuckReport(
        found=stuck_orders_find(now=now, limit=limit or detection.max_orders_per_run)
    )
    for stuck in report.found:
        metrics.order_stuck_total.labels(stuck.state).inc()
    if verify:
        pacer = BrokerReadPacer(reads_per_minute or detection.broker_reads_per_minute, sleep=sleep)
        for stuck in report.found:
            pacer.take(READS_PER_ORDER[stuck.state])
            try:
                handled = stuck_order_handle(stuck=stuck)
            except Exception as exc:  # one order must not stop the sweep
                logger.exception("handling stuck order %s failed", stuck.order_id)
                handled = Handled(stuck, Resolution.FAILED, stuck.state, str(exc))
            report.handled.append(handled)
            if on_handled is not None:
                on_handled(handled)
        report.brackets = bracket_groups_sweep()
    report.remaining = stuck_orders_count(now=timezone.now() if verify else now)
    return report


def bracket_groups_sweep() -> Counter[str]:
    """The bracket guard, from the sweep too: a listener that is down (or restarting) must not
    leave a filled entry without its stop. Every check is from stored times and the broker's
    truth, so running it here and in the listener at once is safe."""
    try:
        return brackets_guard()
    except Exception:  # the sweep's other work must not stop on it
        logger.exception("bracket guard failed")
        return Counter({"error": 1})


# --- Position closes whose process died -------------------------------------------------------


@dataclass(frozen=True)
class StuckClose:
    close_id: int
    account: int  # the broker's account id
    contract_id: str
    step: str
    owner: str
    expired_for: float  # seconds since the lease ran out (since the start, without a lease)


@dataclass(frozen=True)
class HandledClose:
    stuck: StuckClose
    resolution: Resolution
    state_after: str
    detail: str = ""


def stuck_closes_find(*, now: datetime) -> list[StuckClose]:
    closes = (
        PositionClose.objects.lease_expired(now=now)
        .select_related("account")
        .order_by("started_at")
    )
    return [
        StuckClose(
            close_id=close.pk,
            account=close.account.broker_account_id,
            contract_id=close.contract_id,
            step=close.step,
            owner=close.owner,
            expired_for=(now - (close.lease_expires_at or close.started_at)).total_seconds(),
        )
        for close in closes
    ]


def stuck_close_handle(*, stuck: StuckClose) -> HandledClose:
    """Take the close over and finish it; leave it to whoever claimed it first."""
    close = position_close_take_over(
        close_id=stuck.close_id, actor=ACTOR, trigger=TransitionTrigger.SWEEPER
    )
    if close is None:
        state = PositionClose.objects.values_list("state", flat=True).get(pk=stuck.close_id)
        return HandledClose(stuck, Resolution.BUSY, state, "taken over by another process")
    resolution = (
        Resolution.RESOLVED if close.state == PositionClose.State.DONE else Resolution.FAILED
    )
    return HandledClose(stuck, resolution, close.state, close.detail)


def stuck_closes_sweep(
    *,
    verify: bool,
    now: datetime | None = None,
    on_handled: Callable[[HandledClose], None] | None = None,
) -> tuple[list[StuckClose], list[HandledClose]]:
    """Find closes whose lease expired, alert, and (with `verify`) take each over."""
    found = stuck_closes_find(now=now or timezone.now())
    handled: list[HandledClose] = []
    for stuck in found:
        logger.error(
            "ALERT close %s of %s on account %s in progress at step %s: its lease expired "
            "%.0f s ago (owner %s)",
            stuck.close_id,
            stuck.contract_id,
            stuck.account,
            stuck.step,
            stuck.expired_for,
            stuck.owner or "(none)",
        )
        if not verify:
            continue
        try:
            result = stuck_close_handle(stuck=stuck)
        except Exception as exc:  # one close must not stop the sweep
            logger.exception("taking over close %s failed", stuck.close_id)
            result = HandledClose(
                stuck, Resolution.FAILED, PositionClose.State.IN_PROGRESS, str(exc)
            )
        handled.append(result)
        if on_handled is not None:
            on_handled(result)
    return found, handled
