"""A web process whose database connections are all held by placements waiting for the broker
still gets its broker session: the gateway's own reads and writes of the shared token never
wait in the requests' connection pool.

Found by `bench/place_orders.py` (spread): 100 clients on 20 accounts held every pooled
connection (turn holders waiting for their broker call, one waiter per account at PostgreSQL),
while the gateway, loading its first token, waited for a connection too, until the pool's
10 s timeout; the machine sat idle for those seconds, and requests were answered 503.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from django.db import connection

from accounts.models import Contract
from orders.models import Order, OrderStatus
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, OTHER_ACCOUNT
from tests.serving import web_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

POOL_SIZE = 2
PLACEMENTS_PER_ACCOUNT = 3  # after the first


def poll(condition: Callable[[], object], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def connections_held_by_placements(database: str) -> int:
    """Connections of the web process held by placements that cannot move on: turn holders
    (their order is `submitting`, sent once the gateway has a token) and waiters for an
    account's turn at PostgreSQL."""
    submitting = Order.objects.filter(status=OrderStatus.SUBMITTING).count()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
            "application_name = 'ordermgmt' AND wait_event_type = 'Lock' AND "
            "wait_event = 'advisory'",
            [database],
        )
        (waiting,) = cursor.fetchone()
    return submitting + waiting


def test_placements_holding_every_pooled_connection_do_not_starve_the_broker_login(
    bot, accounts, sim, tmp_path: Path
) -> None:
    accounts[1].members.add(bot.user)
    # The contract is known already (as after the first order): the first broker call is the
    # placement's own.
    Contract.objects.create(
        contract_id=MNQ, name="MNQZ6", tick_size=Decimal("0.25"), tick_value=Decimal("0.50")
    )
    database = connection.settings_dict
    # No token is stored yet: the first placement's broker call logs in, and the broker holds
    # the login's answer until every pooled connection is taken by a placement that waits.
    login = sim.faults.hold_response(path="Auth/loginKey")
    answers: list[tuple[int, float]] = []
    with web_processes(sim, database, tmp_path, DATABASE_POOL_MAX_SIZE=str(POOL_SIZE)) as start_web:
        _, url = start_web()

        def place(account: int, n: int) -> None:
            response = httpx.post(
                f"{url}/api/v1/orders/",
                json={**LIMIT_BUY, "account": account},
                headers={**bot.auth_headers, "Idempotency-Key": f"pool-{account}-{n}"},
                timeout=60,
            )
            answers.append((response.status_code, time.monotonic()))

        # The first placement takes its account's turn and asks for the login, which the
        # broker holds; the others then fill the pool: the second account's first placement
        # holds its turn, the first account's next ones wait for theirs at PostgreSQL.
        first = threading.Thread(target=place, args=(DEMO_ACCOUNT, 0), daemon=True)
        first.start()
        login.wait_until_acted()
        callers = [first] + [
            threading.Thread(target=place, args=(account, n), daemon=True)
            for account in (DEMO_ACCOUNT, OTHER_ACCOUNT)
            for n in range(1, PLACEMENTS_PER_ACCOUNT + 1)
        ]
        for caller in callers[1:]:
            caller.start()
        poll(
            lambda: connections_held_by_placements(database["NAME"]) >= POOL_SIZE,
            "the placements to hold every pooled connection",
        )
        released_at = time.monotonic()
        login.release()
        for caller in callers:
            caller.join(timeout=30)

    # Should: every placement is placed, and soon after the login answers: the pool's own
    # timeout (10 s) is not what ends the wait.
    assert sorted(status for status, _ in answers) == [201] * len(callers)
    assert max(at for _, at in answers) - released_at < 5.0
    assert len(sim.broker.orders(DEMO_ACCOUNT)) == PLACEMENTS_PER_ACCOUNT + 1
    assert len(sim.broker.orders(OTHER_ACCOUNT)) == PLACEMENTS_PER_ACCOUNT
