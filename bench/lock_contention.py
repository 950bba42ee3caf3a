"""Lock contention: placement throughput with every client on one account (one FIFO queue,
one account row lock) versus the same load spread over 20 accounts. Through the API, against
the simulator, on PostgreSQL; prints orders per second and p50/p99 latency for both.

    .venv/bin/python bench/lock_contention.py [--orders 500] [--clients 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import bot_token, percentile, running_system, scratch_database
from place_orders import run

ACCOUNTS = [3001 + n for n in range(20)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    results = []
    with (
        scratch_database("ordermgmt_bench_locks") as database,
        running_system(database, workers=args.workers) as (app_url, sim_url, env),
    ):
        for account in ACCOUNTS:
            httpx.post(
                f"{sim_url}/_sim/accounts",
                json={"id": account, "name": f"PRAC-{account}", "balance": 50000},
                timeout=10,
            ).raise_for_status()
        token = bot_token(env, "bench-bot", ACCOUNTS)
        for label, accounts in (("one account", ACCOUNTS[:1]), ("20 accounts", ACCOUNTS)):
            started = time.perf_counter()
            samples = run(
                app_url,
                token,
                list(range(args.orders)),
                args.clients,
                accounts,
                key_prefix=label.replace(" ", "-"),
            )
            elapsed = time.perf_counter() - started
            results.append(
                (
                    label,
                    args.orders / elapsed,
                    percentile([s.latency for s in samples], 0.5),
                    percentile([s.latency for s in samples], 0.99),
                    dict(Counter(s.status for s in samples)),
                )
            )

    print(
        f"{args.orders} orders per run from {args.clients} clients, {args.workers} uvicorn "
        "workers, PostgreSQL, simulator"
    )
    print(f"{'spread':<12} {'orders/s':>9} {'p50 ms':>9} {'p99 ms':>9}  responses")
    for label, rate, p50, p99, responses in results:
        print(f"{label:<12} {rate:>9.1f} {p50 * 1000:>9.1f} {p99 * 1000:>9.1f}  {responses}")


if __name__ == "__main__":
    main()
