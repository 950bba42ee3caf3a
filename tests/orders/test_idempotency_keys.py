"""Idempotency keys: validation, derivation and the broker tag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from orders.idempotency import (
    InvalidIdempotencyKey,
    OrderPayload,
    custom_tag_for,
    derived_key,
    validate_client_key,
)

PAYLOAD = OrderPayload(
    account_broker_id=1001,
    contract_id="CON.F.US.MNQ.Z26",
    side="buy",
    type="limit",
    size=2,
    limit_price=Decimal("21000.50"),
)


@pytest.mark.parametrize("key", ["a", "x" * 255, "order 17 / retry ~ ok!"])
def test_it_accepts_printable_ascii_keys_up_to_255(key: str) -> None:
    # should take the client's key as it is
    assert validate_client_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "naïve", "line\nbreak"])
def test_it_refuses_other_keys(key: str) -> None:
    # should refuse empty, too long and non-printable or non-ASCII keys
    with pytest.raises(InvalidIdempotencyKey):
        validate_client_key(key)


def test_an_identical_order_in_the_same_bucket_derives_the_same_key() -> None:
    start = datetime(2026, 11, 24, 10, 0, 5, tzinfo=UTC)
    same_price_written_differently = OrderPayload(
        **{**PAYLOAD.__dict__, "limit_price": Decimal("21000.5")}
    )
    # should treat a re-send within the bucket as a retry, however the price is written
    assert derived_key(PAYLOAD, now=start, bucket_seconds=60) == derived_key(
        same_price_written_differently, now=start + timedelta(seconds=50), bucket_seconds=60
    )
    # should treat the same order in the next bucket as a new order
    assert derived_key(PAYLOAD, now=start, bucket_seconds=60) != derived_key(
        PAYLOAD, now=start + timedelta(seconds=60), bucket_seconds=60
    )


def test_a_different_order_derives_a_different_key() -> None:
    now = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    bigger = OrderPayload(**{**PAYLOAD.__dict__, "size": 3})
    # should never merge two different orders into one key
    assert derived_key(PAYLOAD, now=now, bucket_seconds=60) != derived_key(
        bigger, now=now, bucket_seconds=60
    )
    assert PAYLOAD.fingerprint() != bigger.fingerprint()


def test_the_broker_tag_is_short_stable_and_per_account() -> None:
    tag = custom_tag_for(account_broker_id=1001, key="k1")
    # should be stable, short, and differ between accounts and keys
    assert tag == custom_tag_for(account_broker_id=1001, key="k1")
    assert len(tag) == 32
    assert tag != custom_tag_for(account_broker_id=1002, key="k1")
    assert tag != custom_tag_for(account_broker_id=1001, key="k2")
