"""Report orders stuck in a state past its threshold; with --verify, hand them on.

The rules are in orders/stuck.py. Safe from cron at any frequency: every order is re-read
before it is acted on, and one failure does not stop the sweep. With --fail-on-stuck the exit
code is 2 when stuck orders remain afterwards, so cron (or a systemd OnFailure=) can alert.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from orders.stuck import Handled, StuckReport, stuck_orders_sweep, stuck_thresholds


class Command(BaseCommand):
    help = (
        "Find orders stuck past lifecycle.stuckAfterSeconds (open and partially filled: the "
        "fill timeout), count them, and with --verify confirm each from the broker or "
        "verification. pending_cancel is never guessed terminal: confirmed, or left and alerted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--verify",
            action="store_true",
            help="Hand each stuck order to verification / the broker's view of it",
        )
        parser.add_argument(
            "--max-per-minute",
            type=int,
            default=None,
            metavar="READS",
            help="Broker reads per minute (default: lifecycle.stuckDetection.brokerReadsPerMinute)",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            help="At most this many orders (default: lifecycle.stuckDetection.maxOrdersPerRun)",
        )
        parser.add_argument(
            "--fail-on-stuck",
            action="store_true",
            help="Exit with code 2 when stuck orders remain",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("max_per_minute", "limit"):
            if options[name] is not None and options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1")
        report = stuck_orders_sweep(
            verify=options["verify"],
            limit=options["limit"],
            reads_per_minute=options["max_per_minute"],
            on_handled=self._print_handled,
        )
        if not options["verify"]:
            for stuck in report.found:
                self.stdout.write(
                    f"{stuck.order_id} {stuck.state} for {stuck.stuck_for:.0f} s "
                    f"(threshold {stuck.threshold:g} s)"
                )
        self.stdout.write(self._summary(report))
        remaining = {state: n for state, n in report.remaining.items() if n}
        if options["fail_on_stuck"] and remaining:
            # On stderr too: cron mails what a job prints there.
            listed = ", ".join(f"{state} {n}" for state, n in remaining.items())
            self.stderr.write(f"{sum(remaining.values())} order(s) still stuck: {listed}")
            raise SystemExit(2)

    def _print_handled(self, handled: Handled) -> None:
        stuck = handled.stuck
        self.stdout.write(
            f"{stuck.order_id} {stuck.state} for {stuck.stuck_for:.0f} s "
            f"(threshold {stuck.threshold:g} s): {handled.resolution}, now "
            f"{handled.state_after}" + (f" ({handled.detail})" if handled.detail else "")
        )

    def _summary(self, report: StuckReport) -> str:
        found = report.found_by_state
        by_state = ", ".join(
            f"{state} {found[state]}" for state in stuck_thresholds() if found[state]
        )
        line = f"found {len(report.found)} stuck order(s)" + (f": {by_state}" if by_state else "")
        if report.handled:
            resolutions: dict[str, int] = {}
            for handled in report.handled:
                resolutions[handled.resolution] = resolutions.get(handled.resolution, 0) + 1
            line += "; " + ", ".join(f"{name} {count}" for name, count in resolutions.items())
        remaining = sum(report.remaining.values())
        return f"{line}; {remaining} still stuck"
