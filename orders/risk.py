"""Pre-trade risk checks: what an order may not do to its account, decided before the broker
hears of it.

`order_risk_check` runs inside placement's acceptance (`placement/queue.py::accept`), under
the account's row lock: acceptances on one account are decided one at a time, and every order
accepted before this one (still `created`, waiting for its turn) already counts as working. So
concurrent bots cannot pass a limit together. The checks, in order:

1. The trading state, brought up to date (a loss-limit state of an earlier trading day ends;
   the daily loss limit reached switches the account): `halted` refuses everything (409
   account_halted).
2. `maxOrderSize`: the order's size.
3. `maxOrdersPerMinute`: orders accepted on the account in the last 60 seconds (429 with
   Retry-After: when the oldest of them leaves the window).
4. `reduce_only`: only an order that reduces the position, even if every working order on its
   side fills, passes.
5. `maxPositionSize`: the net position in the contract if this order and every working order
   on its side fill.
6. `maxWorkingOrders`: orders accepted and not yet ended on the account.

A refusal raises a `RiskRefusal`; nothing is stored in acceptance's transaction (it rolls back
with the raise). `order_refused` then records it in a transaction of its own: a final refusal
(422) as a `rejected` order with the key's outcome, replayed for the key; the others (429, 409)
store nothing, so the same key places the order once the refusal has passed.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet, Sum
from django.utils import timezone

from accounts.models import Account, Position, PositionType, TradingState, TradingStateCause
from accounts.selectors import account_limits, realized_pnl_today
from accounts.services import account_loss_limit_check, account_trading_state_current
from common import metrics
from orders import lifecycle
from orders.exceptions import (
    AccountHalted,
    RiskLimitExceeded,
    RiskRateLimited,
    RiskRefusal,
    describe_error,
)
from orders.idempotency import OrderPayload
from orders.locking import lock_in_order
from orders.models import (
    BracketRole,
    IdempotencyRecord,
    Order,
    OrderSide,
    OrderStatus,
    TransitionTrigger,
)
from orders.services import order_create, order_transition

logger = logging.getLogger(__name__)

RATE_WINDOW = timedelta(seconds=60)
# Orders that may still fill: accepted and waiting, in flight, or working at the broker.
MAY_FILL: frozenset[str] = lifecycle.OUTCOME_PENDING | lifecycle.WORKING

HALTED_MESSAGE = "the account is halted: no order is accepted until it is resumed"
REDUCE_ONLY_MESSAGE = (
    "the account is reduce-only: only an order that reduces the position in {contract} "
    "(with every working order on its side filled) is accepted"
)


def order_risk_check(*, account: Account, payload: OrderPayload, now: datetime) -> None:
    """Raise the first RiskRefusal the order meets; return when it passes every check.

    `account` is locked by the caller (acceptance), in its transaction.
    """
    _check(
        account,
        contract_id=payload.contract_id,
        side=payload.side,
        size=payload.size,
        adds=payload.size,
        now=now,
        new_order=True,
        with_brackets=payload.stop_loss_ticks is not None or payload.take_profit_ticks is not None,
    )


def order_modify_risk_check(*, order: Order, new_size: int) -> None:
    """A modify that raises an order's size adds exposure as a new order would: the same
    checks on the size added (not the rate and working-order counts: no new order), under the
    account's row lock. Nothing is stored: a refused modify leaves the order as it was."""
    with transaction.atomic():
        locked = lock_in_order(accounts=[order.account_id])["account"][0]
        try:
            _check(
                locked,
                contract_id=order.contract_id,
                side=order.side,
                size=new_size,
                adds=new_size - order.size,
                now=timezone.now(),
                new_order=False,
            )
        except RiskRefusal as refusal:
            metrics.order_risk_refusals_total.labels(refusal.limit).inc()
            raise


def _check(
    account: Account,
    *,
    contract_id: str,
    side: str,
    size: int,
    adds: int,
    now: datetime,
    new_order: bool,
    with_brackets: bool = False,
) -> None:
    account = account_trading_state_current(locked=account, now=now)
    state = account.trading_state
    if state == TradingState.HALTED:
        raise AccountHalted(
            HALTED_MESSAGE, reason=account.trading_state_reason or account.trading_state_cause
        )
    limits = account_limits(account)

    if limits.max_order_size is not None and size > limits.max_order_size:
        raise RiskLimitExceeded(
            f"the order's size {size} is above maxOrderSize {limits.max_order_size}",
            limit="maxOrderSize",
            value=limits.max_order_size,
            requested=size,
        )

    if new_order and limits.max_orders_per_minute is not None:
        _check_rate(account, limits.max_orders_per_minute, now)

    working_limit = limits.max_working_orders if new_order else None
    if state == TradingState.ACTIVE and limits.max_position_size is None:
        _check_working_orders(account, working_limit)
        return  # nothing below depends on the position: no query for it
    working = _working(account)
    net = _net_position(account, contract_id)
    sign = 1 if side == OrderSide.BUY else -1
    # A bracket group's two children are one-cancels-other: only one of them can fill, so a
    # take profit whose stop loss is working is not counted again.
    oco_stops = working.filter(bracket_role=BracketRole.STOP_LOSS).values("bracket_parent_id")
    on_side = (
        working.filter(contract_id=contract_id, side=side)
        .exclude(bracket_role=BracketRole.TAKE_PROFIT, bracket_parent_id__in=oco_stops)
        .aggregate(size=Sum("size"), filled=Sum("filled_size"))
    )
    pending_on_side = (on_side["size"] or 0) - (on_side["filled"] or 0)
    # The net position if this order and every working order on its side fill.
    projected = net + sign * (pending_on_side + adds)

    if state == TradingState.REDUCE_ONLY:
        reduces = (
            # A bracket's children would trade the other way once the entry filled.
            not with_brackets
            and net != 0
            and sign * net < 0
            and abs(projected) <= abs(net)
            and (projected == 0 or (projected > 0) == (net > 0))
        )
        if not reduces:
            by_loss = account.trading_state_cause == TradingStateCause.DAILY_LOSS_LIMIT
            raise RiskLimitExceeded(
                REDUCE_ONLY_MESSAGE.format(contract=contract_id)
                + (f" (daily loss limit {limits.daily_loss_limit} reached)" if by_loss else ""),
                limit="dailyLossLimit" if by_loss else "tradingState",
                value=limits.daily_loss_limit if by_loss else TradingState.REDUCE_ONLY.value,
                requested=realized_pnl_today(account=account, now=now) if by_loss else projected,
            )

    # An order that brings the position towards flat is never refused for its size.
    if (
        limits.max_position_size is not None
        and abs(projected) > limits.max_position_size
        and abs(projected) > abs(net)
    ):
        raise RiskLimitExceeded(
            f"the net position in {contract_id} would reach {projected} if this "
            f"order and the working orders on its side filled; maxPositionSize is "
            f"{limits.max_position_size}",
            limit="maxPositionSize",
            value=limits.max_position_size,
            requested=abs(projected),
        )

    _check_working_orders(account, working_limit)


def _working(account: Account) -> QuerySet[Order]:
    # Built only where a limit needs it: on every acceptance without limits (the default),
    # building this queryset was a twentieth of the acceptance's CPU, for no query at all.
    return Order.objects.filter(account=account, status__in=MAY_FILL)


def _check_working_orders(account: Account, limit: int | None) -> None:
    if limit is None:
        return
    # Bracket children are the broker's protection of an entry, not orders a bot placed: they
    # do not use up the account's working orders.
    count = (
        _working(account)
        .exclude(bracket_role__in=[BracketRole.STOP_LOSS, BracketRole.TAKE_PROFIT])
        .count()
    )
    if count + 1 > limit:
        raise RiskLimitExceeded(
            f"{count} orders are working on the account; maxWorkingOrders is {limit}",
            limit="maxWorkingOrders",
            value=limit,
            requested=count + 1,
        )


def _check_rate(account: Account, limit: int, now: datetime) -> None:
    # Orders acceptance took (they have a place in the queue): refusals have none and do not
    # count, or a bot hammering a limit would lock itself out of the rate as well.
    recent = list(
        Order.objects.filter(
            account=account, created_at__gt=now - RATE_WINDOW, account_seq__isnull=False
        )
        .order_by("-created_at")
        .values_list("created_at", flat=True)[:limit]
    )
    if len(recent) < limit:
        return
    oldest = recent[-1]
    retry_after = max(1.0, math.ceil((oldest + RATE_WINDOW - now).total_seconds()))
    raise RiskRateLimited(
        f"{len(recent)} orders were accepted on the account within the last minute; "
        f"maxOrdersPerMinute is {limit}",
        value=limit,
        requested=len(recent) + 1,
        retry_after=retry_after,
    )


def _net_position(account: Account, contract_id: str) -> int:
    position = Position.objects.filter(account=account, contract_id=contract_id).first()
    if position is None or position.type == PositionType.FLAT:
        return 0
    return position.size if position.type == PositionType.LONG else -position.size


def order_refused(
    *,
    account: Account,
    payload: OrderPayload,
    key: str,
    fingerprint: str,
    actor: str,
    now: datetime,
    refusal: RiskRefusal,
    trigger: str = TransitionTrigger.API,
) -> None:
    """Record a refusal after acceptance rolled back (see the module's docstring).

    A final refusal becomes a `rejected` order holding the key, with the error as the key's
    stored answer, so a retry with the key is answered the same. If another request with the
    key stored its outcome first, that one stands (the retry is answered from it).
    """
    metrics.order_risk_refusals_total.labels(refusal.limit).inc()
    logger.info(
        "order on account %s refused by risk (%s): %s",
        account.broker_account_id,
        refusal.limit,
        refusal,
    )
    # The loss limit may have switched the account inside the acceptance that rolled back.
    account_loss_limit_check(account_id=account.pk)
    if not refusal.final:
        return
    described = describe_error(refusal)
    assert described is not None  # a RiskRefusal always has its description
    reason = f"refused by risk ({refusal.limit}): {refusal}"[:2000]
    try:
        with transaction.atomic():
            locked = lock_in_order(accounts=[account])["account"][0]
            order = order_create(
                account_id=locked.pk,
                contract_id=payload.contract_id,
                side=payload.side,
                type=payload.type,
                size=payload.size,
                limit_price=payload.limit_price,
                stop_price=payload.stop_price,
                trail_price=payload.trail_price,
                stop_loss_ticks=payload.stop_loss_ticks,
                take_profit_ticks=payload.take_profit_ticks,
                idempotency_key=key,
                created_by=actor,
            )
            order_transition(
                order_id=order.pk,
                to_state=OrderStatus.REJECTED,
                trigger=trigger,
                actor=actor,
                reason=reason,
                changes={"status_reason": reason},
            )
            IdempotencyRecord.objects.create(
                account=locked,
                key=key,
                request_fingerprint=fingerprint,
                order=order,
                state=IdempotencyRecord.State.COMPLETED,
                response_status=described.http_status,
                response_body=described.body(),
                expires_at=now + _key_ttl(),
            )
    except IntegrityError:
        pass  # another request with this key stored its outcome a moment ago


def _key_ttl() -> timedelta:
    return timedelta(seconds=settings.ORDER_MANAGEMENT.idempotency.key_ttl_seconds)
