"""Placement latency and throughput through the API, against the simulator, on PostgreSQL, with
the issue-14 targets printed beside the figures. Five runs on one system (2 uvicorn workers):

- single: 1 client, one order at a time; then idempotent replays of some of them. The
  system's own time is the API latency minus the broker's handling time of the same request,
  which the simulator measures itself (GET /_sim/timings).
- spread: 20 accounts x 5 clients each.
- one account: 50 clients on one account (one FIFO queue, full: the depth limit of
  `--queue-depth` is reached, and the requests beyond it are answered 429).
- paced: orders offered at fixed rates (`--paced-rates`) over the 20 spread accounts, each
  sent at its time (an open loop), latency counted from that time: what a placement waits at
  a load the system carries. Spread's 100 clients form a closed loop, whose mean latency is
  100 / its rate (Little's law): its p99 target of 250 ms would need 400 orders/s.
- hung call: one placement whose broker answer is held back for 3 s; how soon after it the
  account's next order reaches the broker.

A request that gets no HTTP answer (its connection failed) is counted under status 0 and left
out of the latencies. Every placement answers with a `Server-Timing` header
(orders/placement/timing.py); the bench prints p50/p99 of each step, so the next person can see
what to cut. Duplicates (one customTag twice at the broker) and FIFO (the broker's order ids
rise with the account's acceptance sequence) are checked at the end of each run.

    .venv/bin/python bench/place_orders.py [--orders 1000] [--single 300] [--replays 100]
        [--workers 2] [--queue-depth 25] [--placement-slots N]
        [--runs single,spread,one-account,paced,hung]
        [--paced-rates 40,80] [--paced-seconds 8]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (
    bot_token,
    broker_orders,
    listening_pid,
    percentile,
    running_system,
    scratch_database,
    tree_cpu_seconds,
)

ACCOUNT = 1001
SPREAD_ACCOUNTS = [3001 + n for n in range(20)]
CONTRACT = "CON.F.US.MNQ.Z26"
# One HTTP client per bench thread, kept across runs: a bot keeps its connection, so its retry
# reaches the same web worker (whose local-memory cache holds the answer; with REDIS_URL every
# worker shares one cache).
local = threading.local()
# Client threads of the paced runs: enough that none waits for a free one at the rates run.
PACED_CLIENTS = 200
# The status a sample gets when no HTTP answer came (the connection failed).
NO_ANSWER = 0
STEPS = ("admission", "auth", "validation", "storing", "turn", "broker", "settling", "response")


@dataclass
class Sample:
    account: int
    latency: float
    status: int
    replayed: bool
    steps: dict[str, float] = field(default_factory=dict)
    broker_order_id: int | None = None


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


def server_timing(header: str) -> dict[str, float]:
    steps = {}
    for part in filter(None, (item.strip() for item in header.split(","))):
        name, _, duration = part.partition(";dur=")
        if duration:
            steps[name] = float(duration) / 1000
    return steps


def place(
    app_url: str, token: str, index: int, account: int, key_prefix: str, since: float | None = None
) -> Sample:
    """POST one order; its latency from `since` (perf_counter; default: the moment it is sent)."""
    if not hasattr(local, "http"):
        local.http = httpx.Client(
            base_url=app_url, timeout=60, headers={"Authorization": f"Token {token}"}
        )
    started = time.perf_counter() if since is None else since
    try:
        response = local.http.post(
            "/api/v1/orders/",
            json=order_body(index, account),
            headers={"Idempotency-Key": f"{key_prefix}-{index}"},
        )
    except httpx.TransportError:
        # No HTTP answer (a connection reset: it ended about one paced run in five while the
        # server's keep-alive was httpx's own 5 s, decision 0014): counted as status NO_ANSWER,
        # not a crash that loses the run's figures. A bot retries it with the same key.
        return Sample(account, time.perf_counter() - started, NO_ANSWER, False)
    elapsed = time.perf_counter() - started
    try:
        broker_id = response.json().get("broker_order_id")
    except ValueError:
        broker_id = None
    return Sample(
        account,
        elapsed,
        response.status_code,
        response.headers.get("Idempotent-Replayed") == "true",
        server_timing(response.headers.get("Server-Timing", "")),
        broker_id,
    )


def run(
    app_url: str,
    token: str,
    jobs: list[int],
    clients: int,
    accounts: list[int] | None = None,
    key_prefix: str = "bench",
) -> list[Sample]:
    samples: list[Sample] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        account = accounts[index % len(accounts)] if accounts else ACCOUNT
        sample = place(app_url, token, index, account, key_prefix)
        with lock:
            samples.append(sample)

    if clients == 1:
        for job in jobs:  # in this thread: its connection, and so its worker, stay the same
            send(job)
        return samples
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(send, jobs))
    return samples


def web_cpu_seconds(app_url: str) -> float:
    """CPU used so far by the web server and its workers: a figure the machine's other load
    moves far less than it moves latencies (this machine's speed varies twofold by the minute)."""
    return tree_cpu_seconds(listening_pid(int(app_url.rsplit(":", 1)[1])))


def print_cpu(used_seconds: float, count: int, per: str = "request") -> None:
    print(f"  web workers' CPU       {used_seconds / count * 1000:7.1f} ms per {per}")


def broker_seconds(sim_url: str) -> dict[int, float]:
    """The simulator's own handling time of each Order/place, by the order id it answered."""
    timings = httpx.get(f"{sim_url}/_sim/timings", params={"path": "order/place"}, timeout=30)
    return {t["orderId"]: t["seconds"] for t in timings.json() if t["orderId"] is not None}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def verdict(ok: bool) -> str:
    return "ok  " if ok else "MISS"


def print_latency(label: str, values: list[float], p50_target: float | None, p99_target=None):
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    line = f"  {label:<22} p50 {ms(p50)} ms  p99 {ms(p99)} ms"
    targets = []
    if p50_target is not None:
        targets.append(f"{verdict(p50 <= p50_target)} p50<={p50_target * 1000:.0f}")
    if p99_target is not None:
        targets.append(f"{verdict(p99 <= p99_target)} p99<={p99_target * 1000:.0f}")
    print(line + ("   target " + ", ".join(targets) if targets else ""))


def print_steps(samples: list[Sample]) -> None:
    print(f"  {'step':<22} {'p50 ms':>7} {'p99 ms':>9}")
    for name in STEPS:
        values = [s.steps.get(name, 0.0) for s in samples if s.steps]
        if values:
            p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
            print(f"  {name:<22} {ms(p50)} {ms(p99):>9}")


def check_broker(database: str, sim_url: str, accounts: list[int]) -> tuple[int, list[int]]:
    """Duplicates at the broker (a customTag twice) and the accounts whose broker order ids
    do not rise with their acceptance sequence (FIFO broken)."""
    duplicates = 0
    out_of_order = []
    with psycopg.connect(database.replace("postgres://", "postgresql://")) as db:
        for account in accounts:
            tags = Counter(order.get("customTag") for order in broker_orders(sim_url, account))
            duplicates += sum(count - 1 for count in tags.values() if count > 1)
            ids = [
                row[0]
                for row in db.execute(
                    "SELECT o.broker_order_id FROM orders_order o JOIN accounts_account a "
                    "ON a.id = o.account_id WHERE a.broker_account_id = %s AND "
                    "o.broker_order_id IS NOT NULL ORDER BY o.account_seq",
                    [account],
                )
            ]
            if ids != sorted(ids):
                out_of_order.append(account)
    return duplicates, out_of_order


def single(app_url: str, sim_url: str, token: str, args: argparse.Namespace, run_id: str) -> None:
    print(f"\nsingle: 1 client, {args.single} orders one at a time, then {args.replays} replays")
    run(app_url, token, list(range(20)), 1, key_prefix=f"{run_id}-warm")  # connections, caches
    cpu_before = web_cpu_seconds(app_url)
    samples = run(app_url, token, list(range(args.single)), 1, key_prefix=f"{run_id}-single")
    cpu_single = web_cpu_seconds(app_url) - cpu_before
    handling = broker_seconds(sim_url)
    own = [
        s.latency - handling[s.broker_order_id] for s in samples if s.broker_order_id in handling
    ]
    print_latency("API latency", [s.latency for s in samples], None)
    print_latency(
        "broker handling",
        [handling[s.broker_order_id] for s in samples if s.broker_order_id in handling],
        None,
    )
    print_latency("system's own time", own, 0.005, 0.015)
    print_cpu(cpu_single, len(samples), "placement")
    cpu_before = web_cpu_seconds(app_url)
    replays = run(
        app_url,
        token,
        list(range(min(args.replays, args.single))),
        1,
        key_prefix=f"{run_id}-single",
    )
    print_latency("replay", [s.latency for s in replays], 0.004)
    print_cpu(web_cpu_seconds(app_url) - cpu_before, len(replays))
    print(
        f"  responses              {dict(Counter(s.status for s in samples))}, replays "
        f"{dict(Counter((s.status, s.replayed) for s in replays))}"
    )
    print_steps(samples)


def load(
    label: str,
    app_url: str,
    sim_url: str,
    database: str,
    token: str,
    accounts: list[int],
    clients: int,
    orders: int,
    run_id: str,
    *,
    rate_target: float | None,
    p99_target: float,
    allowed: set[int],
) -> None:
    print(f"\n{label}: {orders} orders, {len(accounts)} account(s), {clients} clients")
    started, cpu_before = time.perf_counter(), web_cpu_seconds(app_url)
    samples = run(app_url, token, list(range(orders)), clients, accounts, f"{run_id}-{label}")
    elapsed = time.perf_counter() - started
    cpu_used = web_cpu_seconds(app_url) - cpu_before
    rate = orders / elapsed
    statuses = Counter(s.status for s in samples)
    duplicates, out_of_order = check_broker(database, sim_url, accounts)
    target = f"   target {verdict(rate >= rate_target)} >={rate_target:.0f}" if rate_target else ""
    print(f"  throughput             {rate:7.1f} orders/s ({elapsed:.1f} s){target}")
    print_cpu(cpu_used, orders)
    print_latency(
        "API latency", [s.latency for s in samples if s.status != NO_ANSWER], None, p99_target
    )
    placed = [s.latency for s in samples if s.status not in (429, NO_ANSWER)]
    if len(placed) != len(samples):
        print_latency("  of those placed", placed, None)
    only_allowed = set(statuses) <= allowed
    print(
        f"  responses              {dict(statuses)}   target {verdict(only_allowed)} only "
        f"{sorted(allowed)}"
    )
    print(f"  duplicates at broker   {duplicates:7d}   target {verdict(duplicates == 0)} 0")
    print(
        f"  FIFO broken on         {len(out_of_order):7d} account(s)   "
        f"target {verdict(not out_of_order)} 0 {out_of_order or ''}"
    )
    print_steps(samples)


def paced(
    pool: ThreadPoolExecutor,
    app_url: str,
    sim_url: str,
    database: str,
    token: str,
    rate: float,
    seconds: float,
    run_id: str,
) -> None:
    """Orders offered at a fixed rate over the spread accounts, each sent at its time whatever
    the answers before it (an open loop: the closed loop of `spread` has 100 clients, so its
    mean latency is 100 / its rate, Little's law). Latency is counted from each order's
    scheduled time, so a backlog at the client counts too."""
    count = int(rate * seconds)
    print(
        f"\npaced: {rate:.0f} orders/s offered for {seconds:.0f} s over "
        f"{len(SPREAD_ACCOUNTS)} accounts (latency from each order's scheduled time)"
    )
    samples: list[Sample] = []
    lock = threading.Lock()

    def send(index: int, due: float) -> None:
        account = SPREAD_ACCOUNTS[index % len(SPREAD_ACCOUNTS)]
        sample = place(app_url, token, index, account, f"{run_id}-paced-{rate:.0f}", since=due)
        with lock:
            samples.append(sample)

    cpu_before = web_cpu_seconds(app_url)
    start = time.perf_counter() + 0.05
    sent = []
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent.append(pool.submit(send, index, due))
    for future in sent:
        future.result()
    elapsed = time.perf_counter() - start
    print(f"  answered               {count / elapsed:7.1f} orders/s ({elapsed:.1f} s)")
    print_cpu(web_cpu_seconds(app_url) - cpu_before, count)
    latencies = [s.latency for s in samples if s.status != NO_ANSWER]
    print(
        f"  latency                p50 {ms(percentile(latencies, 0.5))} ms  "
        f"p99 {ms(percentile(latencies, 0.99))} ms   (the spread target: p99 <= 250 at 200/s)"
    )
    duplicates, out_of_order = check_broker(database, sim_url, SPREAD_ACCOUNTS)
    print(
        f"  responses              {dict(Counter(s.status for s in samples))}; duplicates "
        f"{duplicates}; FIFO broken on {len(out_of_order)} account(s)"
    )
    print_steps(samples)


def hung(app_url: str, sim_url: str, token: str, run_id: str) -> None:
    print("\nhung call: the broker holds one placement's answer for 3 s; the next order follows")
    httpx.post(
        f"{sim_url}/_sim/faults",
        json={"fault": "delay_response", "seconds": 3, "path": "Order/place", "count": 1},
        timeout=10,
    ).raise_for_status()
    httpx.delete(f"{sim_url}/_sim/timings", timeout=10).raise_for_status()
    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(run, app_url, token, [9000], 1, None, f"{run_id}-hung")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            arrived = httpx.get(f"{sim_url}/_sim/timings", params={"path": "order/place"}).json()
            if arrived:
                break
            time.sleep(0.01)
        nxt = run(app_url, token, [9001], 1, None, f"{run_id}-hung")
        first = held.result()
    timings = httpx.get(f"{sim_url}/_sim/timings", params={"path": "order/place"}).json()
    arrivals = {t["orderId"]: t["receivedAt"] for t in timings}
    gap = arrivals[nxt[0].broker_order_id] - arrivals[first[0].broker_order_id]
    print(f"  next order sent after  {ms(gap)} ms   target {verdict(gap <= 0.5)} <=500")
    print(
        f"  next order answered    {ms(nxt[0].latency)} ms ({nxt[0].status}); the held one "
        f"{ms(first[0].latency)} ms ({first[0].status})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1000, help="orders per load run")
    parser.add_argument("--single", type=int, default=300, help="orders of the 1-client run")
    parser.add_argument("--replays", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--runs", default="single,spread,one-account,paced,hung")
    parser.add_argument(
        "--paced-rates", default="40,80", help="orders/s offered by the paced runs, one run each"
    )
    parser.add_argument("--paced-seconds", type=float, default=8.0)
    parser.add_argument(
        "--queue-depth",
        type=int,
        default=25,
        help="maxQueueDepthPerAccount: 50 clients on one account fill 25 (beyond it: 429)",
    )
    parser.add_argument(
        "--placement-slots",
        type=int,
        default=None,
        help="placementSlotsPerProcess (default: the config's; 0: no admission control)",
    )
    args = parser.parse_args()
    runs = set(args.runs.split(","))
    run_id = uuid.uuid4().hex[:8]

    with (
        scratch_database("ordermgmt_bench_place") as database,
        running_system(
            database,
            workers=args.workers,
            queue_depth=args.queue_depth,
            placement_slots=args.placement_slots,
        ) as (
            app_url,
            sim_url,
            env,
        ),
    ):
        for account in SPREAD_ACCOUNTS:
            httpx.post(
                f"{sim_url}/_sim/accounts",
                json={"id": account, "name": f"PRAC-{account}", "balance": 50000},
                timeout=10,
            ).raise_for_status()
        token = bot_token(env, "bench-bot", [ACCOUNT, *SPREAD_ACCOUNTS])
        print(
            f"placement through {args.workers} uvicorn workers on PostgreSQL, against the "
            f"simulator, queue depth {args.queue_depth} per account, placement slots per worker "
            f"{'as configured' if args.placement_slots is None else args.placement_slots}, on "
            "this machine (the "
            "bench's clients share its CPUs); cache and throttle counters: "
            + (f"Redis ({env['REDIS_URL']})" if env.get("REDIS_URL") else "each worker's memory")
        )
        if "single" in runs:
            single(app_url, sim_url, token, args, run_id)
        if "spread" in runs:
            load(
                "spread",
                app_url,
                sim_url,
                database,
                token,
                SPREAD_ACCOUNTS,
                100,
                args.orders,
                run_id,
                rate_target=200,
                p99_target=0.25,
                allowed={201},
            )
        if "one-account" in runs:
            load(
                "one-account",
                app_url,
                sim_url,
                database,
                token,
                [ACCOUNT],
                50,
                args.orders,
                run_id,
                rate_target=None,
                p99_target=1.0,
                allowed={201, 202, 429},
            )
        if "paced" in runs:
            with ThreadPoolExecutor(max_workers=PACED_CLIENTS) as pool:
                # One order per client thread at once, so that (nearly) every thread has its
                # connection open and the workers' caches are filled before anything is timed:
                # the first paced run paid for that in its p99.
                warm = [
                    pool.submit(place, app_url, token, n, account, f"{run_id}-paced-warm")
                    for n, account in enumerate(
                        SPREAD_ACCOUNTS * (PACED_CLIENTS // len(SPREAD_ACCOUNTS))
                    )
                ]
                for future in warm:
                    future.result()
                for rate in (float(r) for r in args.paced_rates.split(",")):
                    paced(pool, app_url, sim_url, database, token, rate, args.paced_seconds, run_id)
        if "hung" in runs:
            hung(app_url, sim_url, token, run_id)


if __name__ == "__main__":
    main()
