"""Archive old terminal orders, with their transitions and fills, on PostgreSQL: how fast, and
with how much memory. Prints, per data set size, the rows moved per second and the peak
resident memory of the `manage.py archive_orders` process; the memory must not grow with the
number of orders (batches are set-based SQL over a keyset cursor, nothing accumulates).

Each size gets a scratch database: N filled orders (40 days old, 3 transitions and 1 fill each,
one in ten with an expired idempotency record) generated inside PostgreSQL with
INSERT ... SELECT generate_series, then the command runs as a real process.

    .venv/bin/python bench/archive_orders.py [--orders 100000 1000000] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import PYTHON, ROOT, scratch_database

ACCOUNTS = 10
AGE = "interval '40 days'"  # older than the default hotRetentionDays (30), younger than 365

GENERATE = [
    (
        "accounts",
        f"""
        INSERT INTO accounts_account (broker_account_id, name, balance, can_trade, simulated,
                                      active, last_order_seq, version, created_at, updated_at)
        SELECT 5000 + a, 'BENCH-' || a, 50000, true, true, true, 0, 1, now(), now()
        FROM generate_series(1, {ACCOUNTS}) a
        """,
    ),
    (
        "orders",
        f"""
        INSERT INTO orders_order (
            id, account_id, contract_id, side, type, size, limit_price, idempotency_key,
            custom_tag, broker_order_id, status, status_reason, version, state_entered_at,
            filled_size, avg_fill_price, fill_notional, last_fill_at, broker_fill_volume,
            overfilled, last_server_ts, submitted_at, verification_attempts, created_by,
            account_seq, created_at, updated_at)
        SELECT md5(g::text)::uuid, a.id, 'CON.F.US.MNQ.Z26', 'buy', 'limit', 2, 21000.25,
               'bench-key-' || g, 'om-' || g, 10000000 + g, 'filled', '', 4, t.at,
               2, 21000.25, 42000.5, t.at, 2, false, t.at, t.at - interval '2 seconds', 0,
               'bench-bot', g, t.at - interval '3 seconds', t.at
        FROM generate_series(1, %(n)s) g
        JOIN accounts_account a ON a.broker_account_id = 5001 + g %% {ACCOUNTS}
        CROSS JOIN LATERAL (SELECT now() - {AGE} - g * interval '1 second' AS at) t
        """,
    ),
    (
        "transitions",
        f"""
        INSERT INTO orders_ordertransition (
            order_id, from_state, to_state, at, time_in_previous_state, trigger, actor, reason,
            is_correction, changed_fields, server_ts, version)
        SELECT md5(g::text)::uuid, s.from_state, s.to_state,
               now() - {AGE} - g * interval '1 second', interval '1 second', s.trigger,
               'bench-bot', '', false, '{{}}'::jsonb, NULL, s.version
        FROM generate_series(1, %(n)s) g
        CROSS JOIN (VALUES ('created', 'submitting', 'api', 2),
                           ('submitting', 'open', 'broker-rest', 3),
                           ('open', 'filled', 'broker-stream', 4))
             AS s(from_state, to_state, trigger, version)
        """,
    ),
    (
        "fills",
        f"""
        INSERT INTO fills_fill (
            account_id, order_id, broker_trade_id, broker_order_id, contract_id, side, size,
            price, fees, profit_and_loss, voided, broker_ts, received_at)
        SELECT a.id, md5(g::text)::uuid, 20000000 + g, 10000000 + g, 'CON.F.US.MNQ.Z26', 'buy',
               2, 21000.25, 0.74, NULL, false, now() - {AGE} - g * interval '1 second',
               now() - {AGE} - g * interval '1 second'
        FROM generate_series(1, %(n)s) g
        JOIN accounts_account a ON a.broker_account_id = 5001 + g %% {ACCOUNTS}
        """,
    ),
    (
        "idempotency records",
        f"""
        INSERT INTO orders_idempotencyrecord (
            account_id, key, request_fingerprint, state, order_id, response_status,
            response_body, created_at, expires_at)
        SELECT a.id, 'bench-key-' || g, md5(g::text) || md5(g::text), 'completed',
               md5(g::text)::uuid, 201, '{{}}'::jsonb, now() - {AGE},
               now() - {AGE} + interval '1 hour'
        FROM generate_series(10, %(n)s, 10) g
        JOIN accounts_account a ON a.broker_account_id = 5001 + g %% {ACCOUNTS}
        """,
    ),
]


def generate(dsn: str, n: int) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for what, sql in GENERATE:
            step = time.perf_counter()
            conn.execute(sql, {"n": n})
            print(f"  generated {what} in {time.perf_counter() - step:.1f} s", flush=True)
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def counts(dsn: str) -> dict[str, int]:
    tables = {
        "hot orders": "orders_order",
        "archived orders": "orders_archivedorder",
        "archived transitions": "orders_archivedordertransition",
        "archived fills": "fills_archivedfill",
    }
    with psycopg.connect(dsn) as conn:
        return {name: _count(conn, table) for name, table in tables.items()}


def _count(conn: psycopg.Connection[Any], table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None  # count(*) always answers one row
    return row[0]


def run_archive(env: dict[str, str], batch_size: int | None) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB, output) of one `manage.py archive_orders` process."""
    args = [PYTHON, "manage.py", "archive_orders"]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    started = time.perf_counter()
    process = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = process.stdout.read() if process.stdout else ""
    # wait4: this child's own resource usage, ru_maxrss in KiB on Linux.
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"archive_orders failed ({process.returncode}):\n{output}")
    return seconds, usage.ru_maxrss // 1024, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the YAML's")
    args = parser.parse_args()

    results = []
    for n in args.orders:
        print(f"{n:,} orders:", flush=True)
        with scratch_database("ordermgmt_bench_archive") as database:
            dsn = database.replace("postgres://", "postgresql://")
            env = {
                **os.environ,
                "DATABASE_URL": database,
                "DJANGO_SECRET_KEY": "bench-only",
                "LOG_LEVEL": "WARNING",
            }
            subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
            generation = generate(dsn, n)
            seconds, peak_mib, output = run_archive(env, args.batch_size)
            after = counts(dsn)
            expected = {
                "hot orders": 0,
                "archived orders": n,
                "archived transitions": 3 * n,
                "archived fills": n,
            }
            if after != expected:
                raise RuntimeError(f"archived {after}, expected {expected}")
            print("  " + output.strip().replace("\n", "\n  "), flush=True)
            rows = 5 * n + n // 10  # orders, transitions, fills, idempotency records
            results.append((n, rows, generation, seconds, peak_mib))

    print()
    print(f"{'orders':>10} {'rows moved':>11} {'generate s':>11} {'archive s':>10} "
          f"{'orders/s':>9} {'rows/s':>9} {'peak RSS':>9}")  # fmt: skip
    for n, rows, generation, seconds, peak_mib in results:
        print(
            f"{n:>10,} {rows:>11,} {generation:>11.1f} {seconds:>10.1f} "
            f"{n / seconds:>9,.0f} {rows / seconds:>9,.0f} {peak_mib:>6} MiB"
        )
    print(
        "rows moved: each order with its 3 transitions and 1 fill copied to the archive and "
        "deleted from the hot tables, plus the expired idempotency records removed"
    )


if __name__ == "__main__":
    main()
