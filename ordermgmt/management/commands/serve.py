"""Run the whole system in one process: the web app on uvicorn, the user-hub listener and, on
the embedded default, the ProjectX simulator beside them.

One process matters on the embedded default: without Redis the channel layer is in memory, so
the listener's broadcasts reach the desk only when the listener runs in the web server's
process (and on its event loop). With REDIS_URL the parts can run apart (see the Procfile);
`--no-listener` leaves the listener and the market-data task (last prices into the cache, for
positions' unrealized P&L) to processes of their own. With PROJECTX_* set it talks to the
real broker and starts no simulator. It mirrors the broker's accounts, makes sure a demo bot
token exists for the embedded default, and prints how to log in and place an order.
`--price-walk` moves the simulator's prices by its seeded random walk (`make run` and
`make demo` pass it; tests leave prices still). `--demo` also starts a small bot that trades.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
from dataclasses import replace
from typing import Any

import uvicorn
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token

from accounts.gateway import (
    SIMULATOR_DEFAULTS,
    configure_gateway,
    gateway_config_from_settings,
    get_gateway,
)
from accounts.models import Account
from accounts.services import account_grant, account_sync_from_broker
from projectx.errors import GatewayError

DEMO_BOT = "demo-bot"


def _use_the_desks_in_process_layer() -> None:
    """Without Redis, the desk's in-memory layer in place of Channels' stock one: the same
    behaviour, with a fan-out that does not walk every channel once per socket (desk/layers.py;
    at 200 desks that walk was a fifth of the event loop's time during fills)."""
    from channels.layers import DEFAULT_CHANNEL_LAYER, InMemoryChannelLayer, channel_layers

    from desk.layers import DeskChannelLayer

    config = settings.CHANNEL_LAYERS.get(DEFAULT_CHANNEL_LAYER, {})
    if type(channel_layers[DEFAULT_CHANNEL_LAYER]) is InMemoryChannelLayer:
        channel_layers.set(DEFAULT_CHANNEL_LAYER, DeskChannelLayer(**config.get("CONFIG", {})))


def _spare_the_loop_full_garbage_collections() -> None:
    """Move everything alive at start-up (Django, the apps, the simulator's data) out of the
    collector's sight. A full (generation 2) collection walks every tracked object, and in this
    process it ran on the event loop for 95-150 ms once in about twenty fills at 200 desks: the
    worst fills of bench/desk_latency.py were those. What start-up built lives as long as the
    process, so the collector has nothing to find there; objects made later (sockets, requests)
    are collected as before."""
    gc.collect()
    gc.freeze()


# How long an idle keep-alive connection stays open: longer than a client's own idle limit
# (httpx 5 s, aiohttp 15 s), so the client closes it first. At uvicorn's 5 s a client that
# reused a connection near the limit met the server's close, and its request was reset (the
# placement bench's clients: 3 resets in 12 paced runs, none in 24 with their limit below the
# server's; docs/decisions/0014). The Procfile and the systemd unit say the same.
KEEP_ALIVE_SECONDS = 75


class Command(BaseCommand):
    help = "Serve the app (uvicorn) and, without PROJECTX_* settings, the broker simulator."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulator-port", type=int, default=8800, help="0: a free port")
        parser.add_argument(
            "--no-listener",
            action="store_true",
            help="Do not run the user-hub listener and the market-data task in this process",
        )
        parser.add_argument(
            "--price-walk",
            action="store_true",
            help="Move the simulator's prices by a random walk (simulator only)",
        )
        parser.add_argument(
            "--demo", action="store_true", help="Also run a demo bot (simulator only)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        simulator = None
        if settings.PROJECTX_USE_SIMULATOR:
            from projectx.simulator import GatewaySimulator

            simulator = GatewaySimulator.with_demo_data(
                "127.0.0.1", options["simulator_port"], price_walk=options["price_walk"]
            ).start()
            configure_gateway(
                replace(
                    gateway_config_from_settings(),
                    api_url=simulator.base_url,
                    user_hub_url=simulator.user_hub_url,
                    market_hub_url=simulator.market_hub_url,
                )
            )
        try:
            accounts = account_sync_from_broker()
        except GatewayError as exc:
            raise CommandError(f"cannot reach the broker: {exc}") from exc

        url = f"http://{options['host']}:{options['port']}"
        call_command("ensure_demo_admin", url=url, stdout=self.stdout)
        self.stdout.write(f"  desk:     {url}/desk/")
        token = None
        if simulator is not None:
            token = self._print_demo_bot(url, accounts)
            user = SIMULATOR_DEFAULTS["username"]
            walk = "prices walk" if options["price_walk"] else "prices still"
            self.stdout.write(f"  simulator: {simulator.base_url} (user {user}, {walk})")
        self.stdout.flush()
        demo = None
        if options["demo"] and simulator is not None and token and accounts:
            from ordermgmt.demo import DemoBot

            demo = DemoBot(
                api_url=url, token=token, account=accounts[0].broker_account_id, simulator=simulator
            ).start()
            self.stdout.write(
                f"  demo bot: trading on account {accounts[0].broker_account_id}; watch the desk"
            )
        _use_the_desks_in_process_layer()
        _spare_the_loop_full_garbage_collections()
        try:
            asyncio.run(self._serve(options, run_listener=not options["no_listener"]))
        finally:
            if demo is not None:
                demo.stop.set()
            configure_gateway(None)
            if simulator is not None:
                simulator.stop()

    async def _serve(self, options: dict[str, Any], *, run_listener: bool) -> None:
        """uvicorn, the listener and the market-data task on one event loop; uvicorn owns the
        signals."""
        server = uvicorn.Server(
            uvicorn.Config(
                "ordermgmt.asgi:application",
                host=options["host"],
                port=options["port"],
                log_level="info",
                lifespan="off",
                # The desk's frames are small JSON sent to every open desk: compressing each one
                # once per socket cost more than it saved (bench/desk_latency.py, 200 desks:
                # fill -> websocket p99 about 310 ms with permessage-deflate, 70-210 ms without
                # on a shared two-core machine).
                ws_per_message_deflate=False,
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
            )
        )
        if not run_listener:
            await server.serve()
            return
        from fills.listener import GatewayListener
        from marketdata.feed import MarketDataFeed

        stop = asyncio.Event()
        listener = GatewayListener(get_gateway().config, sweep_interval=1.0)
        listening = asyncio.create_task(listener.run(stop), name="listener")
        market_data = MarketDataFeed(get_gateway().config, poll_interval=1.0)
        quoting = asyncio.create_task(market_data.run(stop), name="market-data")
        try:
            await server.serve()
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.gather(listening, quoting), timeout=10)

    def _print_demo_bot(self, url: str, accounts: list[Account]) -> str:
        bot, _ = User.objects.get_or_create(username=DEMO_BOT)
        account_grant(user=bot, broker_account_ids=[a.broker_account_id for a in accounts])
        token, _ = Token.objects.get_or_create(user=bot)
        body = {
            "account": accounts[0].broker_account_id,
            "contract_id": "CON.F.US.MNQ.Z26",
            "side": "buy",
            "type": "limit",
            "size": 1,
            "limit_price": "20950.00",
        }
        self.stdout.write(f"  bot token: {token.key}")
        self.stdout.write("  place an order:")
        self.stdout.write(
            f"    curl -s -X POST {url}/api/v1/orders/ -H 'Authorization: Token {token.key}' "
            f"-H 'Content-Type: application/json' -H 'Idempotency-Key: first-order' "
            f"-d '{json.dumps(body)}'"
        )
        self.stdout.write(f"  API docs:  {url}/api/docs/")
        return token.key
