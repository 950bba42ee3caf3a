"""Placing an order (`order_place`): idempotency, the broker call, and what happens when it fails.

`order_place` follows these steps:

1. Work out the idempotency key; answer a completed earlier request with the same key from the
   cache (replay or 422), without a query.
2. Validate against the contract (tick size).
3. Store the order (`created`) and its idempotency record in one transaction, and commit; a
   key used before fails its unique constraint there and is answered from the earlier request
   (replay, 409 or 422). The same statement that reads the queue tries the account's turn:
   first in line with the turn free, the order goes to `submitting` in that transaction.
4. In the account's turn, call the broker outside any transaction, with the key's digest as
   `customTag` (see `queue.send_in_turn`: a call that hangs hands the turn on).
5. Accepted: `open` with the broker's id (201). Refused: `rejected` with the broker's reason
   (422). An ambiguous failure (timeout, reset, 5xx) or a request that never left: `unknown`
   (202), and verification finds out what the broker did before anyone retries.
6. Store the response on the idempotency record, in the transaction that applies the answer,
   so a retry replays it.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from accounts.models import Account
from common import after_response, metrics
from orders import idempotency
from orders.exceptions import IdempotencyKeyReused, RiskRefusal
from orders.models import Order, TransitionTrigger
from orders.placement import timing
from orders.placement.queue import accept, account_turn, refuse_when_full, send_in_turn
from orders.placement.replay import cached_outcome, previous_outcome, record_complete, remember
from orders.placement.results import PlacementResult, Renderer, minimal_body
from orders.risk import order_refused
from orders.validation import order_validate_prices


def order_place(
    *,
    account: Account,
    payload: idempotency.OrderPayload,
    client_key: str | None,
    actor: str,
    trigger: str = TransitionTrigger.API,
    render: Renderer = minimal_body,
) -> PlacementResult:
    started = time.perf_counter()
    config = settings.ORDER_MANAGEMENT.idempotency
    now = timezone.now()
    with timing.step("validation"):
        key = (
            idempotency.validate_client_key(client_key)
            if client_key is not None
            else idempotency.derived_key(
                payload, now=now, bucket_seconds=config.derived_key_bucket_seconds
            )
        )
        fingerprint = payload.fingerprint()
        cached = cached_outcome(account, key, fingerprint)
        if cached is not None:
            return cached
        order_validate_prices(payload=payload)

    turn = account_turn(account)
    try:
        with timing.step("storing"):
            refuse_when_full(account, key)
            accepted = accept(
                account, payload, key, fingerprint, actor, now, turn=turn, trigger=trigger
            )
    except IntegrityError:
        turn.release()
        # The key was used before (its answer not in the cache), or another request with it
        # won the insert a moment ago.
        previous = previous_outcome(account, key, fingerprint, render)
        if previous is not None:
            return previous
        raise IdempotencyKeyReused(key) from None
    except RiskRefusal as refusal:
        turn.release()
        # Pre-trade risk (issue 15): a final refusal is stored as the key's outcome.
        order_refused(
            account=account,
            payload=payload,
            key=key,
            fingerprint=fingerprint,
            actor=actor,
            now=now,
            refusal=refusal,
            trigger=trigger,
        )
        raise
    except BaseException:
        turn.release()
        raise

    record = accepted.record
    stored: list[dict[str, Any]] = []

    def finish(order: Order, status: int) -> None:
        # In the transaction that applies the broker's answer: the retry's answer is stored
        # with the outcome it describes.
        body = render(order)
        record_complete(record.pk, status=status, body=body)
        stored.append(body)

    outcome = send_in_turn(accepted, turn=turn, actor=actor, trigger=trigger, finish=finish)
    if outcome.deferred is not None:
        raise outcome.deferred
    # Request to broker answer, for placements that reached the broker's turn (replays and
    # refusals answer from the database and would only blur it), by where the order landed.
    metrics.order_placement_seconds.labels(outcome.order.status).observe(
        time.perf_counter() - started
    )
    if not stored:
        # An earlier holder of the turn sent it: store what it came to.
        with timing.step("response"):
            stored.append(render(outcome.order))
            record_complete(record.pk, status=outcome.http_status, body=stored[0])
    body = stored[0]
    order_id = str(outcome.order.pk)
    # The cache's copy for a retry, once the answer has gone out: a retry before it is answered
    # from the database.
    after_response.defer(
        lambda: remember(
            account, key, fingerprint, order_id, outcome.http_status, body, record.expires_at
        )
    )
    return PlacementResult(order_id, outcome.http_status, body)
