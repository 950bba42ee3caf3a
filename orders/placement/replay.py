"""Answering a retry from what an earlier request with the same Idempotency-Key did (the
cache, else the database)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from accounts.models import Account
from common.statements import execute_prepared
from orders import idempotency
from orders.exceptions import IdempotencyKeyReused, RequestInProgress
from orders.models import IdempotencyRecord
from orders.placement.results import PlacementResult, Renderer


def cached_outcome(account: Account, key: str, fingerprint: str) -> PlacementResult | None:
    """The stored answer of a completed request with this key, from the cache: no query.

    Safe without the database because a completed record never changes until it expires, and
    the cache entry expires with it. A miss proves nothing (evicted, another cache, a cache
    outage): the acceptance transaction's unique constraints are the guard, and a retry that
    misses here fails there and is answered by `previous_outcome`."""
    cached = idempotency.cache_get(account.pk, key)
    if cached is None:
        return None
    if cached.fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    return PlacementResult(cached.order_id, cached.status, cached.body, replayed=True)


def previous_outcome(
    account: Account, key: str, fingerprint: str, render: Renderer
) -> PlacementResult | None:
    """What an earlier request with this key did, from the cache or else the database."""
    cached = cached_outcome(account, key, fingerprint)
    if cached is not None:
        return cached
    record = (
        IdempotencyRecord.objects.select_related("order", "order__account")
        .filter(account=account, key=key)
        .first()
    )
    if record is None:
        return None
    if record.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    order = record.order
    if record.state == IdempotencyRecord.State.COMPLETED and order is not None:
        status = record.response_status or 200
        body = record.response_body or render(order)
        remember(account, key, fingerprint, str(order.pk), status, body, record.expires_at)
        return PlacementResult(str(order.pk), status, body, replayed=True)
    in_flight_for = settings.ORDER_MANAGEMENT.idempotency.in_flight_lock_seconds
    if order is not None and timezone.now() - record.created_at > timedelta(seconds=in_flight_for):
        # The first request died mid-way (its process crashed). Its order exists and the
        # sweeper verifies it; a retry learns where it stands instead of waiting forever.
        return PlacementResult(str(order.pk), 202, render(order), replayed=True)
    raise RequestInProgress(key, record.order_id)


def remember(
    account: Account,
    key: str,
    fingerprint: str,
    order_id: str,
    status: int,
    body: dict,
    expires_at: datetime,
) -> None:
    """Cache a completed answer until its record expires."""
    ttl = int((expires_at - timezone.now()).total_seconds())
    if ttl > 0:
        idempotency.cache_put(
            account.pk,
            key,
            idempotency.StoredResponse(
                fingerprint=fingerprint, order_id=order_id, status=status, body=body
            ),
            ttl,
        )


def record_complete(record_id: int, *, status: int, body: dict) -> None:
    """Store the answer on the key's record (`completed`), for a retry to replay.

    A statement written once: the ORM compiled this UPDATE afresh for every placement, half
    the cost of storing its response."""
    with connection.cursor() as cursor:
        execute_prepared(
            cursor,
            _COMPLETE_SQL,
            [
                IdempotencyRecord.State.COMPLETED,
                status,
                _RESPONSE_BODY.get_db_prep_save(body, connection),
                record_id,
            ],
        )


_RESPONSE_BODY = IdempotencyRecord._meta.get_field("response_body")
_COMPLETE_SQL = (
    f'UPDATE "{IdempotencyRecord._meta.db_table}" SET "state" = %s, "response_status" = %s, '
    '"response_body" = %s WHERE "id" = %s'
)
