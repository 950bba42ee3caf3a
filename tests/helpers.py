"""Helpers every test module may use: the bot's orders, the broker's view, waiting for a
condition, the listener in a thread, the desk's websocket, the metrics exposition.

Fixtures live in tests/conftest.py; builders of rows in tests/factories.py; broker wire objects
in tests/fills/wire.py. No test module imports another test module's helpers.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import psycopg
import pytest
from channels.db import database_sync_to_async
from channels.testing.websocket import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import DatabaseError, close_old_connections, connection
from django.test import Client
from psycopg import sql

from accounts.gateway import get_gateway
from accounts.models import Position
from fills.listener import GatewayListener
from fills.models import Fill
from ordermgmt.asgi import application
from orders.models import Order
from tests.ops.scrape import sample_value

DEMO_ACCOUNT = 1001  # the bot's account (the `bot` fixture)
OTHER_ACCOUNT = 1002  # another bot's (the `outsider` fixture)


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_service(service: str, reason: str) -> None:
    message = f"{service} is needed: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(message)


MNQ = "CON.F.US.MNQ.Z26"


LIMIT_BUY = {
    "account": DEMO_ACCOUNT,
    "contract_id": MNQ,
    "side": "buy",
    "type": "limit",
    "size": 2,
    "limit_price": "20000.25",
}


def place(client, body=None, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post("/api/v1/orders/", body or LIMIT_BUY, format="json", **headers)


def broker_orders(sim) -> list[dict]:
    return sim.broker.orders(DEMO_ACCOUNT)


RESTING_BUY = {**LIMIT_BUY, "size": 5, "limit_price": "20000.00"}  # the market is at 21000


MARKET_BUY = {
    "account": DEMO_ACCOUNT,
    "contract_id": MNQ,
    "side": "buy",
    "type": "market",
    "size": 1,
}


def place_resting(bot, key: str, size: int = 5) -> Order:
    body = place(bot, {**RESTING_BUY, "size": size}, key=key).json()
    return Order.objects.get(pk=body["id"])


def broker_trades(sim) -> list[dict]:
    return [t for t in sim.broker.trades(DEMO_ACCOUNT) if not t["voided"]]


def local_matches_broker(sim) -> bool:
    """Every broker order, trade and position is mirrored exactly."""
    by_id = {
        o.broker_order_id: o for o in Order.objects.filter(account__broker_account_id=DEMO_ACCOUNT)
    }
    status_names = {1: {"open", "partially_filled"}, 2: {"filled"}, 3: {"cancelled"}}
    for held in sim.broker.orders(DEMO_ACCOUNT):
        local = by_id.get(held["id"])
        if local is None or local.status not in status_names.get(held["status"], {local.status}):
            return False
        if local.filled_size != held["fillVolume"]:
            return False
    stored = set(Fill.objects.values_list("broker_trade_id", flat=True))
    if stored != {t["id"] for t in sim.broker.trades(DEMO_ACCOUNT)}:
        return False
    for held in sim.broker.positions(DEMO_ACCOUNT):
        position = Position.objects.filter(contract_id=held["contractId"]).first()
        if position is None or position.size != held["size"]:
            return False
    return True


def another_session() -> psycopg.Connection:
    """A session of its own on this test's database (another process's, say), autocommit;
    use as a context manager."""
    dsn = connection.get_connection_params()
    return psycopg.connect(
        host=dsn.get("host", "127.0.0.1"),
        port=dsn.get("port", 5432),
        user=dsn.get("user", "postgres"),
        dbname=dsn["dbname"],
        autocommit=True,
    )


def in_thread(call: Callable[[], Any]) -> Any:
    """Run one API call in a thread of its own (with its own database connection)."""

    def run() -> Any:
        try:
            return call()
        finally:
            connection.close()

    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(run)
    pool.shutdown(wait=False)
    return future


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


class LoopThread:
    """Something with `async run(stop)` (a listener, the market-data feed) on its own event loop
    in a background thread, until `stop()`."""

    def __init__(self, runner: Any, name: str) -> None:
        self._runner = runner
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self._stop = asyncio.Event()
            await self._runner.run(self._stop)

        try:
            self._loop.run_until_complete(main())
        finally:
            connection.close()

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=15)


class ListenerThread(LoopThread):
    """A GatewayListener on its own event loop in a background thread."""

    def __init__(self, **options) -> None:
        self.listener = GatewayListener(get_gateway().config, sweep_interval=0.3, **options)
        super().__init__(self.listener, "listener")


@database_sync_to_async
def session_cookie(username: str, *accounts) -> bytes:
    user = User.objects.create_user(username, password="pw")
    for account in accounts:
        account.members.add(user)
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def open_desk(cookie: bytes | None) -> tuple[WebsocketCommunicator, bool, object]:
    headers = [(b"origin", b"http://localhost")]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(application, "/ws/desk/", headers=headers)
    connected, detail = await communicator.connect(timeout=5)
    return communicator, connected, detail


async def next_order(communicator: WebsocketCommunicator) -> dict:
    message = await communicator.receive_json_from(timeout=5)
    assert message["type"] == "order", message
    return message["row"]


def exposition() -> str:
    return Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()


def read(name: str, **labels: str) -> float:
    return sample_value(exposition(), name, labels)


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


# The order the desk's browser tests place: a resting limit buy below the market.
DESK_ORDER = {
    "account": 1001,
    "contract_id": "CON.F.US.MNQ.Z26",
    "side": "buy",
    "type": "limit",
    "size": 2,
    "limit_price": "20950.00",
}
