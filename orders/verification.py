"""Finding out what the broker did with an order whose placement failed on the network.

An order in `unknown` may or may not exist at the broker. `order_verify` asks, in phases:

1. Direct lookup (`Order/searchById`) when we know the broker's id; budget
   `verification.directLookupBudgetMs`.
2. Time-window search (`Order/search` from the send time minus `searchWindowSeconds`, open
   ended), budget `searchBudgetMs`. One search answers for every order of the account that is
   `unknown` when it is sent (from the earliest send time among them), so a burst of unknown
   placements costs one request of the broker's rate budget, not one each. Match our
   `customTag` exactly. When no tag matches, fall back to an untagged broker order with the
   same contract, side, size, type and prices created within `matchTimeToleranceSeconds` of
   the send time, and only when exactly one such order exists and no other local order claims
   it. The rule that matched is recorded.
3. Timeout policy: an attempt that could not reach the broker leaves the order `unknown` and is
   retried with exponential backoff up to `maxAttempts` (`verify_until_resolved`); after that the
   order stays `unknown`, is logged as an alert, and `verify_unknown_orders` (cron) keeps trying.

Absence is concluded only from a search that succeeded and covered the send time: then the
order becomes `failed`. A broker that cannot be reached never turns an order `failed`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction

from accounts.gateway import get_gateway
from accounts.models import Account
from common import metrics
from orders import lifecycle, wire
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.services import order_apply_broker_order, order_settle, order_update
from projectx.errors import BrokerRejected, GatewayError

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    FOUND = "found"
    ABSENT = "absent"
    INCONCLUSIVE = "inconclusive"
    NOT_UNKNOWN = "not_unknown"  # someone (the listener) resolved it already


class MatchRule(StrEnum):
    BROKER_ORDER_ID = "broker_order_id"
    CUSTOM_TAG = "custom_tag"
    ATTRIBUTES = "attributes"


@dataclass(frozen=True)
class VerificationResult:
    outcome: Outcome
    order: Order
    rule: MatchRule | None = None
    detail: str = ""


def _attempted(phase: str, outcome: str) -> None:
    # phase: direct | search | policy; outcome: found | absent | inconclusive | error
    metrics.order_verification_attempts_total.labels(phase, outcome).inc()


def order_verify(*, order_id: uuid.UUID | str, actor: str = "verification") -> VerificationResult:
    return orders_verify(order_ids=[order_id], actor=actor)[order_id]


def orders_verify(
    *, order_ids: list[Any], actor: str = "verification"
) -> dict[Any, VerificationResult]:
    """Verify these orders; one search of an account answers for all its unknown orders, so
    the results also cover the account's other unknown orders it resolved on the way."""
    results: dict[Any, VerificationResult] = {}
    for order_id in order_ids:
        if order_id in results:
            continue
        started = time.perf_counter()
        outcome = "error"
        try:
            batch = _verify(order_id, actor)
            outcome = batch[order_id].outcome
        finally:
            metrics.order_verification_seconds.labels(outcome).observe(
                time.perf_counter() - started
            )
        for resolved_id, result in batch.items():
            results.setdefault(resolved_id, result)
    return results


# One account's search at a time in this process: while it runs, other verifications of the
# same account wait for it and then find their orders resolved, instead of each spending a
# request of the broker's rate budget on the same window. (Correctness does not depend on it:
# every write is conditional under the order's row lock.)
_account_search_locks: dict[int, threading.Lock] = {}
_account_search_locks_guard = threading.Lock()


def _account_search_lock(account_id: int) -> threading.Lock:
    with _account_search_locks_guard:
        return _account_search_locks.setdefault(account_id, threading.Lock())


def _verify(order_id: uuid.UUID | str, actor: str) -> dict[Any, VerificationResult]:
    """This order's result, and those of the account's other unknown orders resolved with it."""
    order = Order.objects.select_related("account").get(pk=order_id)
    if order.status != OrderStatus.UNKNOWN:
        return {order_id: VerificationResult(Outcome.NOT_UNKNOWN, order)}
    config = settings.ORDER_MANAGEMENT.verification
    problems: list[str] = []

    # Phase 1: direct lookup.
    if order.broker_order_id is not None:
        try:
            broker_order = get_gateway().get_order(
                account_id=order.account.broker_account_id,
                order_id=order.broker_order_id,
                budget=config.direct_lookup_budget_ms / 1000,
            )
        except BrokerRejected:
            _attempted("direct", "absent")
            problems.append("direct lookup: not found")
        except GatewayError as exc:
            _attempted("direct", "error")
            problems.append(f"direct lookup: {exc}")
        else:
            _attempted("direct", "found")
            return {order_id: _found(order, broker_order, MatchRule.BROKER_ORDER_ID, actor)}

    # Phase 2: one search of the account's window answers for every unknown order in it.
    with _account_search_lock(order.account_id):
        order.refresh_from_db()
        if order.status != OrderStatus.UNKNOWN:
            return {order_id: VerificationResult(Outcome.NOT_UNKNOWN, order)}
        results = _verify_account_by_search(order.account, actor, problems={order.pk: problems})
    # Keyed by the caller's id (a str or a UUID); the batch's other orders by their pk.
    own = results.pop(order.pk, None) or VerificationResult(
        Outcome.NOT_UNKNOWN, Order.objects.get(pk=order.pk)
    )
    return {**results, order_id: own}


def _verify_account_by_search(
    account: Account, actor: str, *, problems: dict[object, list[str]]
) -> dict[object, VerificationResult]:
    config = settings.ORDER_MANAGEMENT.verification
    # The orders this search answers for are the ones unknown *before* it is sent: absence is
    # concluded only for an order whose send time the search covers.
    unknown = list(
        Order.objects.select_related("account")
        .filter(account=account, status=OrderStatus.UNKNOWN)
        .order_by("submitted_at", "created_at")
    )
    if not unknown:
        return {}
    earliest = min(o.submitted_at or o.created_at for o in unknown)
    window_start = earliest - timedelta(seconds=config.search_window_seconds)
    try:
        candidates = get_gateway().search_orders(
            account_id=account.broker_account_id,
            start=window_start,
            end=None,
            budget=config.search_budget_ms / 1000,
        )
    except GatewayError as exc:
        _attempted("search", "error")
        return {
            o.pk: _inconclusive(o, "; ".join([*problems.get(o.pk, []), f"search: {exc}"]), actor)
            for o in unknown
        }

    by_tag: dict[str, list[Any]] = {}
    for candidate in candidates:
        if candidate.custom_tag:
            by_tag.setdefault(candidate.custom_tag, []).append(candidate)
    # Broker orders another local order already stands for cannot be this one's lookalike.
    claimed = set(
        Order.objects.filter(
            account=account, broker_order_id__in=[c.id for c in candidates]
        ).values_list("broker_order_id", flat=True)
    )
    results: dict[object, VerificationResult] = {}
    for order in unknown:
        results[order.pk] = _match(order, candidates, by_tag, claimed, window_start, actor)
        if results[order.pk].outcome == Outcome.FOUND:
            claimed.add(results[order.pk].order.broker_order_id)
    return results


def _match(
    order: Order,
    candidates: list[Any],
    by_tag: dict[str, list[Any]],
    claimed: set[int | None],
    window_start: Any,
    actor: str,
) -> VerificationResult:
    config = settings.ORDER_MANAGEMENT.verification
    tagged = by_tag.get(order.custom_tag or "", []) if order.custom_tag else []
    if len(tagged) == 1:
        _attempted("search", "found")
        return _found(order, tagged[0], MatchRule.CUSTOM_TAG, actor)
    if len(tagged) > 1:  # the broker keeps tags unique; if it ever does not, do not guess
        _attempted("search", "inconclusive")
        return _inconclusive(order, f"{len(tagged)} broker orders carry our tag", actor)

    sent_at = order.submitted_at or order.created_at
    unclaimed = [
        c
        for c in candidates
        if (c.id not in claimed or c.id == order.broker_order_id)
        and _looks_like(order, c, sent_at, config)
    ]
    if len(unclaimed) == 1:
        _attempted("search", "found")
        return _found(order, unclaimed[0], MatchRule.ATTRIBUTES, actor)
    if len(unclaimed) > 1:
        _attempted("search", "inconclusive")
        return _inconclusive(
            order, f"{len(unclaimed)} untagged broker orders look like this one", actor
        )

    # The search succeeded and its window starts before the send time and is open-ended:
    # the broker does not have the order.
    _attempted("search", "absent")
    settled = order_settle(
        order_id=order.pk,
        to_state=OrderStatus.FAILED,
        applies=lifecycle.absence_applies,
        trigger=TransitionTrigger.VERIFICATION,
        actor=actor,
        reason="verified absent: no broker order matches (searched from "
        f"{window_start.isoformat()})",
    )
    if not settled.applied:
        return VerificationResult(Outcome.NOT_UNKNOWN, settled.order)
    return VerificationResult(Outcome.ABSENT, settled.order)


def _looks_like(order: Order, candidate: Any, sent_at: Any, config: Any) -> bool:
    return (
        not candidate.custom_tag
        and candidate.contract_id == order.contract_id
        and candidate.side == wire.to_wire_side(order.side)
        and candidate.type == wire.to_wire_type(order.type)
        and candidate.size == order.size
        and candidate.limit_price == order.limit_price
        and candidate.stop_price == order.stop_price
        and abs((candidate.creation_timestamp - sent_at).total_seconds())
        <= config.match_time_tolerance_seconds
    )


def _found(order: Order, broker_order: Any, rule: MatchRule, actor: str) -> VerificationResult:
    updated = order_apply_broker_order(
        order_id=order.pk,
        broker_order=broker_order,
        trigger=TransitionTrigger.VERIFICATION,
        reason=f"verification found broker order {broker_order.id} by {rule}",
        actor=actor,
    )
    return VerificationResult(Outcome.FOUND, updated.order, rule)


def _inconclusive(order: Order, detail: str, actor: str) -> VerificationResult:
    updated = order_update(
        order_id=order.pk,
        changes={"verification_attempts": order.verification_attempts + 1},
        trigger=TransitionTrigger.VERIFICATION,
        actor=actor,
        reason=f"verification inconclusive: {detail}"[:2000],
    )
    logger.warning("order %s still unknown after verification: %s", order.pk, detail)
    return VerificationResult(Outcome.INCONCLUSIVE, updated, detail=detail)


def verify_until_resolved(
    order_id: uuid.UUID | str, *, sleep: Any = time.sleep
) -> VerificationResult:
    """Phase 3: retry inconclusive verification with jittered exponential backoff."""
    config = settings.ORDER_MANAGEMENT.verification
    delay = config.backoff_initial_ms / 1000
    result = order_verify(order_id=order_id)
    attempts = 1
    while result.outcome == Outcome.INCONCLUSIVE and attempts < config.max_attempts:
        sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, config.backoff_max_ms / 1000)
        result = order_verify(order_id=order_id)
        attempts += 1
    if result.outcome in {Outcome.FOUND, Outcome.ABSENT, Outcome.INCONCLUSIVE}:
        # The policy's verdict after its retries (inconclusive: it gave up for now).
        _attempted("policy", result.outcome)
    if result.outcome == Outcome.INCONCLUSIVE:
        logger.error(
            "ALERT order %s is still unknown after %d verification attempts; "
            "verify_unknown_orders will keep trying",
            order_id,
            attempts,
        )
    return result


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _background(order_id: uuid.UUID | str) -> None:
    close_old_connections()
    try:
        verify_until_resolved(order_id)
    except Exception:
        logger.exception("background verification of order %s failed", order_id)
    finally:
        close_old_connections()


def schedule_verification(order_id: uuid.UUID | str) -> None:
    """Verify in the background after the current transaction commits (when enabled)."""
    if not getattr(settings, "ORDERMGMT_BACKGROUND_VERIFICATION", True):
        return

    def submit() -> None:
        global _executor
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="verify")
        _executor.submit(_background, order_id)

    transaction.on_commit(submit)
