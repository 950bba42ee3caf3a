"""Where two sources of truth meet: the REST answer and the hub event, a retryable and a final
outcome. Each test drives the bot API against the simulator over real sockets, with the listener
following the user hub, and puts the two sides in a chosen order with the simulator's gates
(`hold_response`), never with sleeps."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from accounts.gateway import configure_gateway, get_gateway
from accounts.services import contract_resolve
from common.locking import ADVISORY_NAMESPACE_PLACEMENT
from orders.models import Order, OrderTransition
from projectx.ratelimit import RateLimit
from tests.helpers import (
    LIMIT_BUY,
    MNQ,
    another_session,
    broker_orders,
    in_thread,
    place,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

MARKET_BUY = {**LIMIT_BUY, "type": "market", "limit_price": None}


def the_order() -> Order:
    (order,) = Order.objects.all()
    return order


def error(response) -> dict[str, Any]:
    body = response.json()
    assert set(body) >= {"error"}, body
    return body["error"]


class TestTheHubBeforeTheRestAnswer:
    def test_an_order_the_hub_opened_before_its_answer_was_lost_answers_201_open(
        self, bot, sim, listener
    ) -> None:
        listener()
        gate = sim.faults.hold_response(path="Order/place", then="lose")
        pending = in_thread(lambda: place(bot, key="hub-first"))
        gate.wait_until_acted()
        wait_for(lambda: the_order().status == "open", message="the listener to open the order")
        gate.release()
        response = pending.result(timeout=30)

        # should adopt what the hub said and answer with the order as it stands
        assert response.status_code == 201, response.json()
        assert response.json()["status"] == "open"
        # a bot that retries gets the same order; the broker holds one
        retry = place(bot, key="hub-first")
        assert retry.status_code == 201
        assert retry.json()["id"] == response.json()["id"]
        assert len(broker_orders(sim)) == 1

    def test_a_reject_the_hub_reported_first_answers_422_with_the_brokers_reason(
        self, bot, sim, listener
    ) -> None:
        listener()
        sim.faults.reject_orders(count=1, message="Insufficient funds")
        gate = sim.faults.hold_response(path="Order/place", then="answer")
        pending = in_thread(lambda: place(bot, key="rejected-first"))
        gate.wait_until_acted()
        wait_for(lambda: the_order().status == "rejected", message="the hub's reject")
        gate.release()
        response = pending.result(timeout=30)

        # should answer the definitive reject, never illegal_transition
        assert response.status_code == 422, response.json()
        assert response.json()["status"] == "rejected"
        # should keep the broker's reason from the REST answer
        assert "Insufficient funds" in response.json()["status_reason"]

    def test_a_fill_the_hub_reported_before_the_ack_answers_201_filled(
        self, bot, sim, listener
    ) -> None:
        listener()
        gate = sim.faults.hold_response(path="Order/place", then="answer")
        pending = in_thread(lambda: place(bot, MARKET_BUY, key="filled-first"))
        gate.wait_until_acted()
        wait_for(lambda: the_order().status == "filled", message="the hub's fill")
        gate.release()
        response = pending.result(timeout=30)

        assert response.status_code == 201, response.json()
        assert response.json()["status"] == "filled"
        assert response.json()["broker_order_id"] == broker_orders(sim)[0]["id"]


class TestAModifyTheBrokerAcceptedJustBeforeTheFill:
    def test_patch_answers_200_with_the_new_price_on_the_filled_order(
        self, bot, sim, listener
    ) -> None:
        listener()
        sim.set_price(MNQ, "21000.00")
        placed = place(bot, key="modify-then-fill").json()
        gate = sim.faults.hold_response(path="Order/modify", then="answer")
        pending = in_thread(
            lambda: bot.patch(
                f"/api/v1/orders/{placed['id']}/",
                {"limit_price": "21000.25"},  # marketable: it fills at once at the broker
                format="json",
                HTTP_IF_MATCH=f'"{placed["version"]}"',
            )
        )
        gate.wait_until_acted()
        wait_for(lambda: the_order().status == "filled", message="the fill at the new price")
        gate.release()
        response = pending.result(timeout=30)

        # should record the change the broker accepted and answer with the order as it stands
        assert response.status_code == 200, response.json()
        assert response.json()["status"] == "filled"
        assert response.json()["limit_price"] == "21000.25"
        assert the_order().limit_price == Decimal("21000.25")


class TestRetryableOutcomes:
    def test_a_broker_429_answers_429_with_retry_after_and_the_key_places_once_later(
        self, bot, sim
    ) -> None:
        sim.faults.rate_limit(path="Order/place", count=1, retry_after=3)
        first = place(bot, key="busy-broker")

        # should answer in the error shape with the broker's Retry-After, not as an outcome
        assert first.status_code == 429, first.json()
        assert error(first)["code"] == "broker_rate_limited"
        assert first["Retry-After"] == "3"
        assert "Idempotent-Replayed" not in first
        # the same key is free: the retry places the order, exactly once
        retry = place(bot, key="busy-broker")
        assert retry.status_code == 201, retry.json()
        assert "Idempotent-Replayed" not in retry
        again = place(bot, key="busy-broker")
        assert again["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == retry.json()["id"]
        assert len(broker_orders(sim)) == 1
        # the refused attempt is kept, audited, with why it ended
        refused = Order.objects.exclude(pk=retry.json()["id"]).get()
        assert refused.status == "rejected"
        assert "rate limit" in refused.status_reason
        assert refused.transitions.count() == refused.version - 1

    def test_our_own_rate_limiter_refusing_answers_429_and_spends_no_verification(
        self, bot, sim
    ) -> None:
        contract_resolve(contract_id=MNQ)
        normal = get_gateway().config
        # The client keeps to a limit of a few requests a minute: it will refuse to send soon.
        configure_gateway(
            dataclasses.replace(
                normal, general_rate_limit=RateLimit(max_requests=4, window_seconds=60)
            )
        )
        answers = [
            place(bot, {**LIMIT_BUY, "size": size}, key=f"limited-{size}") for size in range(1, 9)
        ]
        refused = [a for a in answers if a.status_code != 201]
        placed = [a for a in answers if a.status_code == 201]

        # should refuse in the error shape with Retry-After, nothing sent, nothing unknown
        assert refused, [a.status_code for a in answers]
        assert {a.status_code for a in refused} == {429}
        assert {error(a)["code"] for a in refused} == {"rate_limited"}
        assert all(int(a["Retry-After"]) >= 1 for a in refused)
        assert len(broker_orders(sim)) == len(placed)
        assert not Order.objects.filter(status="unknown").exists()
        assert sim.request_counts["order/search"] == 0
        # once the limit allows, the same key places exactly once
        configure_gateway(normal)
        size = len(placed) + 1
        retry = place(bot, {**LIMIT_BUY, "size": size}, key=f"limited-{size}")
        assert retry.status_code == 201, retry.json()
        assert len(broker_orders(sim)) == len(placed) + 1

    def test_a_broker_that_cannot_be_reached_answers_503_and_frees_the_key(self, bot, sim) -> None:
        contract_resolve(contract_id=MNQ)
        sim.faults.refuse_connections()
        first = place(bot, key="unreachable")

        # nothing left this process: say so, and keep the key free
        assert first.status_code == 503, first.json()
        assert error(first)["code"] == "broker_unavailable"
        assert first["Retry-After"] == "1"
        assert the_order().status == "failed"
        sim.faults.accept_connections()
        retry = place(bot, key="unreachable")
        assert retry.status_code == 201, retry.json()
        assert len(broker_orders(sim)) == 1

    def test_a_placement_turn_that_does_not_come_answers_503_and_frees_the_key(
        self, bot, sim, accounts, tune
    ) -> None:
        tune("concurrency_control", placement_turn_timeout_seconds=0.5)
        with another_session() as other_process:
            # Another process holds the account's turn (it hung mid-send).
            other_process.execute(
                "SELECT pg_advisory_lock(%s, %s)", (ADVISORY_NAMESPACE_PLACEMENT, accounts[0].pk)
            )
            first = place(bot, key="no-turn")

        assert first.status_code == 503, first.json()
        assert error(first)["code"] == "placement_queue_timeout"
        assert first["Retry-After"] == "1"
        retry = place(bot, key="no-turn")
        assert retry.status_code == 201, retry.json()
        assert len(broker_orders(sim)) == 1

    def test_one_search_answers_for_every_unknown_order_of_the_account(self, bot, sim) -> None:
        sim.faults.fail_requests(503, path="Order/place", count=5)  # unprocessed, ambiguous
        for size in range(1, 6):
            assert place(bot, {**LIMIT_BUY, "size": size}, key=f"u-{size}").status_code == 202
        searches_before = sim.request_counts["order/search"]
        call_command("verify_unknown_orders")

        # should resolve all five from one Order/search
        assert {order.status for order in Order.objects.all()} == {"failed"}
        assert sim.request_counts["order/search"] - searches_before == 1


class TestCancelSaysWhatHappened:
    def placed(self, bot) -> dict[str, Any]:
        body = place(bot, key="to-cancel").json()
        assert body["status"] == "open"
        return body

    def cancel(self, bot, body: dict[str, Any]):
        return bot.post(
            f"/api/v1/orders/{body['id']}/cancel/", HTTP_IF_MATCH=f'"{body["version"]}"'
        )

    def test_an_unconfirmed_cancel_answers_202_pending_cancel_with_the_reason(
        self, bot, sim
    ) -> None:
        body = self.placed(bot)
        sim.faults.drop_requests(path="Order/cancel", count=1)
        response = self.cancel(bot, body)

        # should not claim the order is open: the cancel's outcome is not known
        assert response.status_code == 202, response.json()
        assert response.json()["status"] == "pending_cancel"
        assert "not confirmed" in response.json()["status_reason"]

    def test_a_retried_cancel_sends_again_and_ends_cancelled(self, bot, sim) -> None:
        body = self.placed(bot)
        sim.faults.drop_requests(path="Order/cancel", count=1)
        assert self.cancel(bot, body).status_code == 202
        # the bot retries with the version it had
        retry = self.cancel(bot, body)

        assert retry.status_code == 200, retry.json()
        assert retry.json()["status"] == "cancelled"
        assert broker_orders(sim)[0]["status"] == 3  # Cancelled at the broker
        assert sim.request_counts["order/cancel"] == 2

    def test_cancelling_a_cancelled_order_again_answers_200_with_the_order(self, bot, sim) -> None:
        body = self.placed(bot)
        assert self.cancel(bot, body).json()["status"] == "cancelled"
        again = self.cancel(bot, body)

        assert again.status_code == 200, again.json()
        assert again.json()["status"] == "cancelled"

    def test_cancelling_a_filled_order_answers_409_not_cancellable(
        self, bot, sim, listener
    ) -> None:
        listener()
        placed = place(bot, MARKET_BUY, key="filled").json()
        wait_for(lambda: the_order().status == "filled", message="the market order's fill")
        response = self.cancel(bot, placed)

        assert response.status_code == 409, response.json()
        assert error(response)["code"] == "not_cancellable"
        assert response.json()["order"]["status"] == "filled"

    def test_an_unconfirmed_cancel_returns_to_open_only_after_the_cancel_timeout(
        self, bot, sim
    ) -> None:
        body = self.placed(bot)
        sim.faults.drop_requests(path="Order/cancel", count=1)
        # the look-up right after the lost answer found it working, and it stayed pending
        assert self.cancel(bot, body).status_code == 202

        # before the cancel timeout (30 s) the sweep leaves it pending: the cancel may yet land
        call_command("detect_stuck_orders", "--verify")
        assert the_order().status == "pending_cancel"

        # once the cancel timeout has passed, the sweep believes the broker's "still working"
        # (the clock is moved by dating the state's entry back, not by waiting for it)
        Order.objects.filter(pk=body["id"]).update(
            state_entered_at=timezone.now() - timedelta(seconds=31)
        )
        call_command("detect_stuck_orders", "--verify")
        order = the_order()
        # should return to working, with the reason recorded
        assert order.status == "open"
        last = OrderTransition.objects.filter(order=order).latest("version")
        assert "did not take effect" in last.reason
