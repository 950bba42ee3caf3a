"""Many bots, sessions and processes on the same accounts: real threads on real PostgreSQL,
against the simulator."""

from __future__ import annotations

import random
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from decimal import Decimal

import pytest
from django.db import connection
from django.db.models import Count

from accounts.gateway import configure_gateway, get_gateway
from accounts.models import Account
from fills.services import fill_apply
from orders.models import Order, OrderTransition
from orders.services import order_apply_broker_order, order_transition
from projectx.enums import OrderStatus as Broker
from projectx.ratelimit import RateLimit
from tests.factories import make_account, make_order
from tests.fills.wire import broker_order, trade
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, place

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def in_threads(count: int, work, *args) -> list:
    """Run `work(i, *args)` in `count` threads released together; close their connections."""
    barrier = threading.Barrier(count)
    results: list = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index, *args)
        except Exception as exc:  # the test inspects what happened
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


@pytest.mark.timeout(600)
def test_1000_orders_across_20_accounts_from_50_clients(bot, sim) -> None:
    configure_gateway(
        replace(
            get_gateway().config,  # the simulator is ours: lift the limit
            general_rate_limit=RateLimit(100_000, 60.0),
        )
    )
    account_ids = [2001 + n for n in range(20)]
    for account_id in account_ids:
        sim.add_account(account_id, f"PRAC-{account_id}", Decimal("50000"))
        Account.objects.create(broker_account_id=account_id, name=f"PRAC-{account_id}").members.add(
            bot.user
        )
    jobs = [(n, account_ids[n % 20]) for n in range(1000)]
    random.Random(3).shuffle(jobs)
    statuses: Counter = Counter()
    lock = threading.Lock()

    def send(job: tuple[int, int]) -> None:
        number, account_id = job
        body = {
            **LIMIT_BUY,
            "account": account_id,
            "size": 1 + number % 4,
            "limit_price": str(Decimal("20000.00") - Decimal("0.25") * (number % 400)),
        }
        try:
            status = place(bot, body, key=f"load-{number}").status_code
        finally:
            connection.close()
        with lock:
            statuses[status] += 1

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(send, jobs))

    # should accept every request and hold exactly one broker order for each
    assert statuses == {201: 1000}
    for account_id in account_ids:
        held = sim.broker.orders(account_id)
        ours = list(
            Order.objects.filter(account__broker_account_id=account_id).order_by("account_seq")
        )
        assert len(held) == len(ours) == 50
        assert len({o["customTag"] for o in held}) == 50
        # should reach the broker in the order the system accepted them (ids are sequential)
        broker_ids = [o.broker_order_id for o in ours]
        assert broker_ids == sorted(broker_ids), account_id
    # should lose no update: every version has its history row
    rows = dict(OrderTransition.objects.values_list("order").annotate(n=Count("id")))
    assert all(rows[o.pk] == o.version - 1 for o in Order.objects.all())


def test_two_writers_from_the_same_version_one_gets_412(bot, sim) -> None:
    created = place(bot, key="two-writers").json()

    def modify(index: int) -> int:
        return bot.patch(
            f"/api/v1/orders/{created['id']}/",
            {"size": 3 + index},
            format="json",
            HTTP_IF_MATCH=f'"{created["version"]}"',
        ).status_code

    # should let exactly one change through and refuse the other with 412
    assert sorted(in_threads(2, modify)) == [200, 412]
    # should have sent exactly one modify to the broker
    held = sim.broker.orders(DEMO_ACCOUNT)[0]
    assert held["size"] in {3, 4}
    assert Order.objects.get(pk=created["id"]).size == held["size"]


@pytest.mark.parametrize("attempt", range(3))
def test_a_fill_and_a_cancel_on_one_order_both_survive_in_server_time_order(attempt) -> None:
    account = make_account()
    order = make_order(account=account, size=2)
    order_transition(order_id=order.pk, to_state="submitting", trigger="api")
    order = order_transition(
        order_id=order.pk,
        to_state="open",
        trigger="broker-rest",
        changes={"broker_order_id": 880_000 + attempt},
    )
    fill = trade(
        order_id=order.broker_order_id,
        account_id=account.broker_account_id,
        size=1,
        price="100.00",
        seconds=1,
    )
    cancel = broker_order(
        order_id=order.broker_order_id,
        account_id=account.broker_account_id,
        status=Broker.CANCELLED,
        fill_volume=1,
        seconds=2,
    )
    work = [
        lambda: fill_apply(account=account, trade=fill, trigger="broker-stream"),
        lambda: order_apply_broker_order(
            order_id=order.pk, broker_order=cancel, trigger="broker-rest", reason="poller"
        ),
    ]
    if attempt % 2:
        work.reverse()
    outcomes = in_threads(2, lambda i: work[i]())
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    order.refresh_from_db()
    # should keep the fill and the cancel: cancelled (the later server time), one filled
    assert (order.status, order.filled_size) == ("cancelled", 1)
    assert order.avg_fill_price == Decimal("100")
    history = list(order.transitions.order_by("version"))
    assert len(history) == order.version - 1


@pytest.mark.timeout(120)
def test_ten_concurrent_closes_make_one_broker_close(bot, sim) -> None:
    market = {
        "account": DEMO_ACCOUNT,
        "contract_id": MNQ,
        "side": "buy",
        "type": "market",
        "size": 3,
    }
    assert place(bot, market, key="open-position").status_code == 201
    resting = place(bot, {**LIMIT_BUY, "size": 1}, key="resting").json()
    sim.faults.delay_response(1.5, path="Position/closeContract")
    during: dict = {}

    def close(index: int):
        if index == 10:  # an order on the contract while the close runs
            threading.Event().wait(0.5)
            during["order"] = place(bot, {**LIMIT_BUY, "size": 1}, key="during-close")
            return None
        return bot.post(
            "/api/v1/positions/close", {"account": DEMO_ACCOUNT, "contract_id": MNQ}, format="json"
        )

    responses = [r for r in in_threads(11, close) if r is not None]
    bodies = [r.json() for r in responses]
    # should answer every caller with the one close's result
    assert [r.status_code for r in responses] == [200] * 10, bodies
    assert len({b["id"] for b in bodies}) == 1
    assert bodies[0]["closed_size"] == 3 and bodies[0]["closed_side"] == "long"
    # should have refused the order sent during the close
    assert during["order"].status_code == 409
    assert during["order"].json()["error"]["code"] == "position_closing"
    # should have cancelled the working order and sent one close: flat, never flipped
    assert Order.objects.get(pk=resting["id"]).status == "cancelled"
    assert sim.broker.positions(DEMO_ACCOUNT) == [] or all(
        p["size"] == 0 for p in sim.broker.positions(DEMO_ACCOUNT)
    )
    sells = [t for t in sim.broker.trades(DEMO_ACCOUNT) if t["side"] == 1]
    assert [t["size"] for t in sells] == [3]
