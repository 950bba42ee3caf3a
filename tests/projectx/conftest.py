"""Fixtures for the ProjectX package's tests: a running, demo-seeded gateway simulator.

Built on `projectx.simulator.testing`, so other test folders can make the same fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from projectx.simulator import GatewaySimulator
from projectx.simulator.testing import api_client, running_simulator


@pytest.fixture
def simulator() -> Iterator[GatewaySimulator]:
    """A fresh started simulator with the demo data (user demo, accounts 1001/1002, micros)."""
    with running_simulator() as sim:
        yield sim


@pytest.fixture
def simulator_token(simulator: GatewaySimulator) -> str:
    """A valid token for the demo user (issued directly, no login round trip)."""
    return simulator.issue_token("demo")


@pytest.fixture
def simulator_api(simulator: GatewaySimulator, simulator_token: str) -> Iterator[httpx.Client]:
    """An httpx client on `<simulator>/api/` with the demo user's bearer token."""
    with api_client(simulator, simulator_token) as client:
        yield client
