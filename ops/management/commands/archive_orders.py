"""Move old terminal orders to the archive tables; delete archived orders past retention.

The rules (also in `help`): see orders/archival.py. Safe from cron at any frequency and safe to
interrupt: each batch is one transaction, so a batch is moved whole or not at all, and the next
run continues where this one stopped. SIGINT/SIGTERM stop after the current batch; a second
signal stops at once (the batch in flight is rolled back). Exit code 1 when a batch failed.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from common.progress import ProgressBar
from ops.archival import ArchiveReport, BatchDone, orders_archive


class Command(BaseCommand):
    help = (
        "Move terminal orders unchanged for lifecycle.archive.hotRetentionDays, with their "
        "fills and transitions, to the archive tables, in batches of batchSize, oldest first, "
        "one transaction per batch; an order whose idempotency key has not expired stays. "
        "Then delete archived orders unchanged for deleteRetentionDays."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Count what would move; change nothing"
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="Orders per transaction (default: lifecycle.archive.batchSize)",
        )
        parser.add_argument(
            "--sleep",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Pause between batches, to spare a busy database",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        self._stop_requested = False
        previous_handlers = self._install_signal_handlers()
        self._bar: ProgressBar | None = None
        self._verbose = options["verbosity"] >= 2
        try:
            report = orders_archive(
                batch_size=batch_size,
                dry_run=options["dry_run"],
                should_stop=lambda: self._stop_requested,
                on_start=self._phase_started,
                on_batch=self._batch_done,
                pause_seconds=options["sleep"],
            )
        except KeyboardInterrupt:
            self.stderr.write("stopped at once: the batch in flight was rolled back")
            raise SystemExit(130) from None
        finally:
            if self._bar is not None:
                self._bar.finish()
            for signal_number, handler in previous_handlers.items():
                signal.signal(signal_number, handler)
        self.stdout.write(self._summary(report))
        for failure in report.failures:
            self.stderr.write(failure)
        if report.failed_batches:
            raise CommandError(f"{report.failed_batches} batch(es) failed; run again to retry")

    # --- Signals: the first one stops after the current batch, a second one at once. -------

    def _install_signal_handlers(self) -> dict[int, Any]:
        """Returns the handlers replaced, to restore (call_command runs in other programs)."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # only the main thread may handle signals
        return {
            signal_number: signal.signal(signal_number, self._request_stop)
            for signal_number in (signal.SIGINT, signal.SIGTERM)
        }

    def _request_stop(self, signal_number: int, frame: FrameType | None) -> None:
        if self._stop_requested:
            raise KeyboardInterrupt  # the batch in flight rolls back with its transaction
        self._stop_requested = True
        self.stderr.write("stopping after the current batch (signal again to stop now)")

    # --- Progress ------------------------------------------------------------------------

    def _phase_started(self, phase: str, total: int) -> None:
        if self._bar is not None:
            self._bar.finish()
        label = "archiving" if phase == "archive" else "deleting"
        self._bar = ProgressBar(self.stdout, label=label, total=total)

    def _batch_done(self, batch: BatchDone) -> None:
        if self._bar is not None:
            self._bar.advance_to(batch.done)
        if self._verbose and not self.stdout.isatty():
            self.stdout.write(f"{batch.phase}: {batch.done}/{batch.total} orders")

    # --- Summary -------------------------------------------------------------------------

    def _summary(self, report: ArchiveReport) -> str:
        config = settings.ORDER_MANAGEMENT.lifecycle.archive
        verb = "would archive" if report.dry_run else "archived"
        lines = [
            f"{verb} {report.orders_archived} order(s) older than {config.hot_retention_days} "
            f"day(s), with {report.transitions_archived} transition(s) and "
            f"{report.fills_archived} fill(s)",
        ]
        if report.dry_run:
            lines.append(
                f"would delete {report.orders_deleted} archived order(s) older than "
                f"{config.delete_retention_days} day(s)"
            )
        else:
            lines.append(
                f"deleted {report.orders_deleted} archived order(s) older than "
                f"{config.delete_retention_days} day(s), with {report.transitions_deleted} "
                f"transition(s) and {report.fills_deleted} fill(s)"
            )
            lines.append(
                f"removed {report.idempotency_records_deleted} expired idempotency record(s) "
                f"of archived orders"
            )
        lines.append(
            f"kept {report.held_back_by_live_key} order(s) whose idempotency key is still live"
        )
        if not report.dry_run:
            lines.append(
                f"{report.batches} batch(es), {report.failed_batches} failed, "
                f"{report.seconds:.1f} s"
            )
        if report.interrupted:
            lines.append("interrupted: stopped after a whole batch; run again to continue")
        return "\n".join(lines)
