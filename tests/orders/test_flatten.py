"""The kill switch, POST /api/v1/accounts/{id}/flatten, over the simulator on PostgreSQL: it
halts the account, cancels every working order, closes every position, and answers when the
broker shows the account flat; concurrent calls join one run; a run whose web process was
killed mid-way is taken over and finished by the next call."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import call_command
from django.db import connection

from accounts.models import AccountAudit, AccountFlatten
from orders.models import Order
from tests.helpers import DEMO_ACCOUNT, MARKET_BUY, MNQ, place, wait_for
from tests.serving import web_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MES = "CON.F.US.MES.Z26"
FLATTEN = f"/api/v1/accounts/{DEMO_ACCOUNT}/flatten"
LEASE_SECONDS = 2.0


def working_at_broker(sim) -> list[dict]:
    return sim.broker.open_orders(DEMO_ACCOUNT)


def open_at_broker(sim) -> dict[str, int]:
    return {p["contractId"]: p["size"] for p in sim.broker.positions(DEMO_ACCOUNT) if p["size"]}


@pytest.fixture
def two_contracts(bot, sim, listener) -> dict[str, str]:
    """Long 2 MNQ, short 1 MES, and a resting order on each contract; the listener running."""
    listener()
    sim.set_price(MNQ, Decimal("21000.00"))
    sim.set_price(MES, Decimal("6000.00"))
    assert place(bot, {**MARKET_BUY, "size": 2}, key="long-mnq").status_code == 201
    short = {**MARKET_BUY, "contract_id": MES, "side": "sell", "size": 1}
    assert place(bot, short, key="short-mes").status_code == 201
    rest_mnq = {**MARKET_BUY, "type": "limit", "limit_price": "20000.00", "size": 1}
    rest_mes = {**MARKET_BUY, "contract_id": MES, "side": "sell", "type": "limit"}
    resting = {
        "mnq": place(bot, rest_mnq, key="rest-mnq").json()["id"],
        "mes": place(bot, {**rest_mes, "limit_price": "6100.00"}, key="rest-mes").json()["id"],
    }
    assert open_at_broker(sim) == {MNQ: 2, MES: 1}
    assert len(working_at_broker(sim)) == 2
    wait_for(
        lambda: Order.objects.filter(status="filled").count() == 2, message="the fills applied"
    )
    return resting


def assert_flat_and_halted(bot, sim, body: dict, resting: dict[str, str]) -> None:
    # should answer flat, with what it cancelled and what it closed
    assert body["status"] == "flat", body
    assert sorted(e["order"] for e in body["cancelled"]) == sorted(resting.values())
    assert sorted((c["contract_id"], c["side"], c["size"]) for c in body["closed"]) == [
        (MES, "short", 1),
        (MNQ, "long", 2),
    ]
    # should leave the broker flat with nothing working
    assert open_at_broker(sim) == {}
    assert working_at_broker(sim) == []
    # the account is halted: new orders are refused until it is resumed
    assert bot.get("/api/v1/accounts/").json()[0]["trading_state"] == "halted"
    refused = place(bot, {**MARKET_BUY, "size": 1}, key="after-flatten")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "account_halted"


@pytest.mark.timeout(120)
def test_flatten_cancels_and_closes_everything_on_two_contracts(bot, sim, two_contracts) -> None:
    response = bot.post(FLATTEN)
    assert response.status_code == 200, response.content
    assert_flat_and_halted(bot, sim, response.json(), two_contracts)
    # our resting orders end cancelled
    wait_for(
        lambda: (
            set(
                Order.objects.filter(pk__in=two_contracts.values()).values_list("status", flat=True)
            )
            == {"cancelled"}
        ),
        message="the resting orders cancelled",
    )
    # every step is audited with the actor
    steps = list(
        AccountAudit.objects.filter(action="flatten_step")
        .order_by("id")
        .values_list("to_state", "actor")
    )
    assert [s for s, _ in steps[:6]] == [
        "halting",
        "settling_orders",
        "cancelling_orders",
        "confirming_cancels",
        "closing_positions",
        "confirming_flat",
    ]
    assert {actor for _, actor in steps} == {"bot-1"}


@pytest.mark.timeout(120)
def test_two_concurrent_flattens_join_one_run(bot, sim, two_contracts) -> None:
    barrier = threading.Barrier(2)
    bodies: list[dict | None] = [None, None]

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            response = bot.post(FLATTEN)
            assert response.status_code == 200, response.content
            bodies[index] = response.json()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    first, second = bodies
    assert first is not None and second is not None
    # should be one run, answered to both
    assert AccountFlatten.objects.count() == 1
    assert first["id"] == second["id"]
    assert first["status"] == second["status"] == "flat"
    assert_flat_and_halted(bot, sim, first, two_contracts)
    # each position was closed once: one closing trade per contract
    closing = [
        (t["contractId"], t["size"])
        for t in sim.broker.trades(DEMO_ACCOUNT)
        if (t["contractId"] == MNQ and t["side"] == 1)
        or (t["contractId"] == MES and t["side"] == 0)
    ]
    assert sorted(closing) == [(MES, 1), (MNQ, 2)]


@pytest.mark.timeout(120)
def test_flatten_cancels_a_bracket_groups_children_and_closes_its_position(
    bot, sim, listener
) -> None:
    listener()
    sim.set_price(MNQ, Decimal("21000.00"))
    bracketed = {**MARKET_BUY, "size": 2, "stop_loss_ticks": 8, "take_profit_ticks": 12}
    entry = place(bot, bracketed, key="entry").json()["id"]

    def legs() -> list[Order]:
        return list(Order.objects.filter(bracket_parent_id=entry).exclude(broker_order_id=None))

    wait_for(
        lambda: len(legs()) == 2 and all(leg.status == "open" for leg in legs()),
        message="both legs working",
    )
    body = bot.post(FLATTEN).json()
    # should cancel both children (the entry had filled) and close the position they protected
    assert body["status"] == "flat", body
    assert sorted(e["order"] for e in body["cancelled"]) == sorted(str(leg.pk) for leg in legs())
    assert body["closed"] == [{"contract_id": MNQ, "side": "long", "size": 2}]
    assert working_at_broker(sim) == [] and open_at_broker(sim) == {}
    wait_for(lambda: {leg.status for leg in legs()} == {"cancelled"}, message="legs cancelled")


# --- A web process killed in the middle of a flatten --------------------------------------


def poll(condition: Callable[[], object], what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def web_process(sim, tmp_path: Path) -> Iterator[Callable[[], tuple[subprocess.Popen, str]]]:
    """The web app (uvicorn, as in the Procfile) on the test database and the simulator, with
    a short flatten lease."""
    config = f"orderManagement:\n  risk:\n    flattenLeaseSeconds: {LEASE_SECONDS}\n"
    with web_processes(sim, connection.settings_dict, tmp_path, config=config) as start:
        yield start


@pytest.fixture
def flatten_killed_mid_way(bot, sim, two_contracts, web_process, tune) -> AccountFlatten:
    """A web process starts flattening and is SIGKILLed after the halt, between its cancels."""
    tune("risk", flatten_lease_seconds=LEASE_SECONDS)
    process, url = web_process()
    # The broker cancels the first order at once but answers only after a minute: the kill
    # lands after the halt, in the middle of the cancels.
    sim.faults.delay_response(60, path="Order/cancel")

    def flatten_over_http() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the process dies under this request
            httpx.post(f"{url}{FLATTEN}", headers=bot.auth_headers, timeout=90)

    caller = threading.Thread(target=flatten_over_http, daemon=True)
    caller.start()
    # (The listener may apply the broker's cancel before we look: cancelled counts too.)
    poll(
        lambda: Order.objects.filter(
            pk__in=two_contracts.values(), status__in=["pending_cancel", "cancelled"]
        ).exists(),
        "the dying process to send its first cancel",
    )
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    caller.join(timeout=10)
    run = AccountFlatten.objects.get()
    # The crash leaves the run in progress, the account halted, both positions open.
    assert run.state == "in_progress" and run.step == "cancelling_orders"
    assert open_at_broker(sim) == {MNQ: 2, MES: 1}
    return run


def assert_finished_after_the_crash(bot, sim, body: dict, resting: dict[str, str]) -> None:
    assert body["attempts"] == 2
    assert body["state"] == "done"
    assert_flat_and_halted(bot, sim, body, resting)
    assert AccountAudit.objects.filter(reason__contains="taken over").count() == 1
    # both resting orders end cancelled, the one whose cancel answer was lost included
    wait_for(
        lambda: (
            set(Order.objects.filter(pk__in=resting.values()).values_list("status", flat=True))
            == {"cancelled"}
        ),
        message="both resting orders cancelled",
    )


@pytest.mark.timeout(180)
def test_a_flatten_whose_process_was_killed_is_finished_by_the_next_call(
    bot, sim, two_contracts, flatten_killed_mid_way
) -> None:
    response = bot.post(FLATTEN)
    assert response.status_code == 200, response.content
    body = response.json()
    # should take the dead run over (the same run, a second attempt) and finish it
    assert body["id"] == flatten_killed_mid_way.pk
    assert_finished_after_the_crash(bot, sim, body, two_contracts)


@pytest.mark.timeout(180)
def test_the_stuck_sweep_reports_and_finishes_a_flatten_whose_process_was_killed(
    bot, sim, two_contracts, flatten_killed_mid_way
) -> None:
    run_id = flatten_killed_mid_way.pk

    def detect(*args: str) -> str:
        out = StringIO()
        with contextlib.suppress(SystemExit):
            call_command("detect_stuck_orders", *args, stdout=out)
        return out.getvalue()

    # should report the run once its lease expired, naming the step it died in
    wait_for(lambda: f"flatten {run_id} of account" in detect(), timeout=20, message="the report")
    assert "cancelling_orders" in detect()
    repaired = detect("--verify")
    # should take it over and finish it: the same answer a call would have had
    assert f"flatten {run_id}" in repaired and "done, flat" in repaired, repaired
    run = AccountFlatten.objects.get(pk=run_id)
    body = {
        "status": "flat" if run.status == "flat" else "pending",
        "cancelled": run.cancelled,
        "closed": run.closed,
        "attempts": run.attempts,
        "state": run.state,
    }
    assert_finished_after_the_crash(bot, sim, body, two_contracts)
    assert f"flatten {run_id}" not in detect()
