"""`manage.py serve` runs the market-data task beside the listener: a position opened through
the API gets the simulator's price and its unrealized P&L; `--price-walk` moves prices by
themselves, and without it they stand still."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import served_system

MNQ = "CON.F.US.MNQ.Z26"


def mnq_position(api: httpx.Client) -> dict | None:
    rows = [r for r in api.get("/api/v1/positions/").json() if r["contract_id"] == MNQ]
    return rows[0] if rows else None


def wait_until(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {condition}")


@pytest.mark.timeout(120)
def test_serve_prices_an_open_position_from_the_simulators_quotes(tmp_path: Path) -> None:
    with served_system(tmp_path) as system:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        control = httpx.Client(base_url=system.simulator_url, timeout=30)
        bought = api.post(
            "/api/v1/orders/",
            json={"account": 1001, "contract_id": MNQ, "side": "buy", "type": "market", "size": 1},
            headers={"Idempotency-Key": "open"},
        )
        assert bought.status_code == 201, bought.text
        # should price the new position at the market, flat P&L (bought at 21000.00)
        row = wait_until(lambda: (p := mnq_position(api)) and p["last_price"] and p)
        assert row["last_price"] == "21000" and row["unrealized_pnl"] == "0"

        control.post("/_sim/price", json={"contractId": MNQ, "price": "21002.00"})
        # should follow the quote: 8 ticks up at 0.50 a tick
        row = wait_until(
            lambda: (p := mnq_position(api)) and p["last_price"] == "21002" and p, timeout=10
        )
        assert row["unrealized_pnl"] == "4"
        # should say the prices stand still without --price-walk (tests stay exact)
        assert control.get("/_sim/market").json()["walking"] is False
        assert "prices still" in system.output


@pytest.mark.timeout(120)
def test_serve_with_price_walk_moves_prices_by_themselves(tmp_path: Path) -> None:
    with served_system(tmp_path, "--price-walk") as system:
        control = httpx.Client(base_url=system.simulator_url, timeout=30)
        # should start the simulator's walk, so a newcomer sees quotes move
        assert control.get("/_sim/market").json()["walking"] is True
        assert "prices walk" in system.output
