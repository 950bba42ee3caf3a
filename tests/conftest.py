"""Shared fixtures: the real PostgreSQL and Redis, and the skip-or-fail rule for them."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from pydantic import BaseModel

from tests import settings as test_settings

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _missing(service: str, reason: str) -> None:
    message = f"{service} is needed: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: a missing service is a failure, not a skip)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _require_marked_services(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres") and connection.vendor != "postgresql":
        _missing("PostgreSQL", "nothing answers on 127.0.0.1:5432 and DATABASE_URL is unset")
    if request.node.get_closest_marker("redis") and not test_settings.REDIS_AVAILABLE:
        _missing("Redis", "nothing answers on 127.0.0.1:6379")


@pytest.fixture
def redis_url() -> str:
    if not test_settings.REDIS_AVAILABLE:
        _missing("Redis", "nothing answers on 127.0.0.1:6379")
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

DEMO_ACCOUNT = 1001
OTHER_ACCOUNT = 1002


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
