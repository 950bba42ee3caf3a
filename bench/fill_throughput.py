"""Push fills through the simulator's user hub into a `listen_gateway` process at a rising rate,
on PostgreSQL. Prints, per offered rate, the fills per second the listener sustained and the
latency from the trade leaving the simulator (its creationTimestamp) to the fill's database
commit (Fill.received_at). The spec's budget is 100 ms per fill.

    .venv/bin/python bench/fill_throughput.py [--rates 100 1000 5000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import PYTHON, ROOT, bot_token, percentile, process, scratch_database

from projectx.simulator import GatewaySimulator, PlaceOrderRequest

ACCOUNT = 1001
CONTRACT = "CON.F.US.MNQ.Z26"


def count_fills(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM fills_fill").fetchone()
    assert row is not None  # count(*) always answers one row
    return row[0]


def wait_for_count(dsn: str, target: int, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if count_fills(dsn) >= target:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"only {count_fills(dsn)} of {target} fills applied within {timeout} s")


def offer(sim: GatewaySimulator, order_id: int, rate: int, seconds: float) -> tuple[int, float]:
    """Fill one lot at a time at `rate` per second for `seconds`; returns (sent, achieved rate)."""
    total = int(rate * seconds)
    started = time.perf_counter()
    for sent in range(total):
        due = started + sent / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sim.fill_order(order_id, size=1, price=Decimal("20000.00"))
    elapsed = time.perf_counter() - started
    return total, total / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    sim = GatewaySimulator.with_demo_data("127.0.0.1", 0).start()
    rows = []
    try:
        with scratch_database("ordermgmt_bench_fills") as database:
            dsn = database.replace("postgres://", "postgresql://")
            env = {
                **os.environ,
                "DATABASE_URL": database,
                "DJANGO_SECRET_KEY": "bench-only",
                "PROJECTX_API_URL": sim.base_url,
                "PROJECTX_USER_HUB_URL": sim.user_hub_url,
                "PROJECTX_USERNAME": "demo",
                "PROJECTX_API_KEY": "demo-api-key",
                "LOG_LEVEL": "WARNING",
            }
            subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
            bot_token(env, "bench", [ACCOUNT])  # mirrors the broker's accounts
            listen = [
                PYTHON,
                "manage.py",
                "listen_gateway",
                "--account",
                str(ACCOUNT),
                "--sweep-interval",
                "1",
            ]
            with process(listen, env):
                sim.wait_for_hub(lambda c: any(x["subscriptions"] for x in c), timeout=30)
                big = sim.broker.place_order(
                    "demo",
                    PlaceOrderRequest(
                        account_id=ACCOUNT,
                        contract_id=CONTRACT,
                        type=1,
                        side=0,
                        size=10_000_000,
                        limit_price=Decimal("20000.00"),
                    ),
                )
                order_id = big.order_id
                if order_id is None:
                    raise SystemExit(f"the simulator refused the bench order: {big.error_message}")
                for rate in args.rates:
                    before = count_fills(dsn)
                    first_id = None
                    sent, offered = offer(sim, order_id, rate, args.seconds)
                    done_at = wait_for_count(dsn, before + sent, timeout=600)
                    with psycopg.connect(dsn) as conn:
                        rows_ = conn.execute(
                            "SELECT broker_ts, received_at FROM fills_fill ORDER BY id OFFSET %s",
                            (before,),
                        ).fetchall()
                    latencies = [(r - b).total_seconds() for b, r in rows_]
                    span = (max(r for _, r in rows_) - min(b for b, _ in rows_)).total_seconds()
                    rows.append(
                        (
                            rate,
                            offered,
                            sent,
                            sent / span,
                            percentile(latencies, 0.5),
                            percentile(latencies, 0.99),
                        )
                    )
                    del first_id, done_at
    finally:
        sim.stop()

    print("fills through the simulator's hub into listen_gateway, on PostgreSQL")
    print(
        f"{'offered/s':>10} {'achieved/s':>11} {'fills':>7} {'sustained/s':>12} "
        f"{'p50 ms':>9} {'p99 ms':>9}"
    )
    for rate, offered, sent, sustained, p50, p99 in rows:
        print(
            f"{rate:>10} {offered:>11.0f} {sent:>7} {sustained:>12.0f} {p50 * 1000:>9.1f} "
            f"{p99 * 1000:>9.1f}"
        )
    print("budget: 100 ms per fill")


if __name__ == "__main__":
    main()
