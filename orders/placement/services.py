"""Placing an order (`order_place`): idempotency, the broker call, and what happens when it fails.

`order_place` follows these steps:

1. Validate against the contract (tick size) and work out the idempotency key.
2. Answer from a previous request with the same key when there is one (replay, 409 or 422).
3. Store the order (`created`) and its idempotency record in one transaction, and commit.
   The record's unique constraint makes concurrent requests with one key race safely.
4. Move to `submitting` and call the broker outside any transaction, with the key's digest as
   `customTag`.
5. Accepted: `open` with the broker's id (201). Refused: `rejected` with the broker's reason
   (422). An ambiguous failure (timeout, reset, 5xx) or a request that never left: `unknown`
   (202), and verification finds out what the broker did before anyone retries.
6. Store the response on the idempotency record, so a retry replays it.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from accounts.models import Account
from common import metrics
from orders import idempotency
from orders.exceptions import IdempotencyKeyReused, RiskRefusal
from orders.models import IdempotencyRecord, TransitionTrigger
from orders.placement.queue import accept, send_in_turn
from orders.placement.replay import previous_outcome, remember
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
    key = (
        idempotency.validate_client_key(client_key)
        if client_key is not None
        else idempotency.derived_key(
            payload, now=now, bucket_seconds=config.derived_key_bucket_seconds
        )
    )
    fingerprint = payload.fingerprint()
    previous = previous_outcome(account, key, fingerprint)
    if previous is not None:
        return previous

    order_validate_prices(payload=payload)
    try:
        order, record = accept(account, payload, key, fingerprint, actor, now)
    except IntegrityError:
        # Another request with this key won the insert a moment ago.
        previous = previous_outcome(account, key, fingerprint)
        if previous is not None:
            return previous
        raise IdempotencyKeyReused(key) from None
    except RiskRefusal as refusal:
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

    result = send_in_turn(order, actor=actor, trigger=trigger)
    if result.deferred is not None:
        raise result.deferred
    # Request to broker answer, for placements that reached the broker's turn (replays and
    # refusals answer from the database and would only blur it), by where the order landed.
    metrics.order_placement_seconds.labels(result.order.status).observe(
        time.perf_counter() - started
    )
    body = render(result.order)
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        state=IdempotencyRecord.State.COMPLETED,
        response_status=result.http_status,
        response_body=body,
    )
    record.refresh_from_db()
    remember(account, key, record)
    # The body as stored for the key: a retry and this first answer say the same.
    return PlacementResult(result.order, result.http_status, body=body)
