"""Placements wait for a slot of their web process (common/admission.py), through uvicorn as the
Procfile runs it: a placement whose broker call hangs gives its slot to the next, and an
account whose line at the gate is full is answered 429 at once, with nothing stored or sent."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.db import connection

from accounts.models import Contract
from orders.models import Order
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, OTHER_ACCOUNT, in_thread, wait_for
from tests.serving import web_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

ONE_SLOT = """\
orderManagement:
  concurrencyControl:
    placementSlotsPerProcess: 1
    maxQueueDepthPerAccount: 1
"""


def place(url: str, bot, account: int, key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/api/v1/orders/",
        json={**LIMIT_BUY, "account": account},
        headers={**bot.auth_headers, "Idempotency-Key": key},
        timeout=10,
    )


def admission_waits(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("placement_admission_waits_total "):
            return float(line.split()[1])
    return 0.0


@pytest.fixture
def both_accounts(bot, accounts):
    accounts[1].members.add(bot.user)
    # Known already (as after the first order): the first broker call is the placement's own.
    Contract.objects.create(
        contract_id=MNQ, name="MNQZ6", tick_size=Decimal("0.25"), tick_value=Decimal("0.50")
    )
    return bot


def test_a_placement_hung_at_the_broker_gives_its_slot_to_the_next(
    both_accounts, sim, tmp_path: Path
) -> None:
    bot = both_accounts
    hung = sim.faults.hold_response(path="Order/place")
    with web_processes(sim, connection.settings_dict, tmp_path, config=ONE_SLOT) as start_web:
        _, url = start_web()
        first = in_thread(lambda: place(url, bot, DEMO_ACCOUNT, "admit-hung"))
        hung.wait_until_acted()
        # The only slot's holder waits for an answer the broker holds back.
        other = place(url, bot, OTHER_ACCOUNT, "admit-other")
        # Should: the other account's placement is admitted and placed while the first still
        # waits (without stepping aside it would wait for the first's 15 s client timeout).
        assert other.status_code == 201, other.text
        assert not first.done()
        assert "admission;dur=" in other.headers["Server-Timing"]
        hung.release()
        answered = first.result(timeout=30)

    assert answered.status_code == 201, answered.text
    assert len(sim.broker.orders(DEMO_ACCOUNT)) == 1
    assert len(sim.broker.orders(OTHER_ACCOUNT)) == 1


def test_a_full_line_is_answered_429_at_once_with_nothing_stored_or_sent(
    both_accounts, sim, tmp_path: Path
) -> None:
    bot = both_accounts
    # The first placement holds the only slot while its broker call waits to be written (the
    # gateway's login is held): it does not step aside, its call is not out yet.
    login = sim.faults.hold_response(path="Auth/loginKey")
    with web_processes(sim, connection.settings_dict, tmp_path, config=ONE_SLOT) as start_web:
        _, url = start_web()
        first = in_thread(lambda: place(url, bot, DEMO_ACCOUNT, "line-first"))
        login.wait_until_acted()
        waiting = in_thread(lambda: place(url, bot, OTHER_ACCOUNT, "line-waiting"))
        wait_for(
            lambda: admission_waits(url) >= 1,
            timeout=20,
            message="the second placement to wait for a slot",
        )
        refused = place(url, bot, OTHER_ACCOUNT, "line-refused")
        # Should: the line (one request long) is full, so the answer comes at once.
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "placement_queue_full"
        assert refused.headers["Retry-After"] == "1"
        assert not waiting.done()
        login.release()
        answers = [first.result(timeout=30), waiting.result(timeout=30)]

    assert [answer.status_code for answer in answers] == [201, 201], [a.text for a in answers]
    assert not Order.objects.filter(idempotency_key__endswith="line-refused").exists()
    assert Order.objects.filter(account__broker_account_id=OTHER_ACCOUNT).count() == 1
    assert len(sim.broker.orders(OTHER_ACCOUNT)) == 1


def test_a_placement_the_gate_cannot_read_is_answered_by_the_api_as_usual(
    both_accounts, sim, tmp_path: Path
) -> None:
    bot = both_accounts
    with web_processes(sim, connection.settings_dict, tmp_path, config=ONE_SLOT) as start_web:
        _, url = start_web()
        answers = [
            httpx.post(
                f"{url}/api/v1/orders/",
                content=body,
                headers={**bot.auth_headers, "Content-Type": "application/json"},
                timeout=10,
            )
            for body in (b"{not json", b'["a list"]', b'{"account": [1001]}')
        ]

    # Should: each waits in its caller's line of unreadable bodies, then gets the API's own
    # answer in the one error shape; the gate neither refuses nor fails them.
    assert [answer.status_code for answer in answers] == [400, 400, 400], [
        answer.text for answer in answers
    ]
    codes = [answer.json()["error"]["code"] for answer in answers]
    assert codes == ["parse_error", "invalid_request", "invalid_request"]
    assert not Order.objects.exists()
