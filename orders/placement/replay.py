"""Answering a retry from what an earlier request with the same Idempotency-Key did (the
cache, else the database)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from accounts.models import Account
from orders import idempotency
from orders.exceptions import (
    IdempotencyKeyReused,
    RequestInProgress,
)
from orders.models import IdempotencyRecord, Order
from orders.placement.results import PlacementResult


def previous_outcome(account: Account, key: str, fingerprint: str) -> PlacementResult | None:
    """What an earlier request with this key did, from the cache or else the database."""
    cached = idempotency.cache_get(account.pk, key)
    if cached is not None:
        if cached.fingerprint != fingerprint:
            raise IdempotencyKeyReused(key)
        order = Order.objects.get(pk=cached.order_id)
        return PlacementResult(order, cached.status, replayed=True, body=cached.body)

    record = (
        IdempotencyRecord.objects.select_related("order").filter(account=account, key=key).first()
    )
    if record is None:
        return None
    if record.request_fingerprint != fingerprint:
        raise IdempotencyKeyReused(key)
    if record.state == IdempotencyRecord.State.COMPLETED and record.order is not None:
        remember(account, key, record)
        return PlacementResult(
            record.order, record.response_status or 200, replayed=True, body=record.response_body
        )
    in_flight_for = settings.ORDER_MANAGEMENT.idempotency.in_flight_lock_seconds
    if record.order is not None and timezone.now() - record.created_at > timedelta(
        seconds=in_flight_for
    ):
        # The first request died mid-way (its process crashed). Its order exists and the
        # sweeper verifies it; a retry learns where it stands instead of waiting forever.
        return PlacementResult(record.order, 202, replayed=True)
    raise RequestInProgress(key, record.order_id)


def remember(account: Account, key: str, record: IdempotencyRecord) -> None:
    ttl = int((record.expires_at - timezone.now()).total_seconds())
    if ttl > 0 and record.order_id is not None and record.response_status is not None:
        idempotency.cache_put(
            account.pk,
            key,
            idempotency.StoredResponse(
                fingerprint=record.request_fingerprint,
                order_id=str(record.order_id),
                status=record.response_status,
                body=record.response_body or {},
            ),
            ttl,
        )
