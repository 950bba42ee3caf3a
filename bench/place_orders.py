"""Place 1000 orders from 50 concurrent clients through the API, against the simulator, on
PostgreSQL; then retry a share of them with the same keys. Prints orders per second, p50/p99
latency and the number of duplicate orders at the broker (must be 0).

    .venv/bin/python bench/place_orders.py [--orders 1000] [--clients 50] [--workers 2]
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import bot_token, broker_orders, percentile, running_system, scratch_database

ACCOUNT = 1001
CONTRACT = "CON.F.US.MNQ.Z26"


def order_body(index: int, account: int = ACCOUNT) -> dict:
    # Resting limit buys below the market (21000), one tick apart: every order is distinct.
    price = Decimal("20000.00") - Decimal("0.25") * (index % 2000)
    return {
        "account": account,
        "contract_id": CONTRACT,
        "side": "buy",
        "type": "limit",
        "size": 1 + index % 3,
        "limit_price": str(price),
    }


def run(
    app_url: str,
    token: str,
    jobs: list[int],
    clients: int,
    accounts: list[int] | None = None,
    key_prefix: str = "bench",
) -> tuple[list[float], Counter]:
    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    local = threading.local()

    def send(index: int) -> None:
        if not hasattr(local, "http"):
            local.http = httpx.Client(
                base_url=app_url, timeout=60, headers={"Authorization": f"Token {token}"}
            )
        started = time.perf_counter()
        account = accounts[index % len(accounts)] if accounts else ACCOUNT
        response = local.http.post(
            "/api/v1/orders/",
            json=order_body(index, account),
            headers={"Idempotency-Key": f"{key_prefix}-{index}"},
        )
        elapsed = time.perf_counter() - started
        replayed = response.headers.get("Idempotent-Replayed") == "true"
        with lock:
            latencies.append(elapsed)
            statuses[f"{response.status_code}{' replayed' if replayed else ''}"] += 1

    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, jobs))
    return latencies, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--retries", type=int, default=200, help="re-sends of earlier keys")
    args = parser.parse_args()

    with (
        scratch_database("ordermgmt_bench_place") as database,
        running_system(database, workers=args.workers) as (app_url, sim_url, env),
    ):
        token = bot_token(env, "bench-bot", [ACCOUNT])
        started = time.perf_counter()
        latencies, statuses = run(app_url, token, list(range(args.orders)), args.clients)
        elapsed = time.perf_counter() - started

        retry_jobs = random.Random(7).sample(range(args.orders), min(args.retries, args.orders))
        retry_latencies, retry_statuses = run(app_url, token, retry_jobs, args.clients)

        held = broker_orders(sim_url, ACCOUNT)
        tags = Counter(order.get("customTag") for order in held)
        duplicates = sum(count - 1 for count in tags.values() if count > 1)

    print(
        f"placed {args.orders} orders from {args.clients} clients through "
        f"{args.workers} uvicorn workers on PostgreSQL, against the simulator"
    )
    print(f"  throughput      {args.orders / elapsed:8.1f} orders/s  ({elapsed:.2f} s)")
    print(f"  latency p50     {percentile(latencies, 0.50) * 1000:8.1f} ms")
    print(f"  latency p99     {percentile(latencies, 0.99) * 1000:8.1f} ms")
    print(f"  responses       {dict(statuses)}")
    print(
        f"  retries         {len(retry_jobs)} re-sent keys -> {dict(retry_statuses)}, "
        f"p50 {percentile(retry_latencies, 0.5) * 1000:.1f} ms"
    )
    print(f"  broker holds    {len(held)} orders, {len(tags)} distinct customTags")
    print(f"  duplicates      {duplicates}  (must be 0)")
    if duplicates or len(held) != args.orders:
        sys.exit(1)


if __name__ == "__main__":
    main()
