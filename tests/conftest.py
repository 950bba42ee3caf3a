"""Shared fixtures: the real PostgreSQL and Redis, and the skip-or-fail rule for them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from pydantic import BaseModel

from tests import settings as test_settings
from tests.helpers import (
    DEMO_ACCOUNT,
    IN_CI,
    MNQ,
    OTHER_ACCOUNT,
    DatabaseOutage,
    ListenerThread,
    missing_service,
)


@pytest.fixture(autouse=True)
def _require_marked_services(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        missing_service("PostgreSQL", "nothing answers on 127.0.0.1:5432 and DATABASE_URL is unset")
    if request.node.get_closest_marker("redis") and not test_settings.REDIS_AVAILABLE:
        missing_service("Redis", "nothing answers on 127.0.0.1:6379")


@pytest.fixture(autouse=True)
def _forget_kept_contracts() -> None:
    # A test's rows are rolled back or truncated without a signal; a contract kept in this
    # process from an earlier test must not stand in for a row this test does not have.
    from accounts.services import contracts_forget

    contracts_forget()


@pytest.fixture
def redis_url() -> str:
    if not test_settings.REDIS_AVAILABLE:
        missing_service("Redis", "nothing answers on 127.0.0.1:6379")
    return test_settings.TEST_REDIS_URL


# --- The YAML config, changed for one test ----------------------------------------------


def _with(model: BaseModel, path: list[str], values: dict[str, Any]) -> BaseModel:
    if not path:
        return model.model_copy(update=values)
    child = getattr(model, path[0])
    return model.model_copy(update={path[0]: _with(child, path[1:], values)})


@pytest.fixture
def tune(settings) -> Callable[..., None]:
    """Change keys of the YAML config for one test: tune("lifecycle.archive", batch_size=2)."""

    def apply(section: str, **values: Any) -> None:
        settings.ORDER_MANAGEMENT = _with(settings.ORDER_MANAGEMENT, section.split("."), values)

    return apply


# --- The broker: a real simulator on a loopback socket, wired into the process's gateway. --


@pytest.fixture
def sim():
    from accounts.gateway import configure_gateway
    from projectx.config import GatewayConfig
    from projectx.simulator import GatewaySimulator

    simulator = GatewaySimulator.with_demo_data(host="127.0.0.1", port=0).start()
    configure_gateway(
        GatewayConfig(
            api_url=simulator.base_url,
            user_hub_url=simulator.user_hub_url,
            username="demo",
            api_key="demo-api-key",
            connect_timeout=1.0,
            request_timeout=1.5,
            rate_limit_max_wait=2.0,
        )
    )
    try:
        yield simulator
    finally:
        configure_gateway(None)
        simulator.stop()


# --- Personas: a staff user, a bot with account 1001, an outsider bot with account 1002. ---


@pytest.fixture
def accounts(db: None, sim):
    from accounts.models import Account

    sim.add_account(
        id=OTHER_ACCOUNT,
        name="PRAC-1002",
        balance=__import__("decimal").Decimal("25000"),
        can_trade=True,
        simulated=True,
    )
    mine = Account.objects.create(broker_account_id=DEMO_ACCOUNT, name="PRAC-1001")
    other = Account.objects.create(broker_account_id=OTHER_ACCOUNT, name="PRAC-1002")
    return mine, other


def _token_client(username: str, account):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    user = User.objects.create_user(username)
    account.members.add(user)
    client = APIClient()
    key = Token.objects.create(user=user).key
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.user = user
    client.auth_headers = {"Authorization": f"Token {key}"}
    return client


@pytest.fixture
def bot(accounts):
    return _token_client("bot-1", accounts[0])


@pytest.fixture
def outsider(accounts):
    return _token_client("outsider", accounts[1])


@pytest.fixture(scope="session", autouse=True)
def _close_the_connection_pool(django_db_setup, django_db_blocker):
    """Close the psycopg pool before the test database is dropped: connections threads left
    in the pool would otherwise keep PostgreSQL from dropping it."""
    yield
    from django.db import connections

    with django_db_blocker.unblock():
        for conn in connections.all():
            if hasattr(conn, "close_pool"):
                conn.close_pool()


# --- Personas and shared setup ---------------------------------------------------------------


@pytest.fixture
def staff_client(db: None) -> Client:
    """A signed-in superuser: the person who reviews orders in the admin and on the desk."""
    User.objects.create_superuser("staff", "staff@example.com", "pw")
    client = Client()
    client.login(username="staff", password="pw")
    return client


@pytest.fixture
def contract_known(sim, accounts) -> None:
    # Placement looks the contract up first; a test that cuts the broker off must not cut
    # that look-up off too.
    from accounts.services import contract_resolve

    contract_resolve(contract_id=MNQ)


# --- The listener against the simulator: in a thread of this process, or as real
# `manage.py listen_gateway` processes; and an outage of this test's database. ---------------

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture
def database_outage(transactional_db) -> Iterator[DatabaseOutage]:
    """Ask for it after `listener`: it ends the outage before the listener stops and before the
    database is flushed."""
    outage = DatabaseOutage()
    try:
        yield outage
    finally:
        outage.close()


# --- Debian's Chromium for Playwright, or a skip (a failure under CI) saying why. ----------

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def chromium_path() -> str:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        reason = "Debian's chromium is not installed (make test installs it when it can)"
        if IN_CI:
            pytest.fail(reason + "; CI=true: the browser test must run")
        pytest.skip(reason)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright is not installed")
    return CHROMIUM
