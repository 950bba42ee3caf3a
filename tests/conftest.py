"""Shared fixtures: the real PostgreSQL and Redis, and the skip-or-fail rule for them."""

from __future__ import annotations

import os

import pytest
from django.db import connection

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
