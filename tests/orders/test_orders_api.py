"""The bot API against the simulator over real sockets."""

from __future__ import annotations

from decimal import Decimal

import pytest

from orders.models import Order
from orders.verification import Outcome, order_verify
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, broker_orders, place


@pytest.mark.django_db(transaction=True)
class TestPlacing:
    def test_an_accepted_order_is_201_with_etag_and_location(self, bot, sim) -> None:
        response = place(bot, key="k-accept")
        body = response.json()
        # should answer 201 with the order open at the broker, its version and its address
        assert response.status_code == 201, body
        assert body["status"] == "open"
        assert body["broker_order_id"] is not None
        assert body["limit_price"] == "20000.25"
        assert body["remaining_size"] == 2
        assert response["ETag"] == f'"{body["version"]}"'
        assert response["Location"].endswith(f"/api/v1/orders/{body['id']}/")
        # should have sent our key's digest as the broker's customTag
        (held,) = broker_orders(sim)
        assert held["customTag"] == body["custom_tag"]

    def test_a_rejected_order_is_422_with_the_brokers_message(self, bot, sim) -> None:
        sim.faults.reject_orders(count=1, error_code=3, message="Insufficient funds")
        response = place(bot, key="k-reject")
        # should answer 422 with the order rejected and the broker's reason
        assert response.status_code == 422
        assert response.json()["status"] == "rejected"
        assert "Insufficient funds" in response.json()["status_reason"]

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"size": "two"}, "size"),
            ({"size": 0}, "size"),
            ({"limit_price": None}, "limit_price"),
            ({"limit_price": "20000.10"}, "limit_price"),  # MNQ ticks are 0.25
            ({"limit_price": 20000.25}, "limit_price"),  # a JSON float
            ({"account": 999_999}, "account"),
            ({"side": "long"}, "side"),
            ({"type": "iceberg"}, "type"),
            ({"contract_id": "CON.F.US.NOPE.Z26"}, "contract_id"),
            ({"stop_price": "20000.00"}, "stop_price"),  # a limit order takes no stop price
        ],
    )
    def test_bad_input_is_400_naming_the_field(self, bot, sim, change, field) -> None:
        response = place(bot, {**LIMIT_BUY, **change})
        error = response.json()["error"]
        # should refuse with the one error shape, naming the bad field, and send nothing
        assert response.status_code == 400, response.json()
        assert field in error["fields"]
        assert broker_orders(sim) == []
        assert not Order.objects.exists()

    def test_a_bad_idempotency_key_is_400(self, bot, sim) -> None:
        response = place(bot, key="x" * 256)
        # should name the header
        assert response.status_code == 400
        assert "Idempotency-Key" in response.json()["error"]["fields"]


@pytest.mark.django_db(transaction=True)
class TestIdempotency:
    def test_the_same_key_and_order_replays_the_first_response(self, bot, sim) -> None:
        first = place(bot, key="retry-me")
        second = place(bot, key="retry-me")
        # should replay the stored response, say so, and leave one order at the broker
        assert second.status_code == first.status_code == 201
        assert second.json() == first.json()
        assert second["Idempotent-Replayed"] == "true"
        assert len(broker_orders(sim)) == 1

    def test_the_same_key_with_another_order_is_422_and_sends_nothing(self, bot, sim) -> None:
        place(bot, key="one-order")
        response = place(bot, {**LIMIT_BUY, "size": 3}, key="one-order")
        # should refuse the different payload and change nothing
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "idempotency_key_reused"
        assert len(broker_orders(sim)) == 1
        assert Order.objects.count() == 1

    def test_without_a_key_an_identical_order_within_the_bucket_is_a_retry(self, bot, sim) -> None:
        first = place(bot)
        second = place(bot)
        # should derive the same key and replay instead of placing twice
        assert second["Idempotent-Replayed"] == "true"
        assert second.json()["id"] == first.json()["id"]
        assert len(broker_orders(sim)) == 1

    def test_a_lost_ack_is_202_unknown_and_verification_finds_the_order(self, bot, sim) -> None:
        sim.faults.lose_response(path="Order/place", count=1)
        first = place(bot, key="lost-ack")
        # should answer 202 with the order unknown: the broker may have it
        assert first.status_code == 202
        assert first.json()["status"] == "unknown"
        retry = place(bot, key="lost-ack")
        # should give the retrying bot the same order, not a second one
        assert retry.json()["id"] == first.json()["id"]
        assert retry["Idempotent-Replayed"] == "true"

        result = order_verify(order_id=first.json()["id"])
        # should find it by customTag and move it to the broker's state
        assert result.outcome == Outcome.FOUND
        assert result.rule == "custom_tag"
        assert result.order.status == "open"
        (held,) = broker_orders(sim)
        assert result.order.broker_order_id == held["id"]


@pytest.mark.django_db(transaction=True)
class TestVisibility:
    def test_another_accounts_order_is_404(self, bot, outsider, sim) -> None:
        order_id = place(bot, key="mine").json()["id"]
        # should hide the order from a bot without the account, as if it did not exist
        assert outsider.get(f"/api/v1/orders/{order_id}/").status_code == 404
        assert outsider.post(f"/api/v1/orders/{order_id}/cancel/").status_code == 404
        assert outsider.get("/api/v1/orders/").json()["results"] == []
        # should refuse to place on an account the bot was not granted
        assert place(outsider, key="steal").status_code == 400

    def test_accounts_lists_only_granted_accounts(self, bot, sim) -> None:
        accounts = bot.get("/api/v1/accounts/").json()
        # should list the bot's one account
        assert [a["id"] for a in accounts] == [DEMO_ACCOUNT]

    def test_anonymous_requests_are_401_in_the_error_shape(self, sim, db) -> None:
        from rest_framework.test import APIClient

        response = APIClient().get("/api/v1/orders/")
        # should refuse without a token, in the one error shape
        assert response.status_code == 401
        assert set(response.json()["error"]) >= {"code", "message"}


@pytest.mark.django_db(transaction=True)
class TestWorkingOrders:
    def test_cancel_reaches_the_broker_and_the_order_ends_cancelled(self, bot, sim) -> None:
        created = place(bot, key="to-cancel").json()
        response = bot.post(
            f"/api/v1/orders/{created['id']}/cancel/", HTTP_IF_MATCH=f'"{created["version"]}"'
        )
        # should cancel at the broker and report the broker's final state
        assert response.status_code == 200, response.json()
        assert response.json()["status"] == "cancelled"
        assert broker_orders(sim)[0]["status"] == 3  # Cancelled

    def test_modify_changes_size_and_price_at_the_broker(self, bot, sim) -> None:
        created = place(bot, key="to-modify").json()
        response = bot.patch(
            f"/api/v1/orders/{created['id']}/",
            {"size": 3, "limit_price": "20000.50"},
            format="json",
            HTTP_IF_MATCH=f'"{created["version"]}"',
        )
        # should change the order at the broker and here; the request (which claims the
        # version) and the change are both recorded, each a version
        assert response.status_code == 200, response.json()
        assert response.json()["size"] == 3
        assert response.json()["version"] == created["version"] + 2
        held = broker_orders(sim)[0]
        assert (held["size"], Decimal(str(held["limitPrice"]))) == (3, Decimal("20000.50"))

    def test_a_stale_if_match_is_412_with_the_current_order(self, bot, sim) -> None:
        created = place(bot, key="stale").json()
        response = bot.post(
            f"/api/v1/orders/{created['id']}/cancel/", HTTP_IF_MATCH=f'"{created["version"] - 1}"'
        )
        # should refuse and hand back the order as it is now
        assert response.status_code == 412
        assert response.json()["order"]["version"] == created["version"]

    def test_transitions_tell_the_orders_story(self, bot, sim) -> None:
        created = place(bot, key="story").json()
        rows = bot.get(f"/api/v1/orders/{created['id']}/transitions/").json()
        # should list every move in order, with the trigger
        assert [(r["from_state"], r["to_state"]) for r in rows] == [
            ("created", "submitting"),
            ("submitting", "open"),
        ]
        assert bot.get(f"/api/v1/orders/{created['id']}/fills/").json() == []

    def test_list_filters_by_status(self, bot, sim) -> None:
        place(bot, key="a")
        sim.faults.reject_orders(count=1, error_code=2, message="no")
        place(bot, {**LIMIT_BUY, "size": 1}, key="b")
        rejected = bot.get("/api/v1/orders/?status=rejected").json()["results"]
        # should return only the orders in the asked state
        assert [o["size"] for o in rejected] == [1]


@pytest.mark.django_db(transaction=True)
def test_the_schema_and_docs_are_served_without_a_cdn(bot, sim) -> None:
    schema = bot.get("/api/schema/")
    docs = bot.get("/api/docs/")
    # should serve the OpenAPI schema and a docs page whose assets are local
    assert schema.status_code == 200
    assert b"/api/v1/orders/" in schema.content
    assert docs.status_code == 200
    assert b"cdn.jsdelivr" not in docs.content and b"unpkg.com" not in docs.content


@pytest.mark.django_db(transaction=True)
def test_a_bot_over_its_rate_gets_429_with_retry_after(bot, outsider, sim, monkeypatch) -> None:
    from api.throttling import PerTokenRateThrottle

    monkeypatch.setattr(PerTokenRateThrottle, "THROTTLE_RATES", {"user": "3/min"})
    answers = [bot.get("/api/v1/orders/") for _ in range(4)]
    # should serve the first three and refuse the fourth with a wait in seconds
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert int(answers[-1]["Retry-After"]) > 0
    assert answers[-1].json()["error"]["code"] == "throttled"
    # should count per token: another bot is not slowed by this one
    assert outsider.get("/api/v1/orders/").status_code == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("method", ["patch", "cancel"])
def test_a_change_without_if_match_is_428(bot, sim, method) -> None:
    created = place(bot, key=f"no-if-match-{method}").json()
    if method == "patch":
        response = bot.patch(f"/api/v1/orders/{created['id']}/", {"size": 3}, format="json")
    else:
        response = bot.post(f"/api/v1/orders/{created['id']}/cancel/")
    # should refuse a change that does not say which version it applies to, and change nothing
    assert response.status_code == 428
    assert response.json()["error"]["code"] == "if_match_required"
    assert Order.objects.get(pk=created["id"]).version == created["version"]
