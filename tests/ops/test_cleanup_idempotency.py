"""manage.py cleanup_idempotency: expired stored responses go, live ones stay."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from orders.models import IdempotencyRecord, Order
from tests.factories import make_account, make_order

pytestmark = pytest.mark.django_db


def record(account, key: str, *, expires_in: timedelta) -> IdempotencyRecord:
    return IdempotencyRecord.objects.create(
        account=account,
        key=key,
        request_fingerprint="0" * 64,
        state=IdempotencyRecord.State.COMPLETED,
        order=make_order(account, idempotency_key=key),
        response_status=201,
        response_body={},
        expires_at=timezone.now() + expires_in,
    )


def cleanup(*args: str) -> str:
    out = StringIO()
    call_command("cleanup_idempotency", *args, stdout=out)
    return out.getvalue()


def test_it_deletes_expired_records_and_keeps_live_ones(tune) -> None:
    account = make_account()
    for n in range(3):
        record(account, f"old-{n}", expires_in=timedelta(minutes=-1 - n))
    live = record(account, "live", expires_in=timedelta(minutes=5))

    tune("lifecycle.archive", batch_size=2)  # the three expired records take two batches
    output = cleanup()

    # should delete exactly the expired records, across batches
    assert list(IdempotencyRecord.objects.values_list("pk", flat=True)) == [live.pk]
    # should leave the orders alone (archival moves them later)
    assert Order.objects.count() == 4
    # should report plain counts
    assert output.strip() == "deleted 3 expired idempotency record(s); 1 still live"
    # should find nothing more on a second run
    assert cleanup().startswith("deleted 0 ")


def test_a_dry_run_only_counts() -> None:
    account = make_account()
    record(account, "old", expires_in=timedelta(seconds=-1))
    output = cleanup("--dry-run")
    # should change nothing and say what it would delete
    assert IdempotencyRecord.objects.count() == 1
    assert output.strip() == "would delete 1 expired idempotency record(s); 0 still live"
