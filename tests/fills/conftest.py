"""Running the listener against the simulator: in a thread of this process, or as real
`manage.py listen_gateway` processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from django.db import DatabaseError, close_old_connections, connection
from psycopg import sql

from accounts.gateway import get_gateway
from fills.listener import GatewayListener

ROOT = Path(__file__).resolve().parents[2]


def wait_for(
    condition: Callable[[], bool],
    timeout: float = 15.0,
    message: str = "",
    *,
    through_database_errors: bool = False,
) -> None:
    """Poll `condition` until it holds. `through_database_errors`: a database error counts as
    "not yet" (for polling across an outage, when pooled connections are still dead)."""
    deadline = time.monotonic() + timeout
    last_error: DatabaseError | None = None
    while time.monotonic() < deadline:
        close_old_connections()
        try:
            if condition():
                return
        except DatabaseError as error:
            if not through_database_errors:
                raise
            last_error = error
            connection.close()
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {message or condition}"
        + (f" (last database error: {last_error})" if last_error else "")
    )


class ListenerThread:
    """A GatewayListener on its own event loop in a background thread."""

    def __init__(self, **options) -> None:
        self.listener = GatewayListener(get_gateway().config, sweep_interval=0.3, **options)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="listener")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await self.listener.run(self._stop)

        try:
            self._loop.run_until_complete(main())
        finally:
            connection.close()

    def start(self) -> ListenerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


@pytest.fixture
def listener(sim, accounts) -> Iterator[Callable[..., ListenerThread]]:
    started: list[ListenerThread] = []

    def start(**options) -> ListenerThread:
        thread = ListenerThread(**options).start()
        started.append(thread)
        sim.wait_for_hub(
            lambda conns: any("order:1001" in c["subscriptions"] for c in conns), timeout=10
        )
        return thread

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def listener_process(sim, accounts):
    """Start `manage.py listen_gateway` processes on the test database and the simulator."""
    settings_dict = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "ordermgmt.settings",
        "DATABASE_URL": f"postgres://{settings_dict['USER'] or 'postgres'}@"
        f"{settings_dict['HOST'] or '127.0.0.1'}:{settings_dict['PORT'] or 5432}/"
        f"{settings_dict['NAME']}",
        "DJANGO_SECRET_KEY": "tests",
        "PROJECTX_API_URL": sim.base_url,
        "PROJECTX_USER_HUB_URL": sim.user_hub_url,
        "PROJECTX_USERNAME": "demo",
        "PROJECTX_API_KEY": "demo-api-key",
        "LOG_LEVEL": "WARNING",
    }
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "listen_gateway", "--sweep-interval", "0.3"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


class DatabaseOutage:
    """This test's database made unavailable: new connections refused and every session on it
    ended, as in a PostgreSQL restart or failover. Acts on the test database only, from an
    admin connection to the `postgres` database (the server is shared: never stop it)."""

    def __init__(self) -> None:
        settings_dict = connection.settings_dict
        self.name = settings_dict["NAME"]
        self._admin = psycopg.connect(
            host=settings_dict["HOST"] or "127.0.0.1",
            port=int(settings_dict["PORT"] or 5432),
            user=settings_dict["USER"] or "postgres",
            dbname="postgres",
            autocommit=True,
        )
        self.active = False

    def begin(self) -> None:
        self._allow_connections(False)
        self.active = True
        self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (self.name,),
        )

    def end(self) -> None:
        self._allow_connections(True)
        self.active = False

    def close(self) -> None:
        if self.active:
            self.end()
        self._admin.close()

    def _allow_connections(self, allowed: bool) -> None:
        self._admin.execute(
            sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
                sql.Identifier(self.name), sql.SQL("true" if allowed else "false")
            )
        )


@pytest.fixture
def database_outage(transactional_db) -> Iterator[DatabaseOutage]:
    """Ask for it after `listener`: it ends the outage before the listener stops and before the
    database is flushed."""
    outage = DatabaseOutage()
    try:
        yield outage
    finally:
        outage.close()
