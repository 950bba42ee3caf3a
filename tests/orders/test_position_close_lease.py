"""A position close survives the death of the process running it.

A real web process (uvicorn, as the Procfile runs it) on the test database and the simulator
starts a close and is SIGKILLed in the middle of it. The close's lease then expires, and the
next close request, or the stuck sweep, takes it over and finishes it from the broker's truth.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import PositionClose
from orders.models import Order
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, place
from tests.serving import web_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LEASE_SECONDS = 2.0
CLOSE = {"account": DEMO_ACCOUNT, "contract_id": MNQ}


def wait_for(condition: Callable[[], object], what: str, seconds: float = 20.0) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def short_lease(settings) -> None:
    """This process leases a close for LEASE_SECONDS, like the web process below."""
    control = settings.ORDER_MANAGEMENT.concurrency_control.model_copy(
        update={"position_close_lease_seconds": LEASE_SECONDS}
    )
    settings.ORDER_MANAGEMENT = settings.ORDER_MANAGEMENT.model_copy(
        update={"concurrency_control": control}
    )


@pytest.fixture
def web_process(sim, tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen, str]]]:
    """Start the web app (uvicorn, as in the Procfile) on the test database and the simulator."""
    config = (
        f"orderManagement:\n  concurrencyControl:\n    positionCloseLeaseSeconds: {LEASE_SECONDS}\n"
    )
    with web_processes(sim, connection.settings_dict, tmp_path, config=config) as start:
        yield start


def broker_is_flat(sim) -> bool:
    return all(p["size"] == 0 for p in sim.broker.positions(DEMO_ACCOUNT))


def working_at_broker(sim) -> list[dict]:
    return [o for o in sim.broker.open_orders(DEMO_ACCOUNT) if o["contractId"] == MNQ]


@pytest.fixture
def close_killed_mid_way(bot, sim, web_process) -> dict:
    """A long position of 3 and a resting order; a web process starts closing the position and
    is SIGKILLed while the broker holds the answer to its cancel of the resting order."""
    market = {**LIMIT_BUY, "type": "market", "size": 3, "limit_price": None}
    assert place(bot, market, key="open-position").status_code == 201
    resting = place(bot, {**LIMIT_BUY, "size": 1}, key="resting").json()
    process, url = web_process()
    # The broker cancels at once but answers only after a minute: the kill lands mid-close.
    sim.faults.delay_response(60, path="Order/cancel")

    def close_over_http() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the process dies under this request
            httpx.post(
                f"{url}/api/v1/positions/close", json=CLOSE, headers=bot.auth_headers, timeout=90
            )

    caller = threading.Thread(target=close_over_http, daemon=True)
    caller.start()
    wait_for(
        lambda: Order.objects.get(pk=resting["id"]).status == "pending_cancel",
        "the dying process to send its cancel",
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    caller.join(timeout=10)
    close = PositionClose.objects.get()
    # The crash leaves the close in progress, the position open, the order pending_cancel.
    assert close.state == "in_progress"
    assert not broker_is_flat(sim)
    return {"close_id": close.pk, "resting_id": resting["id"]}


@pytest.mark.timeout(120)
def test_a_close_whose_process_died_is_taken_over_and_finished_from_broker_truth(
    bot, sim, close_killed_mid_way, short_lease
) -> None:
    response = bot.post("/api/v1/positions/close", CLOSE, format="json")
    body = response.json()
    # should take the dead close over once its lease expired and finish it: 200, the same close
    assert response.status_code == 200, body
    assert body["id"] == close_killed_mid_way["close_id"]
    assert body["state"] == "done"
    assert (body["closed_size"], body["closed_side"]) == (3, "long")
    # should leave the broker flat with nothing working, and our order cancelled, not pending
    assert broker_is_flat(sim)
    assert working_at_broker(sim) == []
    assert Order.objects.get(pk=close_killed_mid_way["resting_id"]).status == "cancelled"
    sells = [t for t in sim.broker.trades(DEMO_ACCOUNT) if t["side"] == 1]
    assert [t["size"] for t in sells] == [3]
    # should accept new orders on the contract again
    assert place(bot, {**LIMIT_BUY, "size": 1}, key="after-close").status_code == 201


def detect(*args: str) -> str:
    out = StringIO()
    with contextlib.suppress(SystemExit):  # --fail-on-stuck is not used here
        call_command("detect_stuck_orders", *args, stdout=out)
    return out.getvalue()


@pytest.mark.timeout(120)
def test_the_stuck_sweep_reports_and_repairs_a_close_whose_process_died(
    bot, sim, close_killed_mid_way, short_lease
) -> None:
    close_id = close_killed_mid_way["close_id"]
    # should report the close once its lease expired, naming it and the step it died in
    report = wait_for(
        lambda: (out := detect()) and f"close {close_id}" in out and out, "the sweep to report it"
    )
    assert "lease expired" in str(report) and "cancelling_orders" in str(report), report
    # while it is expired, new orders on the contract are not refused
    assert place(bot, {**LIMIT_BUY, "size": 1}, key="while-expired").status_code == 201

    repaired = detect("--verify")
    close = PositionClose.objects.get(pk=close_id)
    # should take the close over and finish it: done, flat, nothing working at the broker
    assert close.state == "done", repaired
    assert f"close {close_id}" in repaired and "done" in repaired
    assert broker_is_flat(sim)
    assert working_at_broker(sim) == []
    # should report nothing afterwards
    assert f"close {close_id}" not in detect()


@pytest.mark.timeout(60)
def test_a_close_still_in_progress_elsewhere_answers_409_in_the_error_shape(
    bot, sim, settings
) -> None:
    control = settings.ORDER_MANAGEMENT.concurrency_control.model_copy(
        update={"position_close_timeout_seconds": 1.0}
    )
    settings.ORDER_MANAGEMENT = settings.ORDER_MANAGEMENT.model_copy(
        update={"concurrency_control": control}
    )
    # Another process is closing (its lease is fresh) and does not finish within the wait.
    PositionClose.objects.create(
        account=bot.user.trading_accounts.get(),
        contract_id=MNQ,
        requested_by="other-bot",
        owner="web-2:4242:alive",
        lease_expires_at=timezone.now() + timedelta(seconds=60),
    )
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=bot.auth_headers["Authorization"])
    started = time.monotonic()
    response = client.post("/api/v1/positions/close", CLOSE, format="json")
    # should answer after a bounded wait, in the error shape, with when to retry
    assert time.monotonic() - started < 10
    assert response.status_code == 409, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "close_in_progress"
    assert 50 <= int(response["Retry-After"]) <= 60  # when the live owner's lease runs out
    # should have left the other process's close alone
    assert PositionClose.objects.get().owner == "web-2:4242:alive"


@pytest.mark.timeout(60)
def test_a_close_the_broker_cannot_finish_answers_503_in_the_error_shape(bot, sim) -> None:
    assert place(bot, {**LIMIT_BUY, "type": "market", "limit_price": None}).status_code == 201
    sim.faults.fail_requests(500, path="Position/closeContract", count=None)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=bot.auth_headers["Authorization"])
    response = client.post("/api/v1/positions/close", CLOSE, format="json")
    # should say the close failed, in the error shape, with the close and when to retry
    assert response.status_code == 503, response.content[:300]
    assert response.json()["error"]["code"] == "close_failed"
    assert response.json()["close"]["state"] == "failed"
    assert int(response["Retry-After"]) >= 1


@pytest.mark.timeout(60)
def test_concurrent_requests_on_a_dead_close_take_it_over_once(bot, sim) -> None:
    market = {**LIMIT_BUY, "type": "market", "size": 3, "limit_price": None}
    assert place(bot, market, key="open-position").status_code == 201
    dead = PositionClose.objects.create(
        account=bot.user.trading_accounts.get(),
        contract_id=MNQ,
        owner="web-1:999:dead",
        lease_expires_at=timezone.now() - timedelta(seconds=1),
        step="closing_position",
    )
    sim.faults.delay_response(0.5, path="Position/closeContract")
    barrier = threading.Barrier(5)
    responses: list = []

    def close() -> None:
        try:
            barrier.wait(timeout=10)
            responses.append(bot.post("/api/v1/positions/close", CLOSE, format="json"))
        finally:
            connection.close()

    threads = [threading.Thread(target=close) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # should answer all with the one close, taken over by exactly one of them
    assert [r.status_code for r in responses] == [200] * 5, [r.json() for r in responses]
    assert {r.json()["id"] for r in responses} == {dead.pk}
    assert PositionClose.objects.get().attempts == 2
    sells = [t for t in sim.broker.trades(DEMO_ACCOUNT) if t["side"] == 1]
    assert [t["size"] for t in sells] == [3]
    assert broker_is_flat(sim)
