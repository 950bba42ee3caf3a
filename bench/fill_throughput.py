"""Fills at exchange speed: one-lot trades through the simulator's user hub into a real
`listen_gateway` process, on PostgreSQL, with the figures printed next to their targets.

    .venv/bin/python bench/fill_throughput.py [--fills 6000] [--steady-seconds 30]

What it measures (commit = the moment the bench's poller first sees the row; it polls the
database every couple of milliseconds, so that is the commit to within that):
1. Sustained rate, one order: `--fills` one-lot trades offered as fast as the simulator makes
   them; fills per second from the first trade to the last commit.
2. Sustained rate, 20 orders across 2 accounts, the same way.
3. Steady 1,000 fills/s for `--steady-seconds`: trade (the broker's creationTimestamp) to
   commit, p50 and p99; the listener's resident memory at 5 s and at the end.
4. A burst of 200 one-lot trades on one 200-lot order: from the last trade to the commit that
   holds its last fill and its `filled` state.
5. A ceiling measured in the same run: the same rows (fills, order update, audit rows,
   position) written by plain psycopg in batches of the listener's size, no Django, and the
   listener's sustained rate as a ratio to it.
The rate the simulator actually offered is printed beside each rate, so a slow producer cannot
pass for a fast consumer.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _harness import (
    PYTHON,
    ROOT,
    bot_token,
    children,
    cpu_seconds,
    percentile,
    process,
    scratch_database,
)

from projectx.simulator import GatewaySimulator, PlaceOrderRequest

ACCOUNTS = (1001, 1002)
CONTRACT = "CON.F.US.MNQ.Z26"
PRICE = Decimal("20000.00")
# Fills per batch in the ceiling: the listener's MAX_BATCH is 1,000 events, and a fill comes
# with three more (its order, position and account events), so a full batch holds 250 fills.
BATCH = 250


@dataclass
class CommitWatch:
    """Polls the database and notes when each fill (by broker trade id) and each order state
    first becomes visible: a committed row is visible, an uncommitted one is not."""

    dsn: str
    interval: float = 0.002
    fills_seen: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> CommitWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        last_id = 0
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            # A range scan of the primary key, never a sequential scan: the table grows from
            # empty faster than autovacuum analyzes it, and without statistics the planner read
            # the whole table on every poll (40% of one of the machine's two cores, taken from
            # the listener it measures, and polls 6 ms apart instead of 2).
            conn.execute("SET enable_seqscan = off")
            while not self._stop.is_set():
                rows = conn.execute(
                    "SELECT id, broker_trade_id FROM fills_fill WHERE id > %s ORDER BY id",
                    (last_id,),
                ).fetchall()
                now = time.time()
                for row_id, trade_id in rows:
                    self.fills_seen.setdefault(trade_id, now)
                    last_id = max(last_id, row_id)
                time.sleep(self.interval)

    def wait_for(self, trade_ids: set[int], timeout: float) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if trade_ids <= self.fills_seen.keys():
                return max(self.fills_seen[t] for t in trade_ids)
            time.sleep(0.005)
        missing = len(trade_ids - self.fills_seen.keys())
        raise RuntimeError(f"{missing} of {len(trade_ids)} fills not committed within {timeout} s")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.time()
        time.sleep(0.002)
    raise RuntimeError(f"timed out waiting for {what}")


def trade_time(trade: dict) -> float:
    return datetime.fromisoformat(trade["creationTimestamp"]).timestamp()


def resting_order(sim: GatewaySimulator, account: int, size: int) -> int:
    placed = sim.broker.place_order(
        "demo",
        PlaceOrderRequest(
            account_id=account, contract_id=CONTRACT, type=1, side=0, size=size, limit_price=PRICE
        ),
    )
    assert placed.order_id is not None
    return placed.order_id


def offer(
    sim: GatewaySimulator, orders: list[int], count: int, rate: float | None
) -> tuple[list[dict], float]:
    """One-lot fills round-robin over `orders`, paced to `rate` per second (None: as fast as
    the simulator goes). Returns the trades and the rate actually offered."""
    trades = []
    started = time.perf_counter()
    for n in range(count):
        if rate is not None:
            delay = started + n / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        trades.append(sim.fill_order(orders[n % len(orders)], size=1, price=PRICE))
    return trades, count / (time.perf_counter() - started)


@contextlib.contextmanager
def collector_held_off() -> Iterator[None]:
    """The simulator's hub runs in this process, beside the poller and everything the earlier
    phases kept (their trades, the simulator's order book). A full collection of that heap
    stopped the hub and the poller for 30-200 ms at a time, after the trades were stamped, and
    the pauses were counted as the listener's latency (its p99). A broker does not pause for
    our garbage collector: while a phase offers and waits, the heap is frozen and collection
    held off (a phase allocates a few tens of MiB at most)."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def rss_mib(pid: int) -> float:
    """Resident memory of the process and its children (manage.py runs in the child of py)."""
    total = 0
    for candidate in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


def ceiling(dsn: str, fills: int) -> float:
    """The same rows the listener writes, by plain psycopg in batches of BATCH: the fills (one
    multi-row INSERT ... ON CONFLICT DO NOTHING), the order (one UPDATE), its audit row naming
    the batch's fills (one INSERT: fills accumulating on a working order share one row per
    batch), the account (one UPDATE), the position (one upsert), one commit per batch."""
    with psycopg.connect(dsn) as conn:
        account_id, order_id = conn.execute(
            "SELECT account_id, id FROM orders_order ORDER BY created_at LIMIT 1"
        ).fetchone()  # type: ignore[misc]
        base = 9_000_000_000
        started = time.perf_counter()
        for start in range(0, fills, BATCH):
            ids = range(base + start, base + min(start + BATCH, fills))
            now = datetime.now(UTC)
            with conn.transaction():
                conn.cursor().executemany(
                    "INSERT INTO fills_fill (account_id, order_id, broker_trade_id, "
                    "broker_order_id, contract_id, side, size, price, fees, voided, broker_ts, "
                    "received_at) VALUES (%s, %s, %s, 1, %s, 'buy', 1, %s, 0, false, %s, %s) "
                    "ON CONFLICT (account_id, broker_trade_id) DO NOTHING",
                    [(account_id, order_id, i, CONTRACT, PRICE, now, now) for i in ids],
                    returning=False,
                )
                conn.execute(
                    "UPDATE orders_order SET filled_size = filled_size + %s, "
                    "fill_notional = fill_notional + %s, version = version + 1, "
                    "updated_at = %s WHERE id = %s",
                    (len(ids), PRICE * len(ids), now, order_id),
                )
                version = conn.execute(
                    "SELECT version FROM orders_order WHERE id = %s", (order_id,)
                ).fetchone()
                assert version is not None
                conn.execute(
                    "INSERT INTO orders_ordertransition (order_id, from_state, to_state, at, "
                    "time_in_previous_state, trigger, actor, reason, is_correction, "
                    "changed_fields, version) VALUES (%s, 'partially_filled', "
                    "'partially_filled', %s, '0 seconds', 'broker-stream', '', %s, false, %s, %s)",
                    (
                        order_id,
                        now,
                        "; ".join(f"fill {i}: 1 @ {PRICE}" for i in ids),
                        json.dumps({"filled_size": [start, start + len(ids)]}),
                        version[0] * 1000,
                    ),
                )
                conn.execute(
                    "UPDATE accounts_account SET balance = balance - %s, version = version + 1 "
                    "WHERE id = %s",
                    (Decimal("0.37") * len(ids), account_id),
                )
                conn.execute(
                    "INSERT INTO accounts_position (account_id, contract_id, type, size, "
                    "average_price, broker_position_id, last_server_ts, version, created_at, "
                    "updated_at) VALUES (%s, %s, 'long', %s, %s, 1, %s, 1, %s, %s) "
                    "ON CONFLICT (account_id, contract_id) DO UPDATE SET size = EXCLUDED.size, "
                    "version = accounts_position.version + 1",
                    (account_id, CONTRACT + ".ceiling", start + len(ids), PRICE, now, now, now),
                )
        return fills / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fills", type=int, default=6000)
    parser.add_argument("--steady-seconds", type=float, default=30.0)
    parser.add_argument("--steady-rate", type=float, default=1000.0)
    args = parser.parse_args()

    sim = GatewaySimulator.with_demo_data("127.0.0.1", 0).start()
    results: dict[str, str] = {}
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
            bot_token(env, "bench", list(ACCOUNTS))  # mirrors the broker's accounts
            listen = [PYTHON, "manage.py", "listen_gateway", "--sweep-interval", "1"]
            for account in ACCOUNTS:
                listen += ["--account", str(account)]
            with process(listen, env) as listener, psycopg.connect(dsn, autocommit=True) as db:
                sim.wait_for_hub(lambda c: any(x["subscriptions"] for x in c), timeout=60)
                # The catch-up after connecting sets each account's checkpoint: wait for it,
                # so the fills below arrive over the hub, not through that catch-up.
                wait_until(
                    lambda: (
                        db.execute(
                            "SELECT count(*) FROM accounts_account WHERE stream_checkpoint "
                            "IS NOT NULL"
                        ).fetchone()
                        == (len(ACCOUNTS),)
                    ),
                    60,
                    "the listener's first catch-up",
                )
                watch = CommitWatch(dsn).start()
                try:
                    run_scenarios(sim, db, watch, listener.pid, args, results)
                finally:
                    watch.stop()
                results["ceiling"] = f"{ceiling(dsn, args.fills):.0f}"
    finally:
        sim.stop()
    report(results)


def run_scenarios(
    sim: GatewaySimulator,
    db: psycopg.Connection,
    watch: CommitWatch,
    listener_pid: int,
    args: argparse.Namespace,
    results: dict[str, str],
) -> None:
    def wait_listed(count: int) -> None:
        wait_until(
            lambda: db.execute("SELECT count(*) FROM orders_order").fetchone()[0] >= count,  # type: ignore[index]
            30,
            "the listener to list the orders",
        )

    # 1. One order.
    one = resting_order(sim, ACCOUNTS[0], 10_000_000)
    wait_listed(1)
    cpu_before = cpu_seconds(listener_pid)
    with collector_held_off():
        trades, offered = offer(sim, [one], args.fills, None)
        last = watch.wait_for({t["id"] for t in trades}, timeout=600)
    results["cpu_us_per_fill"] = (
        f"{(cpu_seconds(listener_pid) - cpu_before) / len(trades) * 1e6:.0f}"
    )
    sustained = len(trades) / (last - trade_time(trades[0]))
    results["one_order"] = f"{sustained:.0f}"
    results["one_order_offered"] = f"{offered:.0f}"

    # 2. Twenty orders across two accounts.
    twenty = [resting_order(sim, ACCOUNTS[n % 2], 10_000_000) for n in range(20)]
    wait_listed(21)
    with collector_held_off():
        trades, offered = offer(sim, twenty, args.fills, None)
        last = watch.wait_for({t["id"] for t in trades}, timeout=600)
    results["twenty_orders"] = f"{len(trades) / (last - trade_time(trades[0])):.0f}"
    results["twenty_orders_offered"] = f"{offered:.0f}"

    # 3. Steady rate: latency and memory.
    count = int(args.steady_rate * args.steady_seconds)
    rss_at_5: list[float] = []
    timer = threading.Timer(5.0, lambda: rss_at_5.append(rss_mib(listener_pid)))
    with collector_held_off():
        timer.start()
        trades, offered = offer(sim, [one], count, args.steady_rate)
        rss_end = rss_mib(listener_pid)
        timer.cancel()
        watch.wait_for({t["id"] for t in trades}, timeout=600)
    latencies = [watch.fills_seen[t["id"]] - trade_time(t) for t in trades]
    results["steady_offered"] = f"{offered:.0f}"
    results["steady_p50_ms"] = f"{percentile(latencies, 0.5) * 1000:.1f}"
    results["steady_p99_ms"] = f"{percentile(latencies, 0.99) * 1000:.1f}"
    results["rss_5s"] = f"{rss_at_5[0]:.0f}" if rss_at_5 else "n/a"
    results["rss_end"] = f"{rss_end:.0f}"

    # 4. A burst of 200 one-lot trades on one 200-lot order.
    burst = resting_order(sim, ACCOUNTS[0], 200)
    wait_listed(22)
    with collector_held_off():
        trades, _ = offer(sim, [burst], 200, None)
        done = wait_until(
            lambda: (
                db.execute(
                    "SELECT status, filled_size FROM orders_order WHERE broker_order_id = %s",
                    (burst,),
                ).fetchone()
                == ("filled", 200)
            ),
            60,
            "the burst's order to be filled",
        )
    results["burst_ms"] = f"{(done - trade_time(trades[-1])) * 1000:.0f}"


def report(results: dict[str, str]) -> None:
    print(json.dumps(results), file=sys.stderr)
    ceiling_rate = float(results["ceiling"])
    rows = [
        (
            "sustained, one order (fills/s)",
            results["one_order"],
            ">= 1500",
            f"offered {results['one_order_offered']}/s",
        ),
        (
            "sustained, 20 orders, 2 accounts (fills/s)",
            results["twenty_orders"],
            ">= 1500",
            f"offered {results['twenty_orders_offered']}/s",
        ),
        (
            "steady: trade -> commit p50 (ms)",
            results["steady_p50_ms"],
            "<= 10",
            f"offered {results['steady_offered']}/s",
        ),
        ("steady: trade -> commit p99 (ms)", results["steady_p99_ms"], "<= 50", ""),
        (
            "listener RSS at 5 s / at the end (MiB)",
            f"{results['rss_5s']} / {results['rss_end']}",
            "flat",
            "",
        ),
        ("burst of 200: last trade -> filled committed (ms)", results["burst_ms"], "<= 150", ""),
        (
            "listener CPU per fill, one order (us)",
            results["cpu_us_per_fill"],
            "",
            "all its threads",
        ),
        ("ceiling: plain psycopg, same rows (fills/s)", results["ceiling"], "", ""),
        ("listener / ceiling", f"{float(results['one_order']) / ceiling_rate:.2f}", ">= 0.5", ""),
    ]
    print("fills through the simulator's hub into listen_gateway, on PostgreSQL")
    print(f"{'figure':<50} {'measured':>14} {'target':>9}  note")
    for name, value, target, note in rows:
        print(f"{name:<50} {value:>14} {target:>9}  {note}")


if __name__ == "__main__":
    main()
