"""manage.py detect_stuck_orders against the simulator: stuck orders are found, counted and
resolved from the broker's truth; what cannot be confirmed stays and alerts."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from common import metrics
from common.locking import ADVISORY_NAMESPACE_PLACEMENT
from orders.models import Order, OrderTransition
from orders.services import order_transition
from orders.stuck import BrokerReadPacer
from projectx.simulator import PlaceOrderRequest
from tests.factories import make_account, make_order
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MNQ, another_session, broker_orders, place

pytestmark = pytest.mark.postgres


def detect(*args: str) -> tuple[str, int]:
    """Run the command; returns (output, exit code)."""
    out = StringIO()
    try:
        call_command("detect_stuck_orders", *args, stdout=out)
    except SystemExit as exit_:
        return out.getvalue(), int(exit_.code or 0)
    return out.getvalue(), 0


def age(order_id: object, seconds: float) -> None:
    """Pretend the order entered its state (and was sent) `seconds` ago."""
    then = timezone.now() - timedelta(seconds=seconds)
    Order.objects.filter(pk=order_id).update(state_entered_at=then, submitted_at=then)


def stuck_count(state: str) -> float:
    return metrics.order_stuck_total.labels(state)._value.get()


def status(order_id: object) -> str:
    return Order.objects.get(pk=order_id).status


@pytest.mark.django_db
def test_it_reports_and_counts_stuck_orders_and_leaves_them_alone_without_verify() -> None:
    account = make_account()
    never_sent = make_order(account)
    age(never_sent.pk, 120)
    in_flight = make_order(account)
    order_transition(order_id=in_flight.pk, to_state="submitting", trigger="api")
    age(in_flight.pk, 5)  # under the 10 s threshold
    resting = make_order(account, type="limit")
    for state in ("submitting", "open"):
        order_transition(order_id=resting.pk, to_state=state, trigger="broker-rest")
    age(resting.pk, 3600)  # a limit order waiting for its price is not stuck
    market = make_order(account, type="market", limit_price=None)
    for state in ("submitting", "open"):
        order_transition(order_id=market.pk, to_state=state, trigger="broker-rest")
    age(market.pk, 120)  # a market order unfilled past the 60 s fill timeout is
    before = {state: stuck_count(state) for state in ("created", "open", "submitting")}

    output, code = detect()

    # should list exactly the stuck orders with their state and threshold
    assert f"{never_sent.pk} created for 120 s (threshold 60 s)" in output
    assert f"{market.pk} open for 120 s (threshold 60 s)" in output
    assert str(in_flight.pk) not in output
    assert str(resting.pk) not in output
    assert "found 2 stuck order(s): created 1, open 1; 2 still stuck" in output
    # should count them by state
    assert stuck_count("created") == before["created"] + 1
    assert stuck_count("open") == before["open"] + 1
    assert stuck_count("submitting") == before["submitting"]
    # should change nothing without --verify, and exit 0 without --fail-on-stuck
    assert status(never_sent.pk) == "created"
    assert status(market.pk) == "open"
    assert code == 0


@pytest.mark.django_db(transaction=True)
class TestResolving:
    def test_an_unknown_order_the_broker_has_is_found(self, bot, sim, contract_known) -> None:
        sim.faults.lose_response(path="Order/place", count=1)
        order_id = place(bot, key="lost-ack").json()["id"]
        age(order_id, 120)

        output, code = detect("--verify", "--fail-on-stuck")

        # should find it at the broker and adopt its state
        assert status(order_id) == "open"
        assert "unknown for 120 s (threshold 60 s): resolved, now open" in output
        # should exit 0: nothing is stuck any more
        assert code == 0

    def test_an_unknown_order_the_broker_never_saw_fails(self, bot, sim, contract_known) -> None:
        sim.faults.fail_requests(503, path="Order/place")  # unprocessed; a 5xx is ambiguous
        order_id = place(bot, key="never-arrived").json()["id"]
        sim.faults.clear()
        age(order_id, 120)

        detect("--verify")

        # should conclude absence only from a search that succeeded
        assert status(order_id) == "failed"
        assert broker_orders(sim) == []

    def test_a_submitting_order_whose_process_died_is_verified(self, accounts, sim) -> None:
        order = make_order(accounts[0], custom_tag="om-died-mid-send")
        order_transition(order_id=order.pk, to_state="submitting", trigger="api")
        # the request had reached the broker before its process died
        sim.broker.place_order(
            "demo",
            PlaceOrderRequest(
                account_id=DEMO_ACCOUNT,
                contract_id=MNQ,
                type=1,
                side=0,
                size=2,
                limit_price=Decimal("21000.25"),
                custom_tag="om-died-mid-send",
            ),
        )
        age(order.pk, 30)

        output, _ = detect("--verify")

        moves = list(
            OrderTransition.objects.filter(order=order)
            .order_by("version")
            .values_list("from_state", "to_state", "trigger")
        )
        # should declare the outcome unknown, then find the order by our tag (the broker may
        # have filled it since, which follows)
        assert moves[1:3] == [
            ("submitting", "unknown", "sweeper"),
            ("unknown", "open", "verification"),
        ]
        assert "(verification: found by custom_tag)" in output

    def test_a_submitting_order_is_left_alone_while_its_account_is_sending(
        self, accounts, sim
    ) -> None:
        order = make_order(accounts[0])
        order_transition(order_id=order.pk, to_state="submitting", trigger="api")
        age(order.pk, 30)
        # Another process holds the account's placement turn: it may be sending this order.
        with another_session() as other_process:
            other_process.execute(
                "SELECT pg_advisory_lock(%s, %s)", (ADVISORY_NAMESPACE_PLACEMENT, order.account_id)
            )
            output, code = detect("--verify", "--fail-on-stuck")

        # should not touch it, say why, and report it as still stuck
        assert status(order.pk) == "submitting"
        assert "busy" in output
        assert code == 2

    def test_a_created_order_never_sent_is_cancelled_unsent(self, accounts, sim) -> None:
        order = make_order(accounts[0])
        age(order.pk, 120)

        detect("--verify")

        # should cancel it locally and send nothing to the broker
        assert status(order.pk) == "cancelled"
        assert broker_orders(sim) == []

    def test_a_pending_cancel_the_broker_confirms_becomes_cancelled(self, bot, sim) -> None:
        body = place(bot, key="to-cancel").json()
        # our cancel reached the broker, but its confirmation never reached us
        order_transition(order_id=body["id"], to_state="pending_cancel", trigger="api")
        sim.broker.cancel_order("demo", DEMO_ACCOUNT, body["broker_order_id"])
        age(body["id"], 60)

        output, code = detect("--verify", "--fail-on-stuck")

        # should adopt the broker's confirmation
        assert status(body["id"]) == "cancelled"
        assert "pending_cancel for 60 s (threshold 30 s): resolved, now cancelled" in output
        assert code == 0

    def test_a_pending_cancel_is_never_guessed_when_the_broker_cannot_be_asked(
        self, bot, sim, caplog
    ) -> None:
        body = place(bot, key="cancel-in-the-dark").json()
        order_transition(order_id=body["id"], to_state="pending_cancel", trigger="api")
        age(body["id"], 60)
        sim.faults.refuse_connections()

        with caplog.at_level(logging.ERROR, logger="orders.stuck"):
            output, code = detect("--verify", "--fail-on-stuck")

        # should leave it pending, alert, and exit 2 so cron mails someone
        assert status(body["id"]) == "pending_cancel"
        assert "unconfirmed" in output
        assert any("ALERT" in r.message and body["id"] in r.message for r in caplog.records)
        assert code == 2

    def test_a_market_order_past_the_fill_timeout_takes_the_brokers_fills(self, bot, sim) -> None:
        # The broker filled it at once; with no listener running, we never heard.
        body = place(bot, {**LIMIT_BUY, "type": "market", "limit_price": None}).json()
        assert body["status"] == "open"
        age(body["id"], 120)

        output, _ = detect("--verify")

        order = Order.objects.get(pk=body["id"])
        # should fetch the fills the broker reports and complete the order
        assert order.status == "filled"
        assert order.filled_size == 2
        assert "open for 120 s (threshold 60 s): resolved, now filled" in output


def test_broker_reads_are_paced_to_the_configured_rate() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    pacer = BrokerReadPacer(60, sleep=sleep, clock=lambda: clock[0])
    for _ in range(3):
        pacer.take(3)  # e.g. a verification: look-up, search, fills
    pacer.take(0)  # a local cancel reads nothing
    # should space 3-read orders 3 s apart at 60 reads a minute, the first at once
    assert slept == [3.0, 3.0]
