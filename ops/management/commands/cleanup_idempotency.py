"""Delete idempotency records whose key has expired (their stored responses go with them).

Safe from cron at any frequency: it deletes only what expired, in batches of
`lifecycle.archive.batchSize`, one transaction each; running twice deletes nothing more.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from orders.idempotency import idempotency_records_delete_expired


class Command(BaseCommand):
    help = (
        "Delete idempotency records (stored responses) whose key expired "
        "(idempotency.keyTtlSeconds after the request), oldest first, in batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would go; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = idempotency_records_delete_expired(
            now=timezone.now(),
            batch_size=settings.ORDER_MANAGEMENT.lifecycle.archive.batch_size,
            dry_run=options["dry_run"],
        )
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{verb} {report.deleted} expired idempotency record(s); {report.still_live} still live"
        )
