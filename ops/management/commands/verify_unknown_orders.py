"""Sweep orders left `unknown` (a crash, a broker outage) and ask the broker about each.

Safe to run from cron at any frequency: each order is re-read and verified on its own; an order
that someone else resolved meanwhile is skipped; one failure does not stop the sweep.
Exit code 2 with --fail-on-unknown when orders remain unknown, so cron can alert.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from orders.models import Order, OrderStatus
from orders.verification import orders_verify

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Verify orders in state unknown against the broker (found, absent, or still unknown)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Only orders unknown for at least this long",
        )
        parser.add_argument(
            "--limit", type=int, default=500, help="At most this many orders per run"
        )
        parser.add_argument(
            "--fail-on-unknown",
            action="store_true",
            help="Exit with code 2 when orders remain unknown",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        cutoff = timezone.now() - timedelta(seconds=options["older_than"])
        accounts_and_ids = list(
            Order.objects.filter(status=OrderStatus.UNKNOWN, state_entered_at__lte=cutoff)
            .order_by("state_entered_at")
            .values_list("account_id", "pk")[: options["limit"]]
        )
        order_ids = [order_id for _, order_id in accounts_and_ids]
        outcomes: Counter[str] = Counter()
        # One broker search per account answers for all of its unknown orders.
        for account_id in sorted({a for a, _ in accounts_and_ids}):
            ids = [order_id for a, order_id in accounts_and_ids if a == account_id]
            try:
                results = orders_verify(order_ids=ids)
            except Exception:
                logger.exception("verifying the unknown orders of account %s failed", account_id)
                outcomes["error"] += len(ids)
                continue
            outcomes.update(results[order_id].outcome for order_id in ids)
        summary = ", ".join(f"{name} {count}" for name, count in sorted(outcomes.items()))
        self.stdout.write(f"verified {len(order_ids)} unknown order(s): {summary or 'none'}")
        if options["fail_on_unknown"] and Order.objects.filter(status=OrderStatus.UNKNOWN).exists():
            raise SystemExit(2)
