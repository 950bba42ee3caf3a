"""Run `manage.py serve` (what `make run` starts) as a real process for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class ServedSystem:
    url: str
    username: str
    password: str
    bot_token: str
    simulator_url: str
    output: str
    log: Path


@contextlib.contextmanager
def served_system(
    tmp_path: Path, *extra_args: str, database_url: str | None = None
) -> Iterator[ServedSystem]:
    """`manage.py serve` on a SQLite file of its own (or `database_url`), with the simulator
    on a free port."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE", "PROJECTX"))
    }
    env.update(
        DATABASE_URL=database_url or f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_SECRET_KEY="tests",
        DJANGO_SETTINGS_MODULE="ordermgmt.settings",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120
    )
    port = free_port()
    command = [sys.executable, "manage.py", "serve", "--port", str(port), "--simulator-port", "0"]
    # To a file, not a pipe: a pipe nobody reads fills up and stalls the server mid-test.
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            [*command, *extra_args], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            text = log.read_text()
            if "Uvicorn running" in text or server.poll() is not None:
                break
            time.sleep(0.1)
        login = re.search(r"login:\s+(\S+) / (\S+)", text)
        token = re.search(r"bot token: (\w+)", text)
        simulator = re.search(r"simulator: (\S+)", text)
        if not (login and token and simulator) or "Uvicorn running" not in text:
            raise AssertionError(f"serve did not start:\n{text}")
        yield ServedSystem(
            url=f"http://127.0.0.1:{port}",
            username=login.group(1),
            password=login.group(2),
            bot_token=token.group(1),
            simulator_url=simulator.group(1),
            output=text,
            log=log,
        )
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


# The web process as the Procfile starts it.
UVICORN = [
    sys.executable,
    "-m",
    "uvicorn",
    "ordermgmt.asgi:application",
    "--host",
    "127.0.0.1",
    "--timeout-keep-alive",
    "75",
]


@contextlib.contextmanager
def web_processes(
    sim: object, database: dict, tmp_path: Path, *, config: str = "", **env_overrides: str
) -> Iterator[Callable[[], tuple[subprocess.Popen, str]]]:
    """Start web processes (uvicorn, as in the Procfile) on the test database (`database`: its
    settings dict) and the simulator `sim`; `config` is the YAML of ORDERMGMT_CONFIG, the
    keyword arguments more environment. Yields `start()`, which answers (process, url)."""
    config_file = tmp_path / "order_management.yaml"
    config_file.write_text(config or "orderManagement: {}\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE"))},
        "DJANGO_SETTINGS_MODULE": "ordermgmt.settings",
        "DJANGO_SECRET_KEY": "tests",
        "DATABASE_URL": f"postgres://{database['USER'] or 'postgres'}@"
        f"{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}",
        "DATABASE_POOL_MAX_SIZE": "4",
        "ORDERMGMT_CONFIG": str(config_file),
        "PROJECTX_API_URL": sim.base_url,  # type: ignore[attr-defined]
        "PROJECTX_USER_HUB_URL": sim.user_hub_url,  # type: ignore[attr-defined]
        "PROJECTX_USERNAME": "demo",
        "PROJECTX_API_KEY": "demo-api-key",
        **env_overrides,
    }
    started: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, str]:
        port = free_port()
        log = tmp_path / f"web-{port}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(
                [*UVICORN, "--port", str(port)],
                cwd=ROOT,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        started.append(process)
        deadline = time.monotonic() + 60
        while "Uvicorn running" not in log.read_text() and process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"the web process did not start:\n{log.read_text()}")
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()
        return process, f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
