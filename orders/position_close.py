"""Closing a position: one close per (account, contract) at a time, never flipping the account.

`position_close` follows these steps:

1. Claim the close: insert a `PositionClose` in progress. The partial unique constraint allows
   one per (account, contract), so a concurrent request fails the insert and joins the close
   in flight, waiting for its result. While it is in progress, placement refuses new orders
   on the contract (409).
2. Let orders already in flight on the contract settle (submitting, unknown), then cancel
   every working order on it, ours and any the broker holds from elsewhere.
3. Wait until the broker confirms no order is working on the contract: fills that land
   meanwhile change the net position, which is why the position is read only after this.
4. Read the position as it stands at the broker and send one close (`Position/closeContract`,
   which closes exactly the net size). Nothing working can fill afterwards, so the account is
   never flipped. An ambiguous answer is checked against the broker's positions, never re-sent.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.gateway import get_gateway
from accounts.models import Account, PositionClose
from orders.amend import order_cancel
from orders.models import Order, OrderStatus, TransitionTrigger
from projectx.enums import PositionType
from projectx.errors import AmbiguousError, GatewayError

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1
_IN_FLIGHT = {OrderStatus.CREATED, OrderStatus.SUBMITTING, OrderStatus.UNKNOWN}
_WORKING = {OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED, OrderStatus.PENDING_CANCEL}


class CloseFailed(Exception):
    pass


def position_close(
    *, account: Account, contract_id: str, actor: str, trigger: str = TransitionTrigger.API
) -> PositionClose:
    try:
        with transaction.atomic():
            close = PositionClose.objects.create(
                account=account, contract_id=contract_id, requested_by=actor
            )
    except IntegrityError:
        return _join(account, contract_id)
    try:
        _run(close, actor=actor, trigger=trigger)
        close.state = PositionClose.State.DONE
    except (CloseFailed, GatewayError) as exc:
        logger.error(
            "ALERT close of %s on account %s failed: %s",
            contract_id,
            account.broker_account_id,
            exc,
        )
        close.state = PositionClose.State.FAILED
        close.detail = str(exc)[:2000]
    finally:
        if close.state == PositionClose.State.IN_PROGRESS:  # an unexpected error
            close.state = PositionClose.State.FAILED
            close.detail = close.detail or "interrupted"
        close.finished_at = timezone.now()
        close.save()
    return close


def _join(account: Account, contract_id: str) -> PositionClose:
    """Wait for the close in flight and return it as its result."""
    deadline = time.monotonic() + _timeout() * 3
    while time.monotonic() < deadline:
        latest = (
            PositionClose.objects.filter(account=account, contract_id=contract_id)
            .order_by("-started_at")
            .first()
        )
        if latest is not None and latest.state != PositionClose.State.IN_PROGRESS:
            return latest
        time.sleep(POLL_SECONDS)
    raise CloseFailed("the close in progress did not finish in time")


def _timeout() -> float:
    return settings.ORDER_MANAGEMENT.concurrency_control.position_close_timeout_seconds


def _wait(condition: Any, what: str, deadline: float) -> None:
    while not condition():
        if time.monotonic() >= deadline:
            raise CloseFailed(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)


def _run(close: PositionClose, *, actor: str, trigger: str) -> None:
    account, contract_id = close.account, close.contract_id
    broker_account = account.broker_account_id
    gateway = get_gateway()
    deadline = time.monotonic() + _timeout()
    ours = Order.objects.filter(account=account, contract_id=contract_id)

    # 2. Orders already on their way settle first; then every working order is cancelled.
    _wait(
        lambda: not ours.filter(status__in=_IN_FLIGHT).exists(),
        "orders in flight to settle",
        deadline,
    )
    cancelled = 0
    for order_id in ours.filter(status__in=_WORKING).values_list("pk", flat=True):
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
            try:
                gateway.cancel_order(account_id=broker_account, order_id=wire.id)
                cancelled += 1
            except GatewayError as exc:
                logger.warning("cancel of broker order %s failed: %s", wire.id, exc)
    close.cancelled_orders = cancelled

    # 3. The broker confirms nothing is working on the contract.
    def nothing_working() -> bool:
        return not any(
            o.contract_id == contract_id
            for o in gateway.search_open_orders(account_id=broker_account)
        )

    _wait(nothing_working, "the broker to confirm the cancels", deadline)

    # 4. The position as it stands now, and one close for it.
    position = _broker_position(broker_account, contract_id)
    if position is None:
        close.detail = "no open position"
        return
    try:
        gateway.close_position(account_id=broker_account, contract_id=contract_id)
    except AmbiguousError as exc:
        if _broker_position(broker_account, contract_id) is not None:
            raise CloseFailed(
                f"close outcome unknown and the position is still open: {exc}"
            ) from exc
    close.closed_size = position.size
    close.closed_side = "long" if position.type == PositionType.LONG else "short"
    close.detail = f"closed {position.size} {close.closed_side} at market"


def _broker_position(broker_account: int, contract_id: str) -> Any:
    for position in get_gateway().search_open_positions(account_id=broker_account):
        if position.contract_id == contract_id and not position.is_flat:
            return position
    return None
