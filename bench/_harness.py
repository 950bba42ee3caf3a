"""Shared plumbing for the benchmarks: a throwaway PostgreSQL database, the simulator and the
app as real processes on loopback ports, and percentile maths."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
# The shared cache a deployment of more than one worker runs with (README: REDIS_URL). Without
# it each worker has a cache of its own: a replay sent to the other worker misses, and each
# worker throttles alone, which is not what a bot meets in production.
BENCH_REDIS_URL = "redis://127.0.0.1:6379/9"


def redis_for_bench() -> str | None:
    """REDIS_URL if set, else this machine's Redis when it answers, else None."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return BENCH_REDIS_URL
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def scratch_database(name: str) -> Iterator[str]:
    # PostgreSQL is shared by every checkout on the machine: a bench run of another checkout
    # (or a second run of this one) must not drop this run's database.
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:6]
    name = f"{name}_{checkout}_{os.getpid()}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_until(probe: str, *, timeout: float = 30.0, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(probe, headers=headers, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{probe} did not answer within {timeout} s")


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def running_system(
    database: str,
    *,
    workers: int = 2,
    queue_depth: int | None = None,
    placement_slots: int | None = None,
) -> Iterator[tuple[str, str, dict]]:
    """Simulator + migrated app under uvicorn; yields (app_url, simulator_url, env).
    `queue_depth`: `concurrencyControl.maxQueueDepthPerAccount` for this run;
    `placement_slots`: its `placementSlotsPerProcess` (0: no admission control)."""
    sim_port, app_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    env = {
        **os.environ,
        "DATABASE_URL": database,
        "DJANGO_SECRET_KEY": "bench-only",
        "PROJECTX_API_URL": sim_url,
        "PROJECTX_USER_HUB_URL": f"{sim_url}/hubs/user",
        "PROJECTX_USERNAME": "demo",
        "PROJECTX_API_KEY": "demo-api-key",
        # The simulator is ours: lift the broker's 200/min so the benchmark measures this system.
        "PROJECTX_REQUESTS_PER_MINUTE": "10000000",
        "API_THROTTLE_RATE": "10000000/min",
        "ORDERMGMT_BACKGROUND_VERIFICATION": "false",
        "LOG_LEVEL": "WARNING",
    }
    redis_url = redis_for_bench()
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    tuning = {
        "maxQueueDepthPerAccount": queue_depth,
        "placementSlotsPerProcess": placement_slots,
    }
    if any(value is not None for value in tuning.values()):
        text = (ROOT / "config" / "order_management.yaml").read_text(encoding="utf-8")
        for name, value in tuning.items():
            if value is not None:
                text = re.sub(rf"{name}: \d+", f"{name}: {value}", text)
        tuned = Path(tempfile.mkdtemp(prefix="bench-config-")) / "order_management.yaml"
        tuned.write_text(text, encoding="utf-8")
        env["ORDERMGMT_CONFIG"] = str(tuned)
    with process([PYTHON, "-m", "projectx.simulator", "--port", str(sim_port)], env):
        wait_until(f"{sim_url}/api/Status/ping")
        subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        app = [
            PYTHON,
            "-m",
            "uvicorn",
            "ordermgmt.asgi:application",
            "--port",
            str(app_port),
            "--workers",
            str(workers),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",  # as deployed (Procfile)
            "75",
        ]
        with process(app, env):
            app_url = f"http://127.0.0.1:{app_port}"
            wait_until(f"{app_url}/api/v1/accounts/")
            yield app_url, sim_url, env


def bot_token(env: dict[str, str], username: str, accounts: list[int]) -> str:
    args = [PYTHON, "manage.py", "create_bot_token", username]
    for account in accounts:
        args += ["--account", str(account)]
    out = subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def broker_orders(sim_url: str, account_id: int) -> list[dict]:
    token = httpx.post(
        f"{sim_url}/api/Auth/loginKey", json={"userName": "demo", "apiKey": "demo-api-key"}
    ).json()["token"]
    response = httpx.post(
        f"{sim_url}/api/Order/search",
        json={"accountId": account_id, "startTimestamp": "2000-01-01T00:00:00Z"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.json()["orders"]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the process has used so far: a figure the other processes on
    the machine do not move, unlike the rates above."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and all its descendants (uvicorn and its workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            total += cpu_seconds(current)
        except FileNotFoundError:
            continue
        pending.extend(children(current))
    return total


def listening_pid(port: int) -> int:
    """The process started with `--port <port>` (the web server of `running_system`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        wanted = (b"--port", str(port).encode())
        if any(pair == wanted for pair in itertools.pairwise(argv)):
            return int(entry.name)
    raise LookupError(f"no process started with --port {port}")
