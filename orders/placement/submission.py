"""Sending one order to the broker, and what each answer means for it (lifecycle rules: a
REST answer applies only while the order is still `submitting`; newer evidence wins).

Sending and settling are two calls, so that the account's turn can be handed on while a call
is still out (`queue.py`): `send` starts the broker call and returns at once; `settle` waits
for its answer and applies it. The broker's request is built from the Order row alone
(`broker_request`), so a field stored on the order travels by adding it there.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from accounts.gateway import get_gateway
from common import admission
from common.bulk import column_list, fetch_instances
from common.statements import execute_prepared
from orders import brackets, lifecycle, wire
from orders.exceptions import PlacementDeferred
from orders.locking import lock_in_order
from orders.models import Order, OrderStatus, TransitionTrigger
from orders.placement import timing
from orders.placement.release import order_release_unsent
from orders.placement.results import Outcome
from orders.services import order_transition, order_update, order_writes_batched
from orders.verification import schedule_verification
from projectx.errors import (
    AmbiguousError,
    BrokerRejected,
    DefinitiveError,
    GatewayTimeout,
    RateLimited,
    RateLimitExceeded,
    RequestNotSent,
)

logger = logging.getLogger(__name__)

# Called in the settling transaction with the order as it stands and the HTTP status that
# means: the placing request stores its answer there (one transaction, not two).
Finish = Callable[[Order, int], None]

# How long past the client's own timeout a settle waits for a call before calling it lost
# (the client always ends a call itself; this only guards against a wedged event loop).
_ANSWER_GRACE_SECONDS = 5.0


class _Progress:
    """How far a call got: on the wire (`written_at`), or ended; set from the gateway's thread."""

    def __init__(self) -> None:
        self.moved = threading.Event()
        self.written_at: float | None = None

    def written(self) -> None:
        self.written_at = time.perf_counter()
        self.moved.set()


@dataclass
class InFlight:
    """A placement request on its way to the broker (the order is `submitting`)."""

    order: Order
    future: concurrent.futures.Future[int]
    progress: _Progress

    def hand_over_after(self, seconds: float) -> bool:
        """Wait until the request is on the wire and then up to `seconds` more for its answer
        (the time to hand the turn on); whether the answer came."""
        with timing.step("broker"):
            budget = get_gateway().config.request_timeout + _ANSWER_GRACE_SECONDS
            self.progress.moved.wait(timeout=budget)  # a call that cannot write ends by itself
            written_at = self.progress.written_at
            if not self.future.done() and written_at is not None:
                left = seconds - (time.perf_counter() - written_at)
                concurrent.futures.wait([self.future], timeout=max(0.0, left))
        return self.future.done()


def mark_all_submitting(orders: list[Order], *, actor: str, trigger: str) -> list[Order]:
    """`created` -> `submitting` for each of these orders still `created`, in one transaction
    committed before any of them is sent; in the given order, each with its account."""
    if not orders:
        return []
    sending = []
    with transaction.atomic(), order_writes_batched() as writes:
        locked = {o.pk: o for o in lock_in_order(orders=[o.pk for o in orders])["order"]}
        for order in orders:
            current = locked.get(order.pk)
            if current is None or current.status != OrderStatus.CREATED:
                continue  # ended meanwhile (cancelled unsent): never sent
            writes.hold(current)  # locked above: the moves are written together at the end
            order_transition(
                order_id=current.pk,
                to_state=OrderStatus.SUBMITTING,
                trigger=trigger,
                actor=order.created_by or actor,
                changes={"submitted_at": timezone.now()},
                locked=current,
            )
            current.account = order.account  # loaded already: the request needs no query
            sending.append(current)
    return sending


def broker_request(order: Order) -> dict[str, Any]:
    """The Order/place request for this order, from its row."""
    return {
        "account_id": order.account.broker_account_id,
        "contract_id": order.contract_id,
        "type": wire.to_wire_type(order.type),
        "side": wire.to_wire_side(order.side),
        "size": order.size,
        "limit_price": order.limit_price,
        "stop_price": order.stop_price,
        "trail_price": order.trail_price,
        "custom_tag": order.custom_tag,
        **brackets.wire_brackets(order),
    }


def send(order: Order) -> InFlight:
    """Start the broker call for a `submitting` order (outside any transaction)."""
    if transaction.get_connection().in_atomic_block:
        raise RuntimeError("a placement must not be sent inside a transaction")
    progress = _Progress()
    future = get_gateway().place_order_started(on_written=progress.written, **broker_request(order))
    future.add_done_callback(lambda _: progress.moved.set())
    return InFlight(order, future, progress)


def settle(flight: InFlight, *, actor: str, finish: Finish | None = None) -> Outcome:
    """Wait for the call's answer and apply what it means; `finish` stores the response."""
    order = flight.order
    try:
        with timing.step("broker"):
            budget = get_gateway().config.request_timeout + _ANSWER_GRACE_SECONDS
            try:
                broker_order_id = _answer(flight.future, budget)
            except concurrent.futures.TimeoutError:
                flight.future.cancel()
                raise GatewayTimeout("Order/place", f"no answer within {budget} s") from None
    except BrokerRejected as exc:
        reason = f"broker rejected ({exc.error_name}): {exc.broker_message or ''}".strip()
        if exc.order_id is not None:
            reason += f" [broker order {exc.order_id}]"
        return _conclude(order, OrderStatus.REJECTED, reason, {}, actor, finish)
    except AmbiguousError as exc:
        return _conclude(
            order, OrderStatus.UNKNOWN, f"placement outcome unknown: {exc}", {}, actor, finish
        )
    except RateLimited as exc:
        return _defer(
            order,
            OrderStatus.REJECTED,
            PlacementDeferred(
                "broker_rate_limited",
                f"the broker's rate limit refused the order: {exc}",
                http_status=429,
                retry_after=exc.retry_after,
            ),
        )
    except RateLimitExceeded as exc:
        return _defer(
            order,
            OrderStatus.FAILED,
            PlacementDeferred(
                "rate_limited",
                f"not sent: the broker's request limit is reached for now ({exc})",
                http_status=429,
                retry_after=exc.retry_after,
            ),
        )
    except RequestNotSent as exc:
        return _defer(
            order,
            OrderStatus.FAILED,
            PlacementDeferred(
                "broker_unavailable",
                f"not sent: the broker could not be reached ({exc})",
                http_status=503,
                retry_after=1.0,
            ),
        )
    except DefinitiveError as exc:
        return _conclude(order, OrderStatus.REJECTED, str(exc), {}, actor, finish)
    return _conclude(
        order,
        OrderStatus.OPEN,
        "accepted by the broker",
        {"broker_order_id": broker_order_id},
        actor,
        finish,
    )


def _answer(future: concurrent.futures.Future[int], budget: float) -> int:
    """The call's answer. One not in yet has been out past the turn's bound (the turn was
    handed on from it): its request steps aside while it waits, so that a hung broker holds
    no slot of the web process (common/admission.py)."""
    if future.done():
        return future.result()
    with admission.stepped_aside():
        return future.result(timeout=budget)


class _SettleWaiters:
    """Wake-ups for requests waiting for one order's outcome, by order: a request whose order
    another holder of the turn sent waits for it (and re-reads the database between wake-ups,
    for a holder in another process). One condition for the whole process woke every waiter at
    every settle, and each re-read its order: under load a herd of queries for nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_order: dict[Any, list[threading.Event]] = {}

    def register(self, order_pk: Any) -> threading.Event:
        wake = threading.Event()
        with self._lock:
            self._by_order.setdefault(order_pk, []).append(wake)
        return wake

    def forget(self, order_pk: Any, wake: threading.Event) -> None:
        with self._lock:
            waiting = self._by_order.get(order_pk, [])
            if wake in waiting:
                waiting.remove(wake)
            if not waiting:
                self._by_order.pop(order_pk, None)

    def settled(self, order_pk: Any) -> None:
        with self._lock:
            waiting = list(self._by_order.get(order_pk, ()))
        for wake in waiting:
            wake.set()


_waiters = _SettleWaiters()


def wait_until_settled(
    order_pk: Any, *, step_aside_after: float, poll_seconds: float = 0.05
) -> Order:
    """The order once its placement answer is applied (it left `submitting`), or as it stands
    when the call's own time is up (then the settling thread or the stuck sweep ends it).
    Waiting longer than `step_aside_after` (its call counts as hung), the request steps aside
    (common/admission.py).

    Woken at once by a settle in this process; one in another process is seen at the next
    poll, which reads the status alone (the whole order, with its account, once at the end:
    under the spread bench the ORM's read of it at every poll was 8% of a worker's CPU)."""
    started = time.monotonic()
    deadline = started + get_gateway().config.request_timeout + _ANSWER_GRACE_SECONDS
    wake = _waiters.register(order_pk)
    with contextlib.ExitStack() as waiting:
        aside = False
        try:
            while _status(order_pk) == OrderStatus.SUBMITTING and time.monotonic() < deadline:
                transaction.get_connection().close()  # back to the pool while we wait
                if not aside and time.monotonic() - started > step_aside_after:
                    waiting.enter_context(admission.stepped_aside())
                    aside = True
                wake.wait(timeout=poll_seconds)
                wake.clear()
        finally:
            _waiters.forget(order_pk, wake)
    return Order.objects.select_related("account").get(pk=order_pk)


def _status(order_pk: Any) -> str:
    database = transaction.get_connection()
    with database.cursor() as cursor:
        execute_prepared(
            cursor, _STATUS_SQL, [Order._meta.pk.get_db_prep_value(order_pk, database)]
        )
        (status,) = cursor.fetchone()
    return str(status)


_STATUS_SQL = f"SELECT status FROM {Order._meta.db_table} WHERE {Order._meta.pk.column} = %s"


def settle_when_answered(flight: InFlight, *, actor: str) -> None:
    """Settle a call the turn was handed on from, once its answer (or its timeout) comes.

    Its own request has answered from the database meanwhile (`submitting`: 202); the order
    ends as the answer says, or `unknown` and verified. If this process dies first, the
    stuck sweep verifies the `submitting` order."""

    def run() -> None:
        try:
            settle(flight, actor=actor)
        except Exception:
            logger.exception("settling order %s after its answer failed", flight.order.pk)
        finally:
            transaction.get_connection().close()

    flight.future.add_done_callback(lambda _: _settler().submit(run))


_settle_pool: concurrent.futures.ThreadPoolExecutor | None = None


def _settler() -> concurrent.futures.ThreadPoolExecutor:
    global _settle_pool
    if _settle_pool is None:
        _settle_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="placement-settle"
        )
    return _settle_pool


def _conclude(
    order: Order,
    to_state: str,
    reason: str,
    changes: dict[str, Any],
    actor: str,
    finish: Finish | None,
) -> Outcome:
    """Apply a REST answer unless the hub or verification got there first (then adopt what
    they wrote, adding what only the answer knows), and store the response, in one
    transaction under the order's row lock."""
    reason = reason[:2000]
    started = time.perf_counter()
    with transaction.atomic():
        locked = _lock_committing_without_waiting_for_the_disk(order)
        locked.account = order.account  # loaded already: rendering needs no query
        if lifecycle.placement_answer_applies(locked):
            order_transition(
                order_id=locked.pk,
                to_state=to_state,
                trigger=TransitionTrigger.BROKER_REST,
                actor=actor,
                reason=reason,
                changes={**changes, "status_reason": reason}
                if to_state != OrderStatus.OPEN
                else changes,
                locked=locked,
            )
            if to_state == OrderStatus.UNKNOWN:
                schedule_verification(locked.pk)
        else:
            _adopt(locked, to_state, reason, changes, actor)
        status = lifecycle.placement_http_status(locked)
        if finish is not None:
            stored = time.perf_counter()
            finish(locked, status)
            timing.add("response", time.perf_counter() - stored)
            started += time.perf_counter() - stored
    timing.add("settling", time.perf_counter() - started)
    _waiters.settled(order.pk)
    return Outcome(locked, status)


def _lock_committing_without_waiting_for_the_disk(order: Order) -> Order:
    """Lock the order; this transaction's commit returns before its WAL reaches the disk
    (about 2 ms less on this machine), set in the same statement (`set_config(..., true)` is
    `SET LOCAL`): no round trip of its own.

    Safe for a broker's answer, and only for it: if PostgreSQL itself crashes within the next
    moment, the order is found `submitting` again with its record `processing`, which is where
    it stood before the answer, and the stuck sweep verifies it from the broker's truth (retries
    meanwhile get 409, then 202). Nothing is ever sent twice from it. Acceptance and the move to
    `submitting` stay durable: they are what decides whether an order is sent.
    (docs/decisions/0007)"""
    if transaction.get_connection().vendor != "postgresql":
        return Order.objects.select_for_update().get(pk=order.pk)
    # Written once, not compiled by the ORM for every answer.
    (locked,) = fetch_instances(Order, _LOCK_ORDER_ASYNC_COMMIT_SQL, [order.pk])
    return locked


_LOCK_ORDER_ASYNC_COMMIT_SQL = (
    f"SELECT {column_list(Order)}, set_config('synchronous_commit', 'off', true) AS _commit "
    f"FROM {Order._meta.db_table} WHERE {Order._meta.pk.column} = %s FOR UPDATE"
)


def _adopt(locked: Order, to_state: str, reason: str, changes: dict[str, Any], actor: str) -> None:
    """The stream reached the order first; keep what it wrote, add what only the answer says."""
    if to_state == OrderStatus.OPEN and locked.broker_order_id is None:
        # The hub delivered the order's progress before our REST answer, without its id.
        order_update(
            order_id=locked.pk,
            changes=changes,
            trigger=TransitionTrigger.BROKER_REST,
            reason="broker order id from the placement answer",
            locked=locked,
        )
    elif (
        to_state == OrderStatus.REJECTED and locked.status == to_state and not locked.status_reason
    ):
        # The stream reached the same conclusion first; the answer still says why.
        order_update(
            order_id=locked.pk,
            changes={"status_reason": reason},
            trigger=TransitionTrigger.BROKER_REST,
            actor=actor,
            reason=reason,
            locked=locked,
        )


def _defer(order: Order, to_state: str, deferred: PlacementDeferred) -> Outcome:
    """Nothing reached the broker, or it refused for a reason that passes: free the key."""
    released = order_release_unsent(
        order=order,
        to_state=to_state,
        reason=f"not placed ({deferred.code}): {deferred}",
        applies=lifecycle.placement_answer_applies,
        trigger=TransitionTrigger.BROKER_REST,
    )
    _waiters.settled(order.pk)
    if released:
        return Outcome(order, deferred.http_status, deferred=deferred)
    current = Order.objects.select_related("account").get(pk=order.pk)  # moved on
    return Outcome(current, lifecycle.placement_http_status(current))
