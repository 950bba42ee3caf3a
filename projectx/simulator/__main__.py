"""`python -m projectx.simulator [--host 127.0.0.1] [--port 8800] [--price-walk]`: a demo-seeded
simulator. Prices stand still unless `--price-walk` (or `POST /_sim/market/walk`) starts them."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from projectx.simulator.demo import (
    DEMO_ACCOUNT_ID,
    DEMO_ACCOUNT_NAME,
    DEMO_API_KEY,
    DEMO_CONTRACTS,
    DEMO_SECOND_ACCOUNT_ID,
    DEMO_USERNAME,
)
from projectx.simulator.market.feed import DEFAULT_HISTORY_DAYS, DEFAULT_WALK_INTERVAL
from projectx.simulator.market_hub import DEFAULT_MAX_QUOTES_PER_SECOND
from projectx.simulator.server import GatewaySimulator


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m projectx.simulator",
        description="Run the ProjectX Gateway simulator (REST, SignalR user and market hubs).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800, help="0 picks a free port")
    parser.add_argument("--ping-interval", type=float, default=15.0, help="hub ping, seconds")
    parser.add_argument(
        "--client-timeout", type=float, default=30.0, help="close a silent hub client, seconds"
    )
    parser.add_argument(
        "--token-lifetime", type=float, default=24 * 3600.0, help="token lifetime, seconds"
    )
    parser.add_argument(
        "--price-walk", action="store_true", help="move prices by a seeded random walk"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the walk and the history")
    parser.add_argument(
        "--walk-interval", type=float, default=DEFAULT_WALK_INTERVAL, help="seconds a walk step"
    )
    parser.add_argument(
        "--history-days", type=float, default=DEFAULT_HISTORY_DAYS, help="days of bars history"
    )
    parser.add_argument(
        "--quotes-per-second",
        type=float,
        default=DEFAULT_MAX_QUOTES_PER_SECOND,
        help="most quotes a contract sends per second",
    )
    return parser.parse_args(argv)


async def serve(arguments: argparse.Namespace) -> None:
    simulator = GatewaySimulator.with_demo_data(
        arguments.host,
        arguments.port,
        ping_interval=arguments.ping_interval,
        client_timeout=arguments.client_timeout,
        token_lifetime=arguments.token_lifetime,
        seed=arguments.seed,
        price_walk=arguments.price_walk,
        walk_interval=arguments.walk_interval,
        history_days=arguments.history_days,
        max_quotes_per_second=arguments.quotes_per_second,
    )
    await simulator.start_async()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signal_number, stop.set)
    walk = f"every {arguments.walk_interval:g} s" if arguments.price_walk else "off"
    contracts = ", ".join(f"{c.id} @ {c.price}" for c in DEMO_CONTRACTS)
    print(
        "ProjectX Gateway simulator\n"
        f"  REST      {simulator.api_url}  (e.g. POST {simulator.api_url}/Auth/loginKey)\n"
        f"  User hub  {simulator.user_hub_url}\n"
        f"  Market    {simulator.market_hub_url}  (walk {walk})\n"
        f"  Controls  {simulator.base_url}/_sim/state\n"
        f"  Username  {DEMO_USERNAME}\n"
        f"  API key   {DEMO_API_KEY}\n"
        f"  Accounts  {DEMO_ACCOUNT_ID} ({DEMO_ACCOUNT_NAME}), {DEMO_SECOND_ACCOUNT_ID}\n"
        f"  Contracts {contracts}\n"
        "Ctrl-C stops.",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await simulator.stop_async()


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(arguments))
    return 0


if __name__ == "__main__":
    sys.exit(main())
