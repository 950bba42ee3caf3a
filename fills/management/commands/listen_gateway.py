"""Listen to the broker's user hub and apply every event (fills, orders, positions, accounts).

Runs until SIGTERM or SIGINT, then closes the hub connection and exits cleanly. After every
(re)connect it catches up through REST; a stale-feed watchdog forces a reconnect when neither
events nor pings arrive. Several may run at once: one leads each account (PostgreSQL advisory
lock), the others stand by.

A failing part never ends or silently cripples the process: each long-running task (applier,
leadership, sweeper, heartbeat, catch-up) is restarted with backoff after logging the traceback
and counting `listener_task_restarts_total{task}`; a database outage is ridden out, the failed
batch applied again and a REST catch-up run once PostgreSQL answers (see fills/listener.py).
The heartbeat says whether events are being applied, which /readyz reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.gateway import gateway_config_from_settings
from common.runtime import settle_garbage_collector
from fills.listener import GatewayListener

logger = logging.getLogger(__name__)

GIL_SWITCH_INTERVAL_SECONDS = 0.0005


class Command(BaseCommand):
    help = "Apply the broker's user-hub events to orders, fills and positions."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--account",
            dest="accounts",
            type=int,
            action="append",
            help="Only these broker account ids (default: every active one)",
        )
        parser.add_argument(
            "--sweep-interval",
            type=float,
            default=2.0,
            help="Seconds between sweeps (timeouts, orphans, missing fills)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        # The event loop (the hub's frames) and the database thread share the GIL. At the
        # default 5 ms switch interval the database thread, which lets the GIL go at every
        # statement, waited up to 5 ms to get it back while the loop parsed frames: about ten
        # statements a batch made a batch of 40 events take four times as long as alone.
        # 0.5 ms: at 1,000 fills/s, event -> commit p50 30 ms -> 19 ms (bench/fill_throughput.py).
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_SECONDS)
        listener = GatewayListener(
            gateway_config_from_settings(),
            account_ids=options["accounts"],
            sweep_interval=options["sweep_interval"],
        )
        settle_garbage_collector()
        asyncio.run(self._run(listener))
        self.stdout.write(f"listener {listener.name} stopped: {dict(listener.stats.outcomes)}")

    async def _run(self, listener: GatewayListener) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signal_number, stop.set)
        logger.info("listener %s starting", listener.name)
        await listener.run(stop)
