"""The account's placement queue: acceptance under the account's row lock (its place in the
queue, its depth, a close in progress), and sending in acceptance order in the account's turn.
See docs/decisions/0002 and 0007."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Account, PositionClose
from common import metrics
from common.bulk import column_list, fetch_instances
from common.locking import ADVISORY_NAMESPACE_PLACEMENT, Turn, TurnTimeout, retry_on_deadlock
from common.pipeline import sent_cursor, sent_together
from common.statements import execute_prepared
from orders import idempotency, lifecycle
from orders.exceptions import PlacementDeferred, PlacementQueueFull, PositionClosing
from orders.locking import lock_account_taking_seq_sent
from orders.models import IdempotencyRecord, Order, OrderStatus
from orders.placement import timing
from orders.placement.release import cancel_unsent, order_release_unsent, still_waiting
from orders.placement.results import Outcome
from orders.placement.submission import (
    Finish,
    InFlight,
    mark_all_submitting,
    send,
    settle,
    settle_when_answered,
    wait_until_settled,
)
from orders.risk import order_risk_check
from orders.services import InitialMove, order_create

# A call that has not answered this long after its request was written to the socket hands
# the account's turn on: the broker has it, so the next order is sent after it (FIFO is the
# order in which orders are sent), and the hung one is settled from its own answer when it
# comes, or as `unknown` and verified. Well above
# the broker's usual answer (about a millisecond on loopback, tens over the internet), well
# below what a queue behind a hung call could bear (issue 14: the next order within 500 ms).
TURN_HANDOVER_SECONDS = 0.25
# A holder of the turn also sends up to this many orders accepted after its own, if they are
# waiting: on one busy account a turn changed hands every 90 ms (the wait at PostgreSQL, the
# waiting orders read and marked `submitting`, each a few round trips behind the workers'
# GIL), against 13 ms for a call. Their own requests find them sent and wait for the answer.
# Bounded, as the holder's own answer waits for the calls it sends after its own; and only
# on an account whose queue this process last saw full (`_crowded`).
TURN_SENDS_BEHIND_AT_MOST = 10


def account_turn(account: Account) -> Turn:
    """The account's turn to send: one holder at a time across every process."""
    return Turn(ADVISORY_NAMESPACE_PLACEMENT, account.pk)


@dataclass(frozen=True)
class Accepted:
    order: Order
    record: IdempotencyRecord
    # First in the account's queue, with the turn taken in the acceptance transaction: the
    # order went to `submitting` there and is sent at once.
    sending: bool


# Accounts whose queue this process last saw full (or one order short of it): only for them
# does a placement read the queue at the door (`refuse_when_full`) before taking the
# account's lock. A hint for this process, never a decision: the door reads PostgreSQL, and
# `accept` decides under the lock.
_crowded: dict[int, bool] = {}


def refuse_when_full(account: Account, key: str) -> None:
    """PlacementQueueFull, before the account's lock, when its queue is full and `key` is new.

    Under a burst on one account most requests find the queue full. Refused in `accept` they
    took the account's row lock one after another (and rolled back), so the acceptances the
    queue had room for waited behind them. Here they read the queue without the lock, and
    hold nothing. A key used before goes on to `accept`, where its retry is answered from
    its first request; a queue that drains meanwhile costs the bot one early 429 (nothing
    stored, nothing sent). Read only where this process last saw the queue full: an
    uncrowded account's placement pays no round trip for it."""
    if not _crowded.get(account.pk):
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            f"SELECT (SELECT COUNT(*) FROM {quote(Order._meta.db_table)}"
            " WHERE account_id = %s AND status = %s),"
            f" EXISTS (SELECT 1 FROM {quote(IdempotencyRecord._meta.db_table)}"
            " WHERE account_id = %s AND key = %s)",
            [account.pk, OrderStatus.CREATED, account.pk, key],
        )
        waiting, key_used = cursor.fetchone()
    depth = settings.ORDER_MANAGEMENT.concurrency_control.max_queue_depth_per_account
    if waiting >= depth and not key_used:
        metrics.placement_queue_rejections_total.inc()
        raise PlacementQueueFull(waiting=waiting)


@retry_on_deadlock
@transaction.atomic
def accept(
    account: Account,
    payload: idempotency.OrderPayload,
    key: str,
    fingerprint: str,
    actor: str,
    now: Any,
    *,
    turn: Turn,
    trigger: str,
) -> Accepted:
    """Store the order (`created`) with its place in the account's queue, or refuse it whole.

    Under the account's row lock (the first lock of the hierarchy): the queue depth, a close in
    progress on the contract, the pre-trade risk checks and the next sequence number are
    decided by one writer at a time.

    1. Lock the account, taking its next sequence number in the same statement.
    2. One statement: insert the key's idempotency record (naming the order inserted in step 3;
       the foreign key is checked at commit), and read a close in progress, the orders waiting,
       and a try for the account's turn (`turn`; the caller releases it on every path). A key
       used before fails here with IntegrityError, before any check could refuse what is
       really a retry: the caller answers it from the earlier request.
    3. Refuse (nothing stays: the transaction rolls back), or store the order with its
       sequence number. First in the queue with the turn: `submitting` at once.
    """
    config = settings.ORDER_MANAGEMENT
    order_pk = uuid.uuid4()  # the record names the order it is inserted with (below)
    # Steps 1 and 2 in one round trip (after the transaction's BEGIN): PostgreSQL runs the
    # second once the first holds the lock, in a snapshot taken then.
    with sent_together():
        locking = lock_account_taking_seq_sent(account)
        storing = _record_and_queue_state_sent(
            account,
            key=key,
            fingerprint=fingerprint,
            expires_at=now + timedelta(seconds=config.idempotency.key_ttl_seconds),
            order_pk=order_pk,
            contract_id=payload.contract_id,
            now=now,
            turn=turn,
        )
    locked = locking()
    record, closing, waiting = storing()
    record.account = locked
    # A close whose lease expired (its process died) does not block: it is taken over later.
    if closing:
        raise PositionClosing(contract_id=payload.contract_id)
    # Pre-trade risk (issue 15): limits and the trading state, decided under this lock.
    order_risk_check(account=locked, payload=payload, now=now)
    depth = config.concurrency_control.max_queue_depth_per_account
    # Full once this one is in (or refused below): the next placements read at the door.
    _crowded[locked.pk] = waiting + 1 >= depth
    if waiting >= depth:
        metrics.placement_queue_rejections_total.inc()
        raise PlacementQueueFull(waiting=waiting)
    sending = waiting == 0 and turn.held
    order = order_create(
        order_id=order_pk,
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
        custom_tag=idempotency.custom_tag_for(account_broker_id=locked.broker_account_id, key=key),
        created_by=actor,
        account_seq=locked.last_order_seq,
        # First in the queue with the turn: `submitting` at once, in the same insert.
        submitting=InitialMove(
            trigger=trigger, actor=actor, changes={"submitted_at": timezone.now()}
        )
        if sending
        else None,
    )
    order.account = locked
    record.order = order
    return Accepted(order, record, sending)


def _record_and_queue_state_sent(
    account: Account,
    *,
    key: str,
    fingerprint: str,
    expires_at: Any,
    order_pk: uuid.UUID,
    contract_id: str,
    now: Any,
    turn: Turn,
) -> Callable[[], tuple[IdempotencyRecord, bool, int]]:
    """Insert the key's record; then a close in progress on the contract, how many orders
    wait to be sent, and a try for the account's turn (PostgreSQL; the local lock on SQLite).
    Sent now, among statements sent together (`common.pipeline`), after the account's lock;
    the function returned reads the answer once the block has been answered.

    On PostgreSQL one statement, written out (a CTE inserts the record): it runs on every
    placement, and the ORM's INSERT and a compiled query cost more CPU than the round trips
    they took. It runs once the account's lock is held (a statement of its own, before), so
    its snapshot sees every order accepted before this one."""
    record = IdempotencyRecord(
        account=account,
        key=key,
        request_fingerprint=fingerprint,
        expires_at=expires_at,
        order_id=order_pk,
    )
    quote = connection.ops.quote_name
    close_table, order_table = PositionClose._meta.db_table, Order._meta.db_table
    try_turn = turn.try_sql()
    turn_sql, turn_params = try_turn if try_turn is not None else ("NULL", [])
    state_sql = (
        f"EXISTS (SELECT 1 FROM {quote(close_table)} WHERE account_id = %s"
        " AND contract_id = %s AND state = %s AND lease_expires_at >= %s),"
        f" (SELECT COUNT(*) FROM {quote(order_table)} WHERE account_id = %s AND status = %s),"
        f" {turn_sql}"
    )
    state_params = [
        account.pk,
        contract_id,
        PositionClose.State.IN_PROGRESS,
        PositionClose._meta.get_field("lease_expires_at").get_db_prep_value(now, connection),
        account.pk,
        OrderStatus.CREATED,
        *turn_params,
    ]
    if connection.vendor == "postgresql":
        fields = [f for f in IdempotencyRecord._meta.concrete_fields if not f.primary_key]
        values = [f.get_db_prep_save(f.pre_save(record, add=True), connection) for f in fields]
        sql = (
            f"WITH record AS (INSERT INTO {quote(IdempotencyRecord._meta.db_table)}"
            f" ({', '.join(quote(f.column) for f in fields)})"
            f" VALUES ({', '.join(['%s'] * len(fields))}) RETURNING id)"
            f" SELECT (SELECT id FROM record), {state_sql}"
        )
        params = [*values, *state_params]
    else:
        record.save(force_insert=True)
        sql, params = f"SELECT %s, {state_sql}", [record.pk, *state_params]
    cursor = sent_cursor(sql, params)

    def answer() -> tuple[IdempotencyRecord, bool, int]:
        with cursor:
            record.pk, closing, waiting, took = cursor.fetchone()
        record._state.adding = False
        record._state.db = connection.alias
        turn.took(bool(took))
        turn.try_local()
        return record, bool(closing), int(waiting)

    return answer


def _seq(order: Order) -> int:
    """An order's place in its account's queue: every order `accept` took has one."""
    if order.account_seq is None:
        raise RuntimeError(
            f"order {order.pk} is waiting to be sent but has no account_seq: it was not "
            "accepted through the placement queue"
        )
    return order.account_seq


def send_in_turn(
    accepted: Accepted, *, turn: Turn, actor: str, trigger: str, finish: Finish | None = None
) -> Outcome:
    """Send the account's waiting orders in acceptance order, up to and including this one
    (and a few accepted after it, `TURN_SENDS_BEHIND_AT_MOST`).

    1. Take the account's turn (a PostgreSQL advisory lock, so across every web process),
       unless acceptance took it already. The holder sends every order accepted before its own
       that is still waiting, then its own, then (its queue crowded) up to
       `TURN_SENDS_BEHIND_AT_MOST` waiting behind it: whoever gets the turn, the broker sees
       the account's orders in the order the system accepted them.
    2. Each call is waited for until it is on the wire, then up to `TURN_HANDOVER_SECONDS`
       for its answer, before the next goes out. The other orders' answers are applied by
       settling threads as they come (their own requests wait for that).
    3. The turn is given back once this order's call has answered or the bound passed, and
       this order is settled outside it (with its response stored, `finish`).

    A request whose order was sent by an earlier holder waits for its outcome in the database.
    Orders left waiting longer than `lifecycle.stuckAfterSeconds.created` (their process died)
    are cancelled, never sent late.
    """
    config = settings.ORDER_MANAGEMENT
    order = accepted.order
    mine: InFlight | None = None
    try:
        with timing.step("turn"):
            if accepted.sending:
                mine = send(order)
            elif turn.wait(
                timeout=config.concurrency_control.placement_turn_timeout_seconds,
                still_needed=lambda: _still_waiting(order),
            ):
                mine = _send_waiting(order, actor=actor, trigger=trigger)
        if mine is not None:
            mine.hand_over_after(TURN_HANDOVER_SECONDS)
    except TurnTimeout:
        deferred = PlacementDeferred(
            "placement_queue_timeout",
            "the account's placement queue did not move in time; nothing was sent",
            http_status=503,
            retry_after=1.0,
        )
        if order_release_unsent(
            order=order,
            to_state=OrderStatus.CANCELLED,
            reason=f"not placed ({deferred.code}): {deferred}",
            applies=still_waiting,
        ):
            return Outcome(order, 503, deferred=deferred)
    finally:
        turn.release()
    if mine is not None:
        return settle(mine, actor=actor, finish=finish)
    with timing.step("broker"):
        # An earlier holder sent it; its answer may still be on the way.
        current = wait_until_settled(order.pk, step_aside_after=TURN_HANDOVER_SECONDS)
    if current.idempotency_key is None:
        # An earlier holder of the turn sent it, and it did not reach the broker (or the
        # broker refused it for a transient reason): the key is free again.
        deferred = PlacementDeferred(
            "broker_unavailable",
            f"the order was not placed: {current.status_reason}",
            http_status=503,
            retry_after=1.0,
        )
        return Outcome(current, 503, deferred=deferred)
    return Outcome(current, lifecycle.placement_http_status(current))


def _still_waiting(order: Order) -> bool:
    return Order.objects.filter(pk=order.pk, status=OrderStatus.CREATED).exists()


def _send_waiting(order: Order, *, actor: str, trigger: str) -> InFlight | None:
    """In the turn: send the waiting orders up to `order` and a few behind it, in sequence
    order; its own call, or None when an earlier holder sent it.

    They go to `submitting` together (one transaction, one durable commit for the lot), then
    out one at a time, each after the previous one is on the wire and answered or past the
    bound. The other orders' answers are applied by the settling threads as they come; their
    own requests wait for that (`wait_until_settled`)."""
    config = settings.ORDER_MANAGEMENT
    stale_after = timedelta(seconds=config.lifecycle.stuck_after_seconds.created)
    # Only where the queue is crowded: with a few orders waiting, each request sending its
    # own was cheaper (the spread bench lost a tenth of its rate to requests answered from
    # another worker's sends, which they poll for).
    behind = TURN_SENDS_BEHIND_AT_MOST if _crowded.get(order.account_id) else 0
    waiting = _waiting_through(order, behind=behind)
    if all(each.pk != order.pk for each in waiting):
        return None  # ours went out in an earlier holder's turn
    now = timezone.now()
    due = []
    for each in waiting:
        if now - each.created_at > stale_after:
            cancel_unsent(each, "not sent within the time allowed after acceptance")
        else:
            due.append(each)
    mine: InFlight | None = None
    for each in mark_all_submitting(due, actor=actor, trigger=trigger):
        flight = send(each)
        flight.hand_over_after(TURN_HANDOVER_SECONDS)  # before the next goes out
        if each.pk == order.pk:
            mine = flight  # settled by its own request, once the turn is given back
        else:
            settle_when_answered(flight, actor=each.created_by or actor)
    return mine  # None: ours was cancelled unsent (too old), or ended meanwhile


def _waiting_through(order: Order, *, behind: int) -> list[Order]:
    """The account's orders still waiting to be sent, up to `order` and at most `behind`
    accepted after it, in sequence order, each with the account (`order`'s: the same row). On
    PostgreSQL a statement written once: the ORM compiled it afresh in every turn, a tenth of
    a web worker's CPU under a spread load."""
    last = _seq(order) + behind
    if connection.vendor != "postgresql":
        return list(
            Order.objects.select_related("account")
            .filter(
                account_id=order.account_id,
                status=OrderStatus.CREATED,
                account_seq__lte=last,
            )
            .order_by("account_seq")
        )
    waiting = fetch_instances(Order, _WAITING_SQL, [order.account_id, OrderStatus.CREATED, last])
    for each in waiting:
        each.account = order.account
    return waiting


_WAITING_SQL = (
    f"SELECT {column_list(Order)} FROM {Order._meta.db_table} WHERE account_id = %s AND status = %s"
    " AND account_seq <= %s ORDER BY account_seq"
)
