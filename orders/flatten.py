"""The kill switch: flatten an account (halt it, cancel everything working, close everything).

`account_flatten` follows these steps, each written to the run (`AccountFlatten`) and audited
with the actor before its side effect:

1. Claim the run: insert an `AccountFlatten` in progress, leased to this process for
   `risk.flattenLeaseSeconds`. One per account at a time (a partial unique constraint): a
   concurrent request fails the insert and joins the run in flight, answering its result.
2. Halt the account (`halted`, cause `flatten`): from now on acceptance refuses every new
   order (409 account_halted), so nothing new can start while the account is emptied.
3. Let orders already accepted or in flight settle (created, submitting, unknown).
4. Cancel every working order: ours, then whatever the broker still lists as working (orders
   placed elsewhere, bracket children the broker armed when their entry was cancelled).
   Repeat until the broker lists nothing working on the account.
5. Our orders still working locally take the broker's view of them (a cancel whose answer was
   lost), then every open position the broker shows is closed at market
   (`Position/closeContract`, exactly the net size: nothing is working, so nothing flips).
6. Wait for the broker to show the account flat.

The waits are bounded by `risk.flattenTimeoutSeconds` in all: the answer is then `pending`
(the run says what it did; calling again carries on from the broker's truth) instead of `flat`.

Restart safety, as for the position close: every write after the claim is conditional on still
owning the lease. When the process dies the lease runs out, and the next request takes the run
over (a conditional UPDATE only an expired lease passes, so exactly one process does) and runs
every step again from the broker's truth. Each step is safe to repeat: halting a halted account
changes nothing, a cancel of a cancelled order is refused, and closeContract closes the net
position as it stands.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import Account, AccountAudit, AccountFlatten, TradingState, TradingStateCause
from accounts.services import account_trading_state_set
from orders import lifecycle
from orders.amend import order_cancel
from orders.exceptions import FlattenFailed, NotCancellable, OrderError
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.reconcile import orders_adopt_broker_view
from projectx.enums import PositionType
from projectx.errors import AmbiguousError, GatewayError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
Step = AccountFlatten.Step


class LeaseLost(Exception):
    """Another process took the run over (this one was too slow to renew its lease)."""


class _TimedOut(Exception):
    """A bounded wait ran out: the run ends `pending`."""


def account_flatten(
    *, account: Account, actor: str, trigger: str = TransitionTrigger.API
) -> AccountFlatten:
    """Flatten the account; the result is the run (done: `flat` or `pending`; or still in
    progress in another process when the wait for it ran out, which reads as `pending`)."""
    try:
        owner = _new_owner()
        try:
            with transaction.atomic():
                run = AccountFlatten.objects.create(
                    account=account, requested_by=actor, owner=owner, lease_expires_at=_lease_end()
                )
        except IntegrityError:
            run = None  # one is in flight: join it
        if run is None:
            return _join(account=account, actor=actor, trigger=trigger)
        return _work(run, owner=owner, actor=actor, trigger=trigger)
    except OrderError:
        raise
    except Exception as exc:
        logger.exception("flatten of account %s", account.broker_account_id)
        raise FlattenFailed(f"the flatten could not be run: {exc}") from exc


def account_flatten_take_over(
    *, run_id: int, actor: str, trigger: str = TransitionTrigger.API
) -> AccountFlatten | None:
    """Claim a run whose lease expired and finish it; None when its lease is held."""
    now = timezone.now()
    run = _expired(now).select_related("account").filter(pk=run_id).first()
    if run is None:
        return None
    owner = _new_owner()
    claimed = (
        _expired(now)
        .filter(pk=run.pk, attempts=run.attempts)
        .update(owner=owner, lease_expires_at=_lease_end(), attempts=F("attempts") + 1)
    )
    if claimed != 1:
        return None
    logger.warning(
        "ALERT taking over flatten %s of account %s: its owner %s stopped at step %s",
        run.pk,
        run.account.broker_account_id,
        run.owner or "(none)",
        run.step,
    )
    run.refresh_from_db()
    _audit(run, f"taken over from {run.owner or '(none)'} at step {run.step}", actor)
    return _work(run, owner=owner, actor=actor, trigger=trigger)


SWEEP_ACTOR = "stuck-detection"


def stuck_flattens_sweep(*, verify: bool) -> tuple[list[str], int]:
    """Runs whose lease expired (their process died): reported (an ALERT in the log), and with
    `verify` taken over and finished, as `detect_stuck_orders --verify` does for closes. The
    lines to print, and how many are still in progress with an expired lease afterwards."""
    now = timezone.now()
    lines: list[str] = []
    for run in _expired(now).select_related("account").order_by("started_at"):
        expired_for = (now - (run.lease_expires_at or run.started_at)).total_seconds()
        described = (
            f"flatten {run.pk} of account {run.account.broker_account_id}: in_progress at step "
            f"{run.step}, lease expired {expired_for:.0f} s ago (owner {run.owner or 'none'})"
        )
        logger.error("ALERT %s", described)
        if not verify:
            lines.append(described)
            continue
        try:
            finished = account_flatten_take_over(
                run_id=run.pk, actor=SWEEP_ACTOR, trigger=TransitionTrigger.SWEEPER
            )
        except Exception as exc:  # one run must not stop the sweep
            logger.exception("taking over flatten %s failed", run.pk)
            lines.append(f"{described}: failed ({exc})")
            continue
        if finished is None:
            lines.append(f"{described}: taken over by another process")
        else:
            lines.append(f"{described}: {finished.state}, {flatten_status(finished)}")
    return lines, _expired(timezone.now()).count()


def flatten_status(run: AccountFlatten) -> str:
    """What the answer says: flat only when a finished run saw the account flat."""
    if run.state == AccountFlatten.State.DONE and run.status == AccountFlatten.Status.FLAT:
        return AccountFlatten.Status.FLAT
    return AccountFlatten.Status.PENDING


# --- The lease ------------------------------------------------------------------------------


def _risk() -> Any:
    return settings.ORDER_MANAGEMENT.risk


def _new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=_risk().flatten_lease_seconds)


def _expired(now: datetime) -> Any:
    return AccountFlatten.objects.filter(
        state=AccountFlatten.State.IN_PROGRESS, lease_expires_at__lt=now
    )


class _Lease:
    """This process's hold on one run: every write goes through it and checks the owner."""

    def __init__(self, run: AccountFlatten, owner: str) -> None:
        self.run = run
        self.owner = owner
        self._renewed_at = time.monotonic()

    def write(self, **changes: Any) -> None:
        updated = AccountFlatten.objects.filter(
            pk=self.run.pk, owner=self.owner, state=AccountFlatten.State.IN_PROGRESS
        ).update(lease_expires_at=_lease_end(), **changes)
        if updated != 1:
            raise LeaseLost(f"flatten {self.run.pk} is no longer leased to {self.owner}")
        self._renewed_at = time.monotonic()
        for name, value in changes.items():
            setattr(self.run, name, value)

    def step(self, step: str, actor: str) -> None:
        """Record the step (audited) before doing it."""
        self.write(step=step)
        _audit(self.run, AccountFlatten.Step(step).label, actor)

    def renew(self) -> None:
        if time.monotonic() - self._renewed_at >= _risk().flatten_lease_seconds / 3:
            self.write()


def _audit(run: AccountFlatten, what: str, actor: str) -> None:
    AccountAudit.objects.create(
        account_id=run.account_id,
        action=AccountAudit.Action.FLATTEN_STEP,
        to_state=run.step,
        actor=actor,
        reason=f"flatten {run.pk} (attempt {run.attempts}): {what}",
    )


# --- Joining and working --------------------------------------------------------------------


def _join(*, account: Account, actor: str, trigger: str) -> AccountFlatten:
    """Wait (bounded) for the run in flight and answer its result, taking it over if its
    process died meanwhile; the run as it stands when the wait runs out."""
    deadline = time.monotonic() + _risk().flatten_timeout_seconds
    while True:
        latest = AccountFlatten.objects.filter(account=account).order_by("-started_at").first()
        if latest is None:  # finished and gone between our insert and this read: start anew
            return account_flatten(account=account, actor=actor, trigger=trigger)
        if latest.state != AccountFlatten.State.IN_PROGRESS:
            return latest
        if latest.lease_expires_at is None or latest.lease_expires_at < timezone.now():
            taken_over = account_flatten_take_over(run_id=latest.pk, actor=actor, trigger=trigger)
            if taken_over is not None:
                return taken_over
        if time.monotonic() >= deadline:
            return latest
        time.sleep(POLL_SECONDS)


def _work(run: AccountFlatten, *, owner: str, actor: str, trigger: str) -> AccountFlatten:
    lease = _Lease(run, owner)
    status, detail = AccountFlatten.Status.FLAT, "flat: nothing working, no open position"
    try:
        _run(lease, actor=actor, trigger=trigger)
    except LeaseLost:
        logger.warning("flatten %s was taken over by another process; joining it", run.pk)
        return _join(account=run.account, actor=actor, trigger=trigger)
    except _TimedOut as exc:
        status, detail = AccountFlatten.Status.PENDING, str(exc)
    except GatewayError as exc:
        status, detail = AccountFlatten.Status.PENDING, f"the broker could not be asked: {exc}"
    if status == AccountFlatten.Status.PENDING:
        logger.error(
            "ALERT flatten of account %s pending: %s", run.account.broker_account_id, detail
        )
    try:
        lease.write(
            state=AccountFlatten.State.DONE,
            status=status,
            detail=detail[:2000],
            finished_at=timezone.now(),
        )
    except LeaseLost:
        return _join(account=run.account, actor=actor, trigger=trigger)
    _audit(run, f"finished: {status} ({detail})", actor)
    return run


def _wait(condition: Callable[[], bool], what: str, deadline: float, lease: _Lease) -> None:
    while not condition():
        if time.monotonic() >= deadline:
            raise _TimedOut(f"timed out waiting for {what}")
        lease.renew()
        time.sleep(POLL_SECONDS)


def _run(lease: _Lease, *, actor: str, trigger: str) -> None:
    run = lease.run
    account = run.account
    broker_account = account.broker_account_id
    gateway = get_gateway()
    deadline = time.monotonic() + _risk().flatten_timeout_seconds
    ours = Order.objects.filter(account=account)

    # 2. No new orders from here on.
    lease.step(Step.HALTING, actor)
    account_trading_state_set(
        account=account,
        to_state=TradingState.HALTED,
        actor=actor,
        cause=TradingStateCause.FLATTEN,
        reason=f"flatten {run.pk} requested by {run.requested_by or actor}",
    )

    # 3. Orders already on their way settle first.
    lease.step(Step.SETTLING_ORDERS, actor)
    _wait(
        lambda: not ours.filter(status__in=lifecycle.OUTCOME_PENDING).exists(),
        "orders in flight to settle",
        deadline,
        lease,
    )

    # 4. Every working order, ours and the broker's, until the broker lists none.
    lease.step(Step.CANCELLING_ORDERS, actor)
    cancelled: list[dict[str, Any]] = list(run.cancelled)

    def record(entry: dict[str, Any]) -> None:
        # Written before the cancel is sent, so a crash right after it keeps the record; one
        # entry per order across attempts.
        if all(e["broker_order_id"] != entry["broker_order_id"] for e in cancelled):
            cancelled.append(entry)
            lease.write(cancelled=list(cancelled))

    for order in ours.filter(status__in=lifecycle.CANCELLABLE).order_by("account_seq"):
        lease.renew()
        entry = _cancelled_entry(order.pk, order.broker_order_id, order.contract_id)
        record(entry)
        try:
            order_cancel(order_id=order.pk, expected_version=None, actor=actor, trigger=trigger)
        except NotCancellable:
            # It had ended (filled, say) before the cancel reached it: nothing was cancelled.
            cancelled[:] = [e for e in cancelled if e["order"] != entry["order"]]
            lease.write(cancelled=list(cancelled))
        except Exception as exc:  # the broker's list below decides whether it matters
            logger.warning("cancel of order %s during a flatten failed: %s", order.pk, exc)

    lease.step(Step.CONFIRMING_CANCELS, actor)
    # Broker orders this attempt asked to cancel. Not carried over from an attempt that died:
    # its cancel may never have reached the broker, and a second cancel is harmless.
    asked: set[int] = set()

    def nothing_working() -> bool:
        working = gateway.search_open_orders(account_id=broker_account)
        for wire in working:
            if wire.id in asked:
                continue  # the broker is working on it
            lease.renew()
            local = ours.filter(broker_order_id=wire.id).values_list("pk", flat=True).first()
            record(_cancelled_entry(local, wire.id, wire.contract_id))
            asked.add(wire.id)
            try:
                gateway.cancel_order(account_id=broker_account, order_id=wire.id)
            except GatewayError as exc:
                logger.warning("cancel of broker order %s failed: %s", wire.id, exc)
                asked.discard(wire.id)  # asked again on the next pass
        return not working

    _wait(nothing_working, "the broker to confirm the cancels", deadline, lease)
    orders_adopt_broker_view(
        orders=ours.filter(status__in=lifecycle.WORKING),
        actor=actor,
        during="flatten",
        before_each=lease.renew,
    )
    # What was asked is not what was cancelled: an order that filled before its cancel
    # reached the broker (the broker refused the cancel) is no longer listed.
    ended_cancelled = {
        str(pk)
        for pk in ours.filter(
            pk__in=[e["order"] for e in cancelled if e["order"]], status=OrderStatus.CANCELLED
        ).values_list("pk", flat=True)
    }
    cancelled = [e for e in cancelled if e["order"] is None or e["order"] in ended_cancelled]
    lease.write(cancelled=list(cancelled))

    # 5. Every open position, as it stands now, closed at market.
    lease.step(Step.CLOSING_POSITIONS, actor)
    closed: list[dict[str, Any]] = list(run.closed)
    for position in gateway.search_open_positions(account_id=broker_account):
        if position.is_flat:
            continue
        lease.renew()
        side = "long" if position.type == PositionType.LONG else "short"
        entry = {"contract_id": position.contract_id, "side": side, "size": position.size}
        # One entry per contract across attempts: a close sent before a crash that did not
        # land is sent again, and recorded as the size closed now.
        closed = [e for e in closed if e["contract_id"] != position.contract_id] + [entry]
        lease.write(closed=list(closed))
        try:
            gateway.close_position(account_id=broker_account, contract_id=position.contract_id)
        except AmbiguousError as exc:  # the broker's positions below say whether it closed
            logger.warning("close of %s during a flatten: %s", position.contract_id, exc)

    # 6. The broker shows the account flat.
    lease.step(Step.CONFIRMING_FLAT, actor)
    _wait(
        lambda: all(p.is_flat for p in gateway.search_open_positions(account_id=broker_account)),
        "the broker to show every position closed",
        deadline,
        lease,
    )


def _cancelled_entry(
    order_id: Any, broker_order_id: int | None, contract_id: str
) -> dict[str, Any]:
    return {
        "order": None if order_id is None else str(order_id),
        "broker_order_id": broker_order_id,
        "contract_id": contract_id,
    }
