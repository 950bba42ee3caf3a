"""Native bracket orders [reference 4.4]: an entry with a stop loss and a take profit, and the
guarantee that a filled entry is never left without its stop.

The broker does the bracket work: one placement with `stopLossBracket` / `takeProfitBracket`
creates the entry and two children (Suspended until the entry fills, then Open with absolute
prices; `parentOrderId` = the entry; customTag `<entryTag>-SL` / `-TP`), and when one leg fills
it cancels the other (OCO). This module

1. signs the ticks as the reference records them (`wire_brackets`: long, stop loss negative and
   take profit positive; short, reversed),
2. names a child's role and entry when the fills app mirrors it (`bracket_child_fields`),
3. tells a refusal for the account's bracket mode (`brackets_refusal`: 422
   `brackets_not_enabled` with the broker's message),
4. guards the groups (`brackets_guard`, run by the listener and by the stuck sweep):
   - OCO: a leg filled completely `brackets.ocoCancelWithinSeconds` ago and its sibling still
     works at the broker: we cancel the sibling (recorded as ours); a sibling the broker
     cancelled is recorded as the broker's.
   - Protection: an entry with a stop-loss bracket that has filled must show, at the broker, a
     working stop-loss child covering what the group still holds. It is checked through
     Order/search (which shows Suspended children; searchOpen does not, and trusting it is how
     an SDK once left 14 of 20 positions without stops, reference section 8), never from our
     mirror alone: the hub may be silent. Without one `brackets.protectWithinSeconds` after
     the fill or after the stop was lost, the entry is recorded `unprotected` (counted once in
     `order_unprotected_positions_total`, logged as an ALERT) and `brackets.onUnprotected`
     happens: `flatten` closes the position (orders/position_close.py: the contract's working
     orders are cancelled first, so it can never flip the account) or `alert` only.

Everything the guard needs is stored on the orders (the fill times, the protection state), so
a restarted process carries on where the last one stopped.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from accounts.gateway import get_gateway
from common import metrics
from orders import lifecycle
from orders.amend import order_cancel
from orders.exceptions import OrderError
from orders.models import BracketRole, Order, OrderSide, OrderStatus, Protection, TransitionTrigger
from orders.position_close import position_close
from orders.services import order_apply_broker_order, order_update
from projectx import enums
from projectx.errors import GatewayError
from projectx.models import Bracket
from projectx.models import Order as WireOrder

logger = logging.getLogger(__name__)

ACTOR = "bracket-guard"
STOP_LOSS_SUFFIX = "-SL"
TAKE_PROFIT_SUFFIX = "-TP"
CHILD_ROLES = (BracketRole.STOP_LOSS, BracketRole.TAKE_PROFIT)
# The broker's words when the account is in "Position Brackets" mode [reference 4.4].
AUTO_OCO_MARKER = "Auto OCO Brackets"
OCO_BY_BROKER = "broker"
OCO_BY_US = "ordermgmt"
BROKER_READ_BUDGET_SECONDS = 5.0
# A broker's OCO cancel older than this is not recorded any more (it is history by then).
RECORD_OCO_WITHIN = timedelta(hours=1)
# Order/search starts this long before the oldest guarded entry was sent.
SEARCH_MARGIN = timedelta(minutes=1)


# --- 1. Placement ---------------------------------------------------------------------------


def wire_brackets(order: Order) -> dict[str, Bracket]:
    """The bracket arguments of `place_order` for this entry (none for a plain order)."""
    direction = 1 if order.side == OrderSide.BUY else -1
    brackets: dict[str, Bracket] = {}
    if order.stop_loss_ticks is not None:
        brackets["stop_loss_bracket"] = Bracket(
            ticks=-direction * order.stop_loss_ticks, type=enums.OrderType.STOP
        )
    if order.take_profit_ticks is not None:
        brackets["take_profit_bracket"] = Bracket(
            ticks=direction * order.take_profit_ticks, type=enums.OrderType.LIMIT
        )
    return brackets


def brackets_refusal(order: Order) -> str | None:
    """The broker's message when it refused this entry because the account is not in "Auto
    OCO Brackets" mode; None otherwise. The broker says so only in words (errorCode 2 is its
    catch-all), kept in the order's status reason by the placement."""
    reason = order.status_reason
    if (
        order.status != OrderStatus.REJECTED
        or order.bracket_role != BracketRole.ENTRY
        or AUTO_OCO_MARKER not in reason
    ):
        return None
    # "broker rejected (OrderRejected): <message> [broker order 9057]"
    message = reason.split("): ", 1)[-1]
    return message.split(" [broker order", 1)[0].strip()


# --- 2. Children, as the fills app mirrors them ---------------------------------------------


def _role_of(wire: WireOrder) -> str:
    tag = wire.custom_tag or ""
    if tag.endswith(STOP_LOSS_SUFFIX):
        return BracketRole.STOP_LOSS
    if tag.endswith(TAKE_PROFIT_SUFFIX):
        return BracketRole.TAKE_PROFIT
    # Untagged (an entry placed without customTag): the take profit is the limit order, and
    # the only child that carries linkedOrderId (the stop loss's id).
    if wire.linked_order_id is not None or wire.type == enums.OrderType.LIMIT:
        return BracketRole.TAKE_PROFIT
    return BracketRole.STOP_LOSS


def bracket_child_fields(*, account_id: int, wire: WireOrder) -> dict[str, Any]:
    """`order_create` arguments for a broker order being mirrored: a bracket child's role and
    its entry (by the broker's parentOrderId, else by the entry's tag); nothing otherwise."""
    if wire.parent_order_id is None:
        return {}
    match = Q(broker_order_id=wire.parent_order_id)
    tag = wire.custom_tag or ""
    for suffix in (STOP_LOSS_SUFFIX, TAKE_PROFIT_SUFFIX):
        if tag.endswith(suffix) and len(tag) > len(suffix):
            match |= Q(custom_tag=tag[: -len(suffix)])
    entry_id = (
        Order.objects.filter(account_id=account_id)
        .filter(match)
        .values_list("pk", flat=True)
        .first()
    )
    return {"bracket_role": _role_of(wire), "bracket_parent_id": entry_id}


def bracket_children(entry_ids: Iterable[uuid.UUID | str]) -> dict[str, list[Order]]:
    """The children of these entries, by entry id (one query)."""
    children: dict[str, list[Order]] = defaultdict(list)
    ids = list(entry_ids)
    if not ids:
        return children
    for child in Order.objects.filter(bracket_parent_id__in=ids).order_by("created_at"):
        children[str(child.bracket_parent_id)].append(child)
    return children


# --- 3. The guard ---------------------------------------------------------------------------


def _within(name: str) -> timedelta:
    return timedelta(seconds=getattr(settings.ORDER_MANAGEMENT.brackets, name))


def brackets_guard(
    *,
    now: datetime | None = None,
    account_ids: Iterable[int] | None = None,
    last_checked: dict[object, datetime] | None = None,
) -> Counter[str]:
    """One pass of the guard: OCO first (a cancelled sibling changes what is exposed), then
    protection. `account_ids`: the broker ids to guard (None: every account). `last_checked`
    (kept by a long-running caller) spaces the REST checks of an entry already seen protected;
    any change we hear of (a fill, a child ending) makes it due at once."""
    now = now or timezone.now()
    done: Counter[str] = Counter()
    orders = Order.objects.all()
    if account_ids is not None:
        orders = orders.filter(account__broker_account_id__in=list(account_ids))
    done.update(_oco_sweep(orders, now=now))
    done.update(_protection_sweep(orders, now=now, last_checked=last_checked))
    return done


# OCO ----------------------------------------------------------------------------------------


def _oco_sweep(orders: Any, *, now: datetime) -> Counter[str]:
    done: Counter[str] = Counter()
    # The children still to settle: working ones, and ones cancelled lately and not yet
    # recorded, each with a sibling that filled completely. Older cancels are history.
    filled_sibling = Order.objects.filter(
        bracket_parent_id=OuterRef("bracket_parent_id"),
        bracket_role__in=CHILD_ROLES,
        status=OrderStatus.FILLED,
    ).exclude(pk=OuterRef("pk"))
    siblings = list(
        orders.filter(bracket_role__in=CHILD_ROLES, bracket_parent_id__isnull=False)
        .filter(oco_cancelled_by="")
        .filter(
            Q(status__in=lifecycle.WORKING)
            | Q(status=OrderStatus.CANCELLED, state_entered_at__gte=now - RECORD_OCO_WITHIN)
        )
        .filter(Exists(filled_sibling))
        .select_related("account")
    )
    if not siblings:
        return done
    filled_legs = {
        str(leg.bracket_parent_id): leg
        for leg in Order.objects.filter(
            bracket_parent_id__in=[s.bracket_parent_id for s in siblings],
            bracket_role__in=CHILD_ROLES,
            status=OrderStatus.FILLED,
        )
    }
    within = _within("oco_cancel_within_seconds")
    for sibling in siblings:
        leg = filled_legs.get(str(sibling.bracket_parent_id))
        if leg is None or leg.pk == sibling.pk or leg.last_fill_at is None:
            continue
        try:
            if sibling.status == OrderStatus.CANCELLED:
                _record_oco(sibling, leg, by=OCO_BY_BROKER)
                done["oco:broker"] += 1
            elif sibling.status in lifecycle.WORKING and lifecycle.oco_overdue(
                leg_filled_at=leg.last_fill_at, now=now, within=within
            ):
                done[f"oco:{_cancel_sibling(sibling, leg)}"] += 1
        except (OrderError, GatewayError) as exc:
            logger.warning("OCO of order %s: %s", sibling.pk, exc)
            done["oco:error"] += 1
    return done


def _leg_name(leg: Order) -> str:
    return "stop loss" if leg.bracket_role == BracketRole.STOP_LOSS else "take profit"


def _record_oco(sibling: Order, leg: Order, *, by: str) -> None:
    who = "the broker" if by == OCO_BY_BROKER else "ordermgmt"
    order_update(
        order_id=sibling.pk,
        changes={"oco_cancelled_by": by},
        trigger=TransitionTrigger.SWEEPER,
        actor=ACTOR,
        reason=f"OCO: cancelled by {who} when the {_leg_name(leg)} {leg.pk} filled",
    )


def _cancel_sibling(sibling: Order, leg: Order) -> str:
    """The broker's OCO is overdue: look at the sibling there first (its cancel may only be
    late on the stream); cancel it ourselves if it still works."""
    if sibling.broker_order_id is not None:
        wire = get_gateway().get_order(
            account_id=sibling.account.broker_account_id,
            order_id=sibling.broker_order_id,
            budget=BROKER_READ_BUDGET_SECONDS,
        )
        if not lifecycle.bracket_child_working(wire.status):
            order_apply_broker_order(
                order_id=sibling.pk,
                broker_order=wire,
                trigger=TransitionTrigger.BROKER_REST,
                actor=ACTOR,
                reason="OCO check: the broker's view of the sibling adopted",
            )
            if wire.status == enums.OrderStatus.CANCELLED:
                _record_oco(sibling, leg, by=OCO_BY_BROKER)
                return "broker"
            return "ended"
    logger.warning(
        "OCO overdue: the %s %s filled and the broker still has its sibling %s working; "
        "cancelling it",
        _leg_name(leg),
        leg.pk,
        sibling.pk,
    )
    order_cancel(
        order_id=sibling.pk, expected_version=None, actor=ACTOR, trigger=TransitionTrigger.SWEEPER
    )
    _record_oco(sibling, leg, by=OCO_BY_US)
    return "cancelled"


# Protection -----------------------------------------------------------------------------------


def _guarded(orders: Any) -> Any:
    return (
        orders.filter(bracket_role=BracketRole.ENTRY, stop_loss_ticks__isnull=False)
        .filter(filled_size__gt=0, last_fill_at__isnull=False)
        .exclude(protection=Protection.ENDED)
        .select_related("account")
    )


def _changed_since_confirmed(entry: Order, stop_changed_at: datetime | None) -> bool:
    """Something we heard of since the broker last showed this entry protected (or it never
    did): a new fill, its stop loss ending."""
    checked = entry.protection_checked_at
    if entry.protection != Protection.PROTECTED or checked is None:
        return True
    if entry.last_fill_at is not None and entry.last_fill_at > checked:
        return True
    return stop_changed_at is not None and stop_changed_at > checked


def _recheck_due(now: datetime, last: datetime | None) -> bool:
    """The periodic recheck of an entry seen protected: a silent hub would not tell us its stop
    was lost, so the broker is asked again every half window."""
    return last is None or now - last >= _within("protect_within_seconds") / 2


def _protection_sweep(
    orders: Any, *, now: datetime, last_checked: dict[object, datetime] | None
) -> Counter[str]:
    done: Counter[str] = Counter()
    entries = list(_guarded(orders))
    if not entries:
        return done
    memory = last_checked if last_checked is not None else {}
    # When each entry's stop loss (as we mirror it) last changed state: a stop that ended
    # makes its entry due at once, without waiting for the periodic recheck.
    stop_changes: dict[str, datetime] = {}
    for entry_id, entered in orders.filter(
        bracket_parent_id__in=[e.pk for e in entries],
        bracket_role=BracketRole.STOP_LOSS,
        status__in=lifecycle.TERMINAL,
    ).values_list("bracket_parent_id", "state_entered_at"):
        key = str(entry_id)
        stop_changes[key] = max(entered, stop_changes.get(key, entered))
    by_account: dict[int, list[Order]] = defaultdict(list)
    changed: set[object] = set()
    for entry in entries:
        if _changed_since_confirmed(entry, stop_changes.get(str(entry.pk))):
            changed.add(entry.pk)
        elif not _recheck_due(now, memory.get(entry.pk)):
            continue
        by_account[entry.account.broker_account_id].append(entry)
    for broker_account, due in by_account.items():
        try:
            done.update(
                _check_account(broker_account, due, now=now, memory=memory, changed=changed)
            )
        except GatewayError as exc:
            # Not a verdict: unprotected is concluded from the broker's answer, never from its
            # silence. The next pass asks again; a long outage is the listener alert's.
            logger.warning("protection check of account %s: %s", broker_account, exc)
            done["protection:unconfirmed"] += 1
    return done


def _check_account(
    broker_account: int,
    entries: list[Order],
    *,
    now: datetime,
    memory: dict[object, datetime],
    changed: set[object],
) -> Counter[str]:
    done: Counter[str] = Counter()
    start = min((e.submitted_at or e.created_at) for e in entries) - SEARCH_MARGIN
    wires = get_gateway().search_orders(
        account_id=broker_account, start=start, budget=BROKER_READ_BUDGET_SECONDS
    )
    by_parent: dict[int, list[WireOrder]] = defaultdict(list)
    by_id: dict[int, WireOrder] = {}
    for wire in wires:
        by_id[wire.id] = wire
        if wire.parent_order_id is not None:
            by_parent[wire.parent_order_id].append(wire)
    positions: list[Any] | None = None
    within = _within("protect_within_seconds")
    for entry in entries:
        memory[entry.pk] = now
        entry_wire = by_id.get(entry.broker_order_id) if entry.broker_order_id else None
        children = by_parent.get(entry.broker_order_id, []) if entry.broker_order_id else []
        filled = max(entry.filled_size, entry_wire.fill_volume if entry_wire else 0)
        exposure = filled - sum(child.fill_volume for child in children)
        entry_working = entry_wire is not None and lifecycle.bracket_child_working(
            entry_wire.status
        )
        if entry_wire is None:
            entry_working = entry.status in lifecycle.WORKING
        stops = [c for c in children if _role_of(c) == BracketRole.STOP_LOSS]
        if exposure <= 0:
            if not entry_working:
                _set_protection(entry, Protection.ENDED, now, "the bracket legs closed the group")
                done["protection:ended"] += 1
            continue
        if any(
            lifecycle.stop_protects(
                broker_status=stop.status,
                remaining=stop.size - stop.fill_volume,
                exposure=exposure,
                entry_working=entry_working,
            )
            for stop in stops
        ):
            if entry.pk in changed:
                # Recorded when something changed; a periodic recheck that finds the stop in
                # place writes nothing (its cadence is kept in memory, not in audit rows).
                _set_protection(entry, Protection.PROTECTED, now, "the broker shows its stop")
            done["protection:protected"] += 1
            continue
        lost = [
            s.update_timestamp or s.creation_timestamp
            for s in stops
            if not lifecycle.bracket_child_working(s.status)
        ]
        deadline = lifecycle.protection_deadline(
            filled_at=entry.last_fill_at or now, stop_lost_at=max(lost, default=None), within=within
        )
        if now < deadline:
            memory.pop(entry.pk, None)  # due again at the next pass, until the deadline
            done["protection:waiting"] += 1
            continue
        if positions is None:
            positions = get_gateway().search_open_positions(account_id=broker_account)
        if not _holds_position(entry, positions):
            _set_protection(entry, Protection.ENDED, now, "the broker shows no position to protect")
            done["protection:ended"] += 1
            continue
        what = _describe_gap(stops, exposure)
        done[f"protection:{_unprotected(entry, what, now)}"] += 1
    return done


def _holds_position(entry: Order, positions: list[Any]) -> bool:
    wanted = enums.PositionType.LONG if entry.side == OrderSide.BUY else enums.PositionType.SHORT
    return any(
        p.contract_id == entry.contract_id and not p.is_flat and p.type == wanted for p in positions
    )


def _describe_gap(stops: list[WireOrder], exposure: int) -> str:
    if not stops:
        return f"the broker shows no stop-loss child for the {exposure} filled contract(s)"
    shown = ", ".join(
        f"{s.id} {enums.OrderStatus(s.status).name} {s.size - s.fill_volume} left" for s in stops
    )
    return f"no working stop loss covers the {exposure} filled contract(s) (broker: {shown})"


def _set_protection(entry: Order, state: str, now: datetime, reason: str) -> Order | None:
    """Record a new conclusion under the entry's row lock; None if it was already recorded."""
    with transaction.atomic():
        locked = Order.objects.select_for_update().get(pk=entry.pk)
        if locked.protection == state and state != Protection.PROTECTED:
            return None
        changes: dict[str, Any] = {"protection": state}
        if state == Protection.PROTECTED:
            changes["protection_checked_at"] = now
        if state == Protection.UNPROTECTED:
            changes["unprotected_at"] = now
        return order_update(
            order_id=entry.pk,
            changes=changes,
            trigger=TransitionTrigger.SWEEPER,
            actor=ACTOR,
            reason=f"protection {state}: {reason}",
            locked=locked,
        )


def _unprotected(entry: Order, what: str, now: datetime) -> str:
    action = settings.ORDER_MANAGEMENT.brackets.on_unprotected
    recorded = _set_protection(entry, Protection.UNPROTECTED, now, f"{what}; {action}")
    if recorded is not None:
        # Counted on the locked row's change, so two guards finding it at once count it once.
        transaction.on_commit(metrics.order_unprotected_positions_total.inc)
        logger.error(
            "ALERT position of order %s (%s %s on account %s) is not protected: %s; %s",
            entry.pk,
            entry.side,
            entry.contract_id,
            entry.account.broker_account_id,
            what,
            "flattening it" if action == "flatten" else "alert only (brackets.onUnprotected)",
        )
    if action != "flatten":
        return "alerted"
    close = position_close(
        account=entry.account,
        contract_id=entry.contract_id,
        actor=ACTOR,
        trigger=TransitionTrigger.SWEEPER,
    )
    logger.warning(
        "unprotected order %s: close of %s %s: %s",
        entry.pk,
        entry.contract_id,
        close.state,
        close.detail,
    )
    return "flattened" if close.state == close.State.DONE else "flatten_failed"
