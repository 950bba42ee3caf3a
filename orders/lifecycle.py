"""Every decision "what state is this order in now, given this evidence", in one place.

Placement, verification, cancel and modify, the position close, the stuck sweep and the fills
app each hold some evidence about an order (a REST answer, a hub event, a search result, the
fills held, the clock). None of them decides on its own what that evidence means for the
order's state: they ask this module, and write through `orders.services`, which enforces the
state machine declared on the model.

The rule that runs through all of it: **newer evidence wins**. A writer whose evidence is about
an earlier moment than the order's current state (a REST answer to a placement that the hub
already reported working; a cancel's answer after the broker's cancellation event) adopts the
order as it now stands instead of forcing its own conclusion: it never answers
`illegal_transition` for something the broker has already moved on from.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Protocol

from django.conf import settings
from django.db.models import F, Q

from orders.models import FILL_AT_ONCE_TYPES, TERMINAL_STATES, OrderStatus
from orders.wire import local_state_for
from projectx.enums import OrderStatus as BrokerOrderStatus

S = OrderStatus

# --- The named state sets ---------------------------------------------------------------------

TERMINAL: frozenset[str] = TERMINAL_STATES
# Working at the broker: it can still fill.
WORKING: frozenset[str] = frozenset({S.OPEN, S.PARTIALLY_FILLED, S.PENDING_CANCEL})
# Where a cancel or modify can be sent to the broker.
CANCELLABLE: frozenset[str] = frozenset({S.OPEN, S.PARTIALLY_FILLED})
MODIFIABLE: frozenset[str] = frozenset({S.OPEN, S.PARTIALLY_FILLED})
# The placement's outcome is not known yet: stored, in flight, or unverified.
OUTCOME_PENDING: frozenset[str] = frozenset({S.CREATED, S.SUBMITTING, S.UNKNOWN})
# What a fill can move an order out of into `partially_filled` (the broker filled something
# we had not seen working yet, or had concluded was absent).
PARTIAL_FILL_SOURCES: frozenset[str] = frozenset(
    {S.SUBMITTING, S.UNKNOWN, S.OPEN, S.PARTIALLY_FILLED, S.FAILED}
)


class OrderLike(Protocol):
    status: str
    size: int
    filled_size: int
    state_entered_at: datetime
    last_server_ts: datetime | None


# --- Broker reports (hub events, REST look-ups, verification) ---------------------------------


def cancel_timeout() -> timedelta:
    """How long a cancel may stay unconfirmed before the broker's "still working" is believed."""
    return timedelta(seconds=settings.ORDER_MANAGEMENT.lifecycle.stuck_after_seconds.pending_cancel)


def is_stale(order: OrderLike, server_ts: datetime | None) -> bool:
    """Evidence older than the newest already applied never moves the state backwards."""
    return (
        server_ts is not None
        and order.last_server_ts is not None
        and server_ts < order.last_server_ts
    )


def state_for_broker_report(
    order: OrderLike, *, broker_status: int, now: datetime, cancel_refused: bool = False
) -> str | None:
    """Where the broker's report of the order takes it, given the fills we hold.

    - The fill history is the source of truth for how much is filled: a working order is
      `partially_filled` only when we hold fills, and a broker `Filled` waits (as partially
      filled, or where it is) until the fills that make it up have arrived.
    - A cancel we asked for and the broker has not confirmed stays `pending_cancel` while the
      broker still reports the order working, until `cancel_timeout()` has passed (then it is
      working again, and the reason says so), or at once when the broker refused the cancel.

    None: the report says nothing we can act on.
    """
    target = local_state_for(broker_status)
    if target == S.PENDING_CANCEL and order.status not in WORKING:
        # The broker reports "pending cancellation" for an order we never saw working: the
        # lifecycle passes through `open` (see `needs_open_first`).
        return target
    if target in {S.OPEN, S.PARTIALLY_FILLED}:
        working = S.PARTIALLY_FILLED if order.filled_size > 0 else S.OPEN
        if (
            order.status == S.PENDING_CANCEL
            and not cancel_refused
            and now - order.state_entered_at < cancel_timeout()
        ):
            return S.PENDING_CANCEL
        return working
    if target == S.FILLED and order.filled_size < order.size:
        if order.filled_size > 0:
            return S.PARTIALLY_FILLED
        return order.status if order.status in WORKING else S.OPEN
    return target


def needs_open_first(from_state: str, to_state: str) -> bool:
    """The broker can report "pending cancellation" for an order we never saw working (it was
    `unknown`): the lifecycle has no direct edge, so the order passes through `open`."""
    return to_state == S.PENDING_CANCEL and from_state in {S.SUBMITTING, S.UNKNOWN, S.FAILED}


def broker_reports_back_to_working(order: OrderLike, target: str | None) -> bool:
    """A pending cancel the broker did not carry out: the order is working again."""
    return order.status == S.PENDING_CANCEL and target in {S.OPEN, S.PARTIALLY_FILLED}


# --- Fills --------------------------------------------------------------------------------------


def state_for_fills(order: OrderLike, *, filled: int) -> str | None:
    """Where holding `filled` contracts of fills takes the order (None: no move).

    `partially_filled` and `pending_cancel` are returned even when the order is already there:
    a new fill in those states is recorded as a move of its own (a self-loop in the audit).
    """
    if filled >= order.size:
        return S.FILLED
    if filled > 0 and order.status in PARTIAL_FILL_SOURCES:
        return S.PARTIALLY_FILLED
    if filled > 0 and order.status == S.PENDING_CANCEL:
        return S.PENDING_CANCEL  # a fill while the cancel is pending
    return None


def is_overfilled(order: OrderLike, *, filled: int) -> bool:
    """More filled than ordered: kept as the broker reported, flagged, never clamped."""
    return filled > order.size


def fill_timeout_due(*, now: datetime) -> Q:
    """Orders with no completion `partialFillTracking.timeoutSeconds` after their last fill (or,
    for a market or join order that fills at once, after submission), not yet handled since.

    A resting limit or stop order without fills is waiting for its price, not stalled. Derived
    from stored times, so it survives restarts.
    """
    timeout = timedelta(seconds=settings.ORDER_MANAGEMENT.partial_fill_tracking.timeout_seconds)
    cutoff = now - timeout
    not_handled_since_last_fill = Q(fill_timeout_handled_at__isnull=True) | Q(
        fill_timeout_handled_at__lt=F("last_fill_at")
    )
    partially = Q(status=S.PARTIALLY_FILLED, last_fill_at__lt=cutoff)
    overdue = Q(
        status=S.OPEN,
        type__in=FILL_AT_ONCE_TYPES,
        filled_size=0,
        submitted_at__lt=cutoff,
        fill_timeout_handled_at__isnull=True,
    )
    return (partially | overdue) & not_handled_since_last_fill


# --- Placement ----------------------------------------------------------------------------------


def placement_answer_applies(order: OrderLike) -> bool:
    """A REST answer to a placement is evidence about the moment the order was `submitting`.

    Once the order has left it (the hub reported it working, rejected or filled first, or
    verification found it), that answer is older than what the order already knows.
    """
    return order.status == S.SUBMITTING


def placement_http_status(order: OrderLike) -> int:
    """The HTTP status a placement answers with, from where the order stands now."""
    if order.status in OUTCOME_PENDING:
        return 202
    if order.status in TERMINAL and order.status != S.FILLED and order.filled_size == 0:
        return 422
    return 201


def absence_applies(order: OrderLike) -> bool:
    """Only an order whose placement outcome is unknown can be concluded absent (`failed`)."""
    return order.status == S.UNKNOWN


# --- Cancel and modify --------------------------------------------------------------------------


class CancelDecision(StrEnum):
    LOCAL = "local"  # never sent: cancelled here, nothing to ask the broker
    SEND = "send"  # working: ask the broker
    RESEND = "resend"  # already pending: asking again is harmless and settles it sooner
    ALREADY_CANCELLED = "already_cancelled"  # a retry of a cancel that took effect
    NOT_CANCELLABLE = "not_cancellable"  # filled, rejected, expired or failed: nothing to cancel
    OUTCOME_NOT_KNOWN = "outcome_not_known"  # the placement's outcome is not known yet


def cancel_decision(order: OrderLike) -> CancelDecision:
    if order.status == S.CREATED:
        return CancelDecision.LOCAL
    if order.status in CANCELLABLE:
        return CancelDecision.SEND
    if order.status == S.PENDING_CANCEL:
        return CancelDecision.RESEND
    if order.status == S.CANCELLED:
        return CancelDecision.ALREADY_CANCELLED
    if order.status in TERMINAL:
        return CancelDecision.NOT_CANCELLABLE
    return CancelDecision.OUTCOME_NOT_KNOWN


def cancel_http_status(order: OrderLike) -> int:
    """200 once the cancel took effect (or the order ended otherwise); 202 while unconfirmed."""
    return 202 if order.status == S.PENDING_CANCEL else 200


def modify_allowed(order: OrderLike) -> bool:
    return order.status in MODIFIABLE


class OrderTerms(Protocol):
    size: int
    limit_price: Decimal | None
    stop_price: Decimal | None


def broker_terms_differ(
    order: OrderTerms, *, size: int, limit_price: Decimal | None, stop_price: Decimal | None
) -> dict[str, object]:
    """The order terms the broker reports that differ from ours (the broker's are the truth:
    a modify it accepted shows here even when its answer never reached us)."""
    changes: dict[str, object] = {}
    if size > 0 and size != order.size:
        changes["size"] = size
    for field, value in (("limit_price", limit_price), ("stop_price", stop_price)):
        if value is not None and value != getattr(order, field):
            changes[field] = value
    return changes


# --- Brackets (orders/brackets.py acts on these) ------------------------------------------------

# The broker statuses of a bracket child that still works: Open and Pending can trigger;
# Suspended (8) is a child waiting for its entry.
_CHILD_ARMED = frozenset({BrokerOrderStatus.OPEN, BrokerOrderStatus.PENDING})
_CHILD_WORKING = _CHILD_ARMED | {BrokerOrderStatus.SUSPENDED}


def bracket_child_working(broker_status: int) -> bool:
    return broker_status in _CHILD_WORKING


def stop_protects(
    *, broker_status: int, remaining: int, exposure: int, entry_working: bool
) -> bool:
    """Does a stop-loss child, as the broker shows it, cover `exposure` filled contracts?

    It must be armed (Open or Pending) for at least that many. A Suspended child counts only
    while its entry is still working: the broker arms the children when the entry completes
    (or is cancelled after a partial fill), so a partly filled entry still resting keeps its
    stop Suspended by design. A Suspended stop under an entry that has ended protects nothing.
    """
    if remaining < exposure:
        return False
    if broker_status in _CHILD_ARMED:
        return True
    return broker_status == BrokerOrderStatus.SUSPENDED and entry_working


def protection_deadline(
    *, filled_at: datetime, stop_lost_at: datetime | None, within: timedelta
) -> datetime:
    """When an entry without a working stop must be acted on: `within` after its last fill,
    or after its stop was lost (rejected, cancelled) if that came later."""
    start = max(filled_at, stop_lost_at) if stop_lost_at is not None else filled_at
    return start + within


def oco_overdue(*, leg_filled_at: datetime, now: datetime, within: timedelta) -> bool:
    """A leg filled completely this long ago and its sibling still works: the broker's OCO
    did not happen, so we cancel the sibling ourselves."""
    return now - leg_filled_at >= within
