"""Finding out what the broker did with an order whose placement failed on the network.

An order in `unknown` may or may not exist at the broker. `order_verify` asks, in phases:

1. Direct lookup (`Order/searchById`) when we know the broker's id; budget
   `verification.directLookupBudgetMs`.
2. Time-window search (`Order/search` from the send time minus `searchWindowSeconds`, open
   ended), budget `searchBudgetMs`. Match our `customTag` exactly. When no tag matches, fall
   back to an untagged broker order with the same contract, side, size, type and prices created
   within `matchTimeToleranceSeconds` of the send time, and only when exactly one such order
   exists and no other local order claims it. The rule that matched is recorded.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction

from accounts.gateway import get_gateway
from ordermgmt import metrics
from orders.exceptions import IllegalTransition
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.placement import _SIDES, _TYPES
from orders.services import order_apply_broker_order, order_transition, order_update
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


def order_verify(*, order_id: object, actor: str = "verification") -> VerificationResult:
    started = time.perf_counter()
    outcome = "error"
    try:
        result = _verify(order_id, actor)
        outcome = result.outcome
        return result
    finally:
        metrics.order_verification_seconds.labels(outcome).observe(time.perf_counter() - started)


def _verify(order_id: object, actor: str) -> VerificationResult:
    order = Order.objects.select_related("account").get(pk=order_id)
    if order.status != OrderStatus.UNKNOWN:
        return VerificationResult(Outcome.NOT_UNKNOWN, order)
    config = settings.ORDER_MANAGEMENT.verification
    gateway = get_gateway()
    account_id = order.account.broker_account_id
    problems: list[str] = []

    # Phase 1: direct lookup.
    if order.broker_order_id is not None:
        try:
            wire = gateway.get_order(
                account_id=account_id,
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
            return _found(order, wire, MatchRule.BROKER_ORDER_ID, actor)

    # Phase 2: search the window around the send time.
    sent_at = order.submitted_at or order.created_at
    window_start = sent_at - timedelta(seconds=config.search_window_seconds)
    try:
        candidates = gateway.search_orders(
            account_id=account_id,
            start=window_start,
            end=None,
            budget=config.search_budget_ms / 1000,
        )
    except GatewayError as exc:
        _attempted("search", "error")
        problems.append(f"search: {exc}")
        return _inconclusive(order, "; ".join(problems), actor)

    tagged = [c for c in candidates if order.custom_tag and c.custom_tag == order.custom_tag]
    if len(tagged) == 1:
        _attempted("search", "found")
        return _found(order, tagged[0], MatchRule.CUSTOM_TAG, actor)
    if len(tagged) > 1:  # the broker keeps tags unique; if it ever does not, do not guess
        _attempted("search", "inconclusive")
        return _inconclusive(order, f"{len(tagged)} broker orders carry our tag", actor)

    lookalikes = [c for c in candidates if _looks_like(order, c, sent_at, config)]
    claimed = set(
        Order.objects.filter(account=order.account, broker_order_id__in=[c.id for c in lookalikes])
        .exclude(pk=order.pk)
        .values_list("broker_order_id", flat=True)
    )
    unclaimed = [c for c in lookalikes if c.id not in claimed]
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
    try:
        order = order_transition(
            order_id=order.pk,
            to_state=OrderStatus.FAILED,
            trigger=TransitionTrigger.VERIFICATION,
            actor=actor,
            reason="verified absent: no broker order matches (searched from "
            f"{window_start.isoformat()})",
        )
    except IllegalTransition:
        return VerificationResult(Outcome.NOT_UNKNOWN, Order.objects.get(pk=order.pk))
    return VerificationResult(Outcome.ABSENT, order)


def _looks_like(order: Order, candidate: Any, sent_at: Any, config: Any) -> bool:
    return (
        not candidate.custom_tag
        and candidate.contract_id == order.contract_id
        and candidate.side == _SIDES[order.side]
        and candidate.type == _TYPES[order.type]
        and candidate.size == order.size
        and candidate.limit_price == order.limit_price
        and candidate.stop_price == order.stop_price
        and abs((candidate.creation_timestamp - sent_at).total_seconds())
        <= config.match_time_tolerance_seconds
    )


def _found(order: Order, wire: Any, rule: MatchRule, actor: str) -> VerificationResult:
    updated = order_apply_broker_order(
        order_id=order.pk,
        broker_order=wire,
        trigger=TransitionTrigger.VERIFICATION,
        reason=f"verification found broker order {wire.id} by {rule}",
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


def verify_until_resolved(order_id: object, *, sleep: Any = time.sleep) -> VerificationResult:
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


def _background(order_id: object) -> None:
    close_old_connections()
    try:
        verify_until_resolved(order_id)
    except Exception:
        logger.exception("background verification of order %s failed", order_id)
    finally:
        close_old_connections()


def schedule_verification(order_id: object) -> None:
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
