"""Idempotency keys: the same order is never sent to the broker twice.

Rules (after the IETF Idempotency-Key draft and Stripe):

* The key is the client's `Idempotency-Key` header (1-255 printable ASCII characters), or, when
  the header is absent, a SHA-256 derived from the canonical order (account, contract, side,
  type, size, prices) and the current time bucket (`derivedKeyBucketSeconds`, 60 s by default):
  an identical order re-sent within the same bucket is treated as a retry.
* The same key with the same payload returns the stored response of the first request; with a
  different payload it is refused (422); while the first request is still being processed,
  a second one gets 409.
* The `IdempotencyRecord` table's unique (account, key) constraint is the guard. The cache in
  front of it (local memory, or Redis when `REDIS_URL` is set) only saves a query for replays;
  when the cache fails, the database answers, so a cache outage never lets a duplicate through.
* The key travels to the broker as `customTag` in a short stable form (`custom_tag_for`): the
  broker refuses a second order with the same tag on an account (a second line of defence), and
  verification searches by it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.core.cache import cache
from django.db import transaction

from common import metrics
from orders.models import IdempotencyRecord

logger = logging.getLogger(__name__)

MAX_KEY_LENGTH = 255
CUSTOM_TAG_PREFIX = "om-"
# 29 hex digits (116 bits) keep the tag at 32 characters: the broker's limit on customTag is
# unconfirmed, and short tags are the safe side of it.
CUSTOM_TAG_DIGEST_LENGTH = 29

INVALID_KEY_MESSAGE = "Idempotency-Key must be 1 to 255 printable ASCII characters"


class InvalidIdempotencyKey(ValueError):
    pass


@dataclass(frozen=True)
class OrderPayload:
    """The fields that define an order for idempotency: what the bot asked for."""

    account_broker_id: int
    contract_id: str
    side: str
    type: str
    size: int
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    trail_price: Decimal | None = None
    stop_loss_ticks: int | None = None
    take_profit_ticks: int | None = None

    def canonical(self) -> str:
        def price(value: Decimal | None) -> str | None:
            # 21000.50 and 21000.5 are the same price: normalise before hashing.
            return None if value is None else format(value.normalize(), "f")

        # Brackets join the canonical form only when asked for, so an order without them keeps
        # the fingerprint (and derived key) it had before brackets existed.
        brackets = {
            name: getattr(self, name)
            for name in ("stop_loss_ticks", "take_profit_ticks")
            if getattr(self, name) is not None
        }
        return json.dumps(
            {
                **brackets,
                "account": self.account_broker_id,
                "contract_id": self.contract_id,
                "side": self.side,
                "type": self.type,
                "size": self.size,
                "limit_price": price(self.limit_price),
                "stop_price": price(self.stop_price),
                "trail_price": price(self.trail_price),
            },
            sort_keys=True,
            separators=(",", ":"),
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def validate_client_key(raw: str) -> str:
    if not 1 <= len(raw) <= MAX_KEY_LENGTH or any(not 0x20 <= ord(ch) <= 0x7E for ch in raw):
        raise InvalidIdempotencyKey(INVALID_KEY_MESSAGE)
    return raw


def derived_key(payload: OrderPayload, *, now: datetime, bucket_seconds: int) -> str:
    bucket = int(now.timestamp()) // bucket_seconds
    material = f"{payload.canonical()}|bucket={bucket_seconds}:{bucket}"
    return hashlib.sha256(material.encode()).hexdigest()


def custom_tag_for(*, account_broker_id: int, key: str) -> str:
    digest = hashlib.sha256(f"{account_broker_id}:{key}".encode()).hexdigest()
    return CUSTOM_TAG_PREFIX + digest[:CUSTOM_TAG_DIGEST_LENGTH]


# --- The cache in front of the records ----------------------------------------------------


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    order_id: str
    status: int
    body: dict[str, Any]


def _cache_key(account_id: int, key: str) -> str:
    # Client keys may hold spaces and other characters some cache backends refuse.
    return f"idempotency:{account_id}:{hashlib.sha256(key.encode()).hexdigest()}"


def cache_get(account_id: int, key: str) -> StoredResponse | None:
    try:
        value = cache.get(_cache_key(account_id, key))
    except Exception:  # a cache outage must fall back to the database, never fail the request
        logger.warning("idempotency cache unavailable on read; using the database", exc_info=True)
        metrics.idempotency_cache_misses.inc()
        return None
    if not isinstance(value, dict):
        metrics.idempotency_cache_misses.inc()
        return None
    metrics.idempotency_cache_hits.inc()
    return StoredResponse(**value)


def cache_put(account_id: int, key: str, stored: StoredResponse, ttl_seconds: int) -> None:
    try:
        cache.set(_cache_key(account_id, key), stored.__dict__, timeout=ttl_seconds)
    except Exception:
        logger.warning(
            "idempotency cache unavailable on write; the database holds the record", exc_info=True
        )


# --- Expiry ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CleanupReport:
    deleted: int
    still_live: int


def idempotency_records_delete_expired(
    *, now: datetime, batch_size: int, dry_run: bool = False
) -> CleanupReport:
    """Delete the records (and so the stored responses) whose key expired before `now`.

    Oldest first, `batch_size` per transaction, so a large backlog never holds one long
    transaction. A retry after its key expired is a new request; the order it placed stays
    (archive_orders moves it later). The cache entries expire on their own at the same time.
    """
    expired = IdempotencyRecord.objects.filter(expires_at__lt=now)
    still_live = IdempotencyRecord.objects.filter(expires_at__gte=now).count()
    if dry_run:
        return CleanupReport(deleted=expired.count(), still_live=still_live)
    deleted = 0
    while True:
        with transaction.atomic():
            batch = list(
                expired.order_by("expires_at", "id").values_list("id", flat=True)[:batch_size]
            )
            if not batch:
                break
            deleted += IdempotencyRecord.objects.filter(pk__in=batch).delete()[0]
    return CleanupReport(deleted=deleted, still_live=still_live)
