"""Report orders stuck in a state past its threshold, and position closes whose process died
and flattens (the kill switch) whose process died (their lease expired); with --verify, hand the
orders on and take the closes and flattens over.

The rules are in orders/stuck.py. Safe from cron at any frequency: every order is re-read
before it is acted on, a close is claimed with a conditional UPDATE, and one failure does not
stop the sweep. With --fail-on-stuck the exit code is 2 when stuck orders or closes remain
afterwards, so cron (or a systemd OnFailure=) can alert.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from orders.flatten import stuck_flattens_sweep
from orders.stuck import (
    Handled,
    HandledClose,
    StuckClose,
    StuckReport,
    stuck_closes_find,
    stuck_closes_sweep,
    stuck_orders_sweep,
    stuck_thresholds,
)


class Command(BaseCommand):
    help = (
        "Find orders stuck past lifecycle.stuckAfterSeconds (open and partially filled: the "
        "fill timeout), count them, and with --verify confirm each from the broker or "
        "verification. pending_cancel is never guessed terminal: confirmed, or left and alerted. "
        "Position closes whose lease expired are reported, and with --verify taken over and "
        "finished from the broker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--verify",
            action="store_true",
            help=(
                "Hand each stuck order to verification / the broker's view of it, and take "
                "over each close whose lease expired"
            ),
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
        if report.brackets:
            done = ", ".join(f"{what} {n}" for what, n in sorted(report.brackets.items()))
            self.stdout.write(f"bracket guard: {done}")
        closes, _ = stuck_closes_sweep(
            verify=options["verify"], on_handled=self._print_handled_close
        )
        if not options["verify"]:
            for close in closes:
                self.stdout.write(self._describe_close(close))
        closes_left = (
            len(stuck_closes_find(now=timezone.now())) if options["verify"] else len(closes)
        )
        self.stdout.write(f"found {len(closes)} close(s) with an expired lease; {closes_left} left")
        # Kill-switch runs whose process died (issue 15), like the closes above.
        flatten_lines, flattens_left = stuck_flattens_sweep(verify=options["verify"])
        for line in flatten_lines:
            self.stdout.write(line)
        remaining = {state: n for state, n in report.remaining.items() if n}
        if options["fail_on_stuck"] and (remaining or closes_left or flattens_left):
            # On stderr too: cron mails what a job prints there.
            if remaining:
                listed = ", ".join(f"{state} {n}" for state, n in remaining.items())
                self.stderr.write(f"{sum(remaining.values())} order(s) still stuck: {listed}")
            if closes_left:
                self.stderr.write(f"{closes_left} close(s) still in progress with an expired lease")
            if flattens_left:
                self.stderr.write(
                    f"{flattens_left} flatten(s) still in progress with an expired lease"
                )
            raise SystemExit(2)

    def _describe_close(self, stuck: StuckClose) -> str:
        return (
            f"close {stuck.close_id} of {stuck.contract_id} on account {stuck.account}: "
            f"in_progress at step {stuck.step}, lease expired {stuck.expired_for:.0f} s ago "
            f"(owner {stuck.owner or 'none'})"
        )

    def _print_handled_close(self, handled: HandledClose) -> None:
        self.stdout.write(
            f"{self._describe_close(handled.stuck)}: {handled.resolution}, now "
            f"{handled.state_after}" + (f" ({handled.detail})" if handled.detail else "")
        )

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
