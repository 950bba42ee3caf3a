"""Closing a position: one close per (account, contract) at a time, never flipping the account.

`position_close` follows these steps:

1. Claim the close: insert a `PositionClose` in progress, leased to this process for
   `concurrencyControl.positionCloseLeaseSeconds`. The partial unique constraint allows one
   per (account, contract), so a concurrent request fails the insert and joins the close in
   flight, waiting (at most `positionCloseTimeoutSeconds`) for its result. While it is in
   progress and its lease held, placement refuses new orders on the contract (409).
2. Let orders already in flight on the contract settle (submitting, unknown), then cancel
   every working order on it, ours and any the broker holds from elsewhere.
3. Wait until the broker confirms no order is working on the contract: fills that land
   meanwhile change the net position, which is why the position is read only after this.
   Our orders still working or pending_cancel locally take the broker's view of them.
4. Read the position as it stands at the broker and send one close (`Position/closeContract`,
   which closes exactly the net size). Nothing working can fill afterwards, so the account is
   never flipped. An ambiguous answer is checked against the broker's positions, never re-sent.

Restart safety: each step is written to the row (with a lease renewal) before its side effect,
and every write after the claim is conditional on still owning the lease. If the process dies,
the lease runs out; a joiner, or the stuck sweep (`position_close_take_over`), claims it with a
conditional UPDATE that only an expired lease passes, so exactly one process takes over. The
taker-over runs the steps again from the broker's truth: what is still working is cancelled,
what is still open is closed. Every step is safe to repeat: a cancel of a cancelled order is
refused, and closeContract closes the net position as it stands, so a repeated close of a flat
position cannot flip it.
"""

from __future__ import annotations

import logging
import math
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
from accounts.models import Account, PositionClose
from orders import lifecycle
from orders.amend import order_cancel
from orders.exceptions import CloseFailed, CloseInProgress, OrderError
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.reconcile import orders_adopt_broker_view
from projectx.enums import PositionType
from projectx.errors import AmbiguousError, GatewayError

__all__ = ["CloseFailed", "CloseInProgress", "position_close", "position_close_take_over"]

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
Step = PositionClose.Step


class LeaseLost(Exception):
    """Another process took the close over (this one was too slow to renew its lease)."""


def position_close(
    *, account: Account, contract_id: str, actor: str, trigger: str = TransitionTrigger.API
) -> PositionClose:
    """Close the position; the result is the close (done or failed).

    Raises CloseInProgress when another request's close does not end within the wait, and
    CloseFailed for anything unexpected: every outcome has a place in the API's error shape.
    """
    try:
        owner = _new_owner()
        try:
            with transaction.atomic():
                close = PositionClose.objects.create(
                    account=account,
                    contract_id=contract_id,
                    requested_by=actor,
                    owner=owner,
                    lease_expires_at=_lease_end(),
                )
        except IntegrityError:
            close = None  # one is in flight: join it (outside the except, no chained noise)
        if close is None:
            return _join(account=account, contract_id=contract_id, actor=actor, trigger=trigger)
        return _work(close, owner=owner, actor=actor, trigger=trigger)
    except OrderError:
        raise
    except Exception as exc:
        logger.exception("close of %s on account %s", contract_id, account.broker_account_id)
        raise CloseFailed(f"the close could not be completed: {exc}") from exc


def position_close_take_over(
    *, close_id: int, actor: str, trigger: str = TransitionTrigger.SWEEPER
) -> PositionClose | None:
    """Claim a close whose lease expired and finish it; None when its lease is still held
    (its process is alive, or another process claimed it first)."""
    now = timezone.now()
    close = (
        PositionClose.objects.lease_expired(now=now)
        .select_related("account")
        .filter(pk=close_id)
        .first()
    )
    if close is None:
        return None
    owner = _new_owner()
    # `attempts` is the claim's version: of two processes that read the same expired lease,
    # exactly one moves it on.
    claimed = (
        PositionClose.objects.lease_expired(now=now)
        .filter(pk=close.pk, attempts=close.attempts)
        .update(owner=owner, lease_expires_at=_lease_end(), attempts=F("attempts") + 1)
    )
    if claimed != 1:
        return None
    logger.warning(
        "ALERT taking over close %s of %s on account %s: its owner %s stopped at step %s "
        "(lease expired at %s)",
        close.pk,
        close.contract_id,
        close.account.broker_account_id,
        close.owner or "(none)",
        close.step,
        close.lease_expires_at,
    )
    close.refresh_from_db()
    return _work(close, owner=owner, actor=actor, trigger=trigger)


# --- The lease ------------------------------------------------------------------------------


def _new_owner() -> str:
    # host:pid names the process for operators; the suffix makes each claim unique, so a
    # second thread of the same process can never renew a lease it does not hold.
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_seconds() -> float:
    return settings.ORDER_MANAGEMENT.concurrency_control.position_close_lease_seconds


def _lease_end() -> datetime:
    return timezone.now() + timedelta(seconds=_lease_seconds())


def _timeout() -> float:
    return settings.ORDER_MANAGEMENT.concurrency_control.position_close_timeout_seconds


class _Lease:
    """This process's hold on one close: every write goes through it and checks the owner."""

    def __init__(self, close: PositionClose, owner: str) -> None:
        self.close = close
        self.owner = owner
        self._renewed_at = time.monotonic()

    def _write(self, **changes: Any) -> None:
        updated = PositionClose.objects.filter(
            pk=self.close.pk, owner=self.owner, state=PositionClose.State.IN_PROGRESS
        ).update(lease_expires_at=_lease_end(), **changes)
        if updated != 1:
            raise LeaseLost(f"close {self.close.pk} is no longer leased to {self.owner}")
        self._renewed_at = time.monotonic()
        for name, value in changes.items():
            setattr(self.close, name, value)

    def step(self, step: str, **changes: Any) -> None:
        """Record the step (and what it is about to do) before doing it."""
        self._write(step=step, **changes)

    def renew(self) -> None:
        """Keep the lease while waiting or between broker calls (a third of it at most)."""
        if time.monotonic() - self._renewed_at >= _lease_seconds() / 3:
            self._write()

    def finish(self, **changes: Any) -> bool:
        """The final write; False when another process owns the close by now."""
        try:
            self._write(finished_at=timezone.now(), **changes)
        except LeaseLost:
            return False
        return True


# --- Joining and working --------------------------------------------------------------------


def _join(*, account: Account, contract_id: str, actor: str, trigger: str) -> PositionClose:
    """Wait (bounded) for the close in flight and return it as its result, taking it over if
    its process died meanwhile."""
    deadline = time.monotonic() + _timeout()
    while True:
        latest = (
            PositionClose.objects.filter(account=account, contract_id=contract_id)
            .order_by("-started_at")
            .first()
        )
        if latest is not None and latest.state != PositionClose.State.IN_PROGRESS:
            return latest
        if latest is not None and _lease_expired(latest):
            taken_over = position_close_take_over(close_id=latest.pk, actor=actor, trigger=trigger)
            if taken_over is not None:
                return taken_over
        if time.monotonic() >= deadline:
            raise CloseInProgress(contract_id=contract_id, retry_after=_retry_after(latest))
        time.sleep(POLL_SECONDS)


def _lease_expired(close: PositionClose) -> bool:
    return close.lease_expires_at is None or close.lease_expires_at < timezone.now()


def _retry_after(close: PositionClose | None) -> int:
    """Seconds until the close's lease runs out: by then it has ended or can be taken over."""
    if close is None or close.lease_expires_at is None:
        return 1
    remaining = (close.lease_expires_at - timezone.now()).total_seconds()
    return max(1, math.ceil(remaining))


def _work(close: PositionClose, *, owner: str, actor: str, trigger: str) -> PositionClose:
    lease = _Lease(close, owner)
    state, failure = PositionClose.State.DONE, ""
    try:
        _run(lease, actor=actor, trigger=trigger)
    except LeaseLost:
        return _lost(close, actor=actor, trigger=trigger)
    except (CloseFailed, GatewayError) as exc:
        logger.error(
            "ALERT close of %s on account %s failed: %s",
            close.contract_id,
            close.account.broker_account_id,
            exc,
        )
        state, failure = PositionClose.State.FAILED, str(exc)[:2000]
    except Exception as exc:  # an unexpected error: the close ends failed, and says so
        logger.exception("close %s of %s interrupted", close.pk, close.contract_id)
        state, failure = PositionClose.State.FAILED, f"interrupted: {exc}"[:2000]
    finished = lease.finish(
        state=state,
        detail=failure or close.detail,
        cancelled_orders=close.cancelled_orders,
        closed_size=close.closed_size,
        closed_side=close.closed_side,
    )
    if not finished:
        return _lost(close, actor=actor, trigger=trigger)
    return close


def _lost(close: PositionClose, *, actor: str, trigger: str) -> PositionClose:
    logger.warning("close %s was taken over by another process; waiting for it", close.pk)
    return _join(account=close.account, contract_id=close.contract_id, actor=actor, trigger=trigger)


def _wait(condition: Callable[[], bool], what: str, deadline: float, lease: _Lease) -> None:
    while not condition():
        if time.monotonic() >= deadline:
            raise CloseFailed(f"timed out waiting for {what}")
        lease.renew()
        time.sleep(POLL_SECONDS)


def _run(lease: _Lease, *, actor: str, trigger: str) -> None:
    close = lease.close
    account, contract_id = close.account, close.contract_id
    broker_account = account.broker_account_id
    gateway = get_gateway()
    deadline = time.monotonic() + _timeout()
    ours = Order.objects.filter(account=account, contract_id=contract_id)
    if close.attempts > 1:
        logger.warning("close %s resumed from step %s by %s", close.pk, close.step, lease.owner)
    stopped_at, sent_size, sent_side = close.step, close.closed_size, close.closed_side

    # 2. Orders already on their way settle first; then every working order is cancelled.
    lease.step(Step.SETTLING_ORDERS)
    _wait(
        lambda: not ours.filter(status__in=lifecycle.OUTCOME_PENDING).exists(),
        "orders in flight to settle",
        deadline,
        lease,
    )
    lease.step(Step.CANCELLING_ORDERS)
    cancelled = 0
    for order_id in ours.filter(status__in=lifecycle.CANCELLABLE).values_list("pk", flat=True):
        lease.renew()
        try:
            order_cancel(order_id=order_id, expected_version=None, actor=actor, trigger=trigger)
            cancelled += 1
        except Exception as exc:  # the broker check below decides whether it matters
            logger.warning("cancel of order %s during a close failed: %s", order_id, exc)
    for wire in gateway.search_open_orders(account_id=broker_account):
        if (
            wire.contract_id == contract_id
            and not ours.filter(broker_order_id=wire.id, status=OrderStatus.CANCELLED).exists()
        ):
            lease.renew()
            try:
                gateway.cancel_order(account_id=broker_account, order_id=wire.id)
                cancelled += 1
            except GatewayError as exc:
                logger.warning("cancel of broker order %s failed: %s", wire.id, exc)

    # 3. The broker confirms nothing is working on the contract.
    lease.step(Step.CONFIRMING_CANCELS, cancelled_orders=close.cancelled_orders + cancelled)

    def nothing_working() -> bool:
        return not any(
            o.contract_id == contract_id
            for o in gateway.search_open_orders(account_id=broker_account)
        )

    _wait(nothing_working, "the broker to confirm the cancels", deadline, lease)
    orders_adopt_broker_view(
        orders=ours.filter(status__in=lifecycle.WORKING),
        actor=actor,
        during="position close",
        before_each=lease.renew,
    )

    # 4. The position as it stands now, and one close for it.
    position = _broker_position(broker_account, contract_id)
    if position is None:
        if stopped_at == Step.CLOSING_POSITION and sent_size:
            close.detail = (
                f"closed {sent_size} {sent_side} at market (sent before a takeover; the broker "
                "shows the position flat)"
            )
        else:
            close.closed_size, close.closed_side = 0, ""
            close.detail = "no open position"
        return
    side = "long" if position.type == PositionType.LONG else "short"
    lease.step(Step.CLOSING_POSITION, closed_size=position.size, closed_side=side)
    try:
        gateway.close_position(account_id=broker_account, contract_id=contract_id)
    except AmbiguousError as exc:
        if _broker_position(broker_account, contract_id) is not None:
            raise CloseFailed(
                f"close outcome unknown and the position is still open: {exc}"
            ) from exc
    close.detail = f"closed {position.size} {side} at market"


def _broker_position(broker_account: int, contract_id: str) -> Any:
    for position in get_gateway().search_open_positions(account_id=broker_account):
        if position.contract_id == contract_id and not position.is_flat:
            return position
    return None
