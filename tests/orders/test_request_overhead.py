"""What every bot request pays before its view: the token's user and account kept briefly in
the process, and the throttle's two counters (api/authentication.py, api/throttling.py); and
what validation pays: the order's contract kept briefly (accounts.services.contract_resolve)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token

from accounts import services as account_services
from accounts.models import Contract
from api.throttling import PerTokenRateThrottle
from tests.helpers import LIMIT_BUY, MNQ, place

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["local memory", pytest.param("redis", marks=pytest.mark.redis)])
def throttle_cache(request):
    """The throttle on the embedded default's cache, and on Redis (common.cache: its counters
    in one round trip)."""
    if request.param == "local memory":
        yield
        return
    redis_url = request.getfixturevalue("redis_url")
    shared = {
        "default": {
            "BACKEND": "common.cache.SharedPoolRedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"test-throttle-{uuid.uuid4().hex}",
        }
    }
    with override_settings(CACHES=shared):
        yield


class TestTheThrottle:
    def test_a_burst_at_the_end_of_a_period_still_counts_at_the_start_of_the_next(
        self, bot, monkeypatch, throttle_cache
    ) -> None:
        now = [60 * 28_000_000 + 50.0]  # 50 s into a minute no other test uses
        monkeypatch.setattr(PerTokenRateThrottle, "THROTTLE_RATES", {"user": "3/min"})
        monkeypatch.setattr(PerTokenRateThrottle, "timer", staticmethod(lambda: now[0]))
        burst = [bot.get("/api/v1/orders/").status_code for _ in range(3)]
        now[0] += 15  # 5 s into the next minute: the burst still weighs 3 x 55/60

        # should refuse a fourth request within a minute of the burst, saying when to retry
        refused = bot.get("/api/v1/orders/")
        assert burst == [200, 200, 200]
        assert refused.status_code == 429
        assert int(refused["Retry-After"]) >= 1
        now[0] += 40  # 45 s in: the burst weighs 3 x 15/60
        # should let the bot in again once the burst has mostly slid out of the last minute
        assert bot.get("/api/v1/orders/").status_code == 200


class TestTheKeptToken:
    def test_a_deleted_token_is_refused_at_once(self, bot, sim) -> None:
        assert bot.get("/api/v1/orders/").status_code == 200
        Token.objects.filter(user=bot.user).delete()

        # should not serve a token deleted a moment ago from what the process kept
        assert bot.get("/api/v1/orders/").status_code == 401

    def test_a_withdrawn_account_cannot_be_traded_at_once(self, bot, sim, accounts) -> None:
        assert place(bot, key="before").status_code == 201
        accounts[0].members.remove(bot.user)

        # should refuse the account as unknown to this bot, from the next request on
        response = place(bot, key="after")
        assert response.status_code == 400, response.json()
        assert "account" in response.json()["error"]["fields"]


class TestTheKeptContract:
    def test_a_run_of_orders_reads_the_contract_once(self, bot, sim) -> None:
        assert place(bot, key="first").status_code == 201
        with CaptureQueriesContext(connection) as queries:
            second = place(bot, key="second")

        # should check the second order's prices against the contract read for the first
        assert second.status_code == 201, second.json()
        assert not [q["sql"] for q in queries if '"accounts_contract"' in q["sql"]]

    def test_a_tick_size_changed_in_this_process_is_checked_at_once(self, bot, sim) -> None:
        assert place(bot, key="before").status_code == 201
        contract = Contract.objects.get(contract_id=MNQ)
        contract.tick_size = Decimal("1")
        contract.save()

        # should refuse 20000.25 against the new tick size, not the kept one
        response = place(bot, key="after")
        assert response.status_code == 400, response.json()
        assert "limit_price" in response.json()["error"]["fields"]

    def test_a_change_made_elsewhere_is_seen_once_the_kept_copy_is_old(
        self, bot, sim, monkeypatch
    ) -> None:
        assert place(bot, key="kept").status_code == 201
        # as another process would change it: no signal reaches this one
        Contract.objects.filter(contract_id=MNQ).update(tick_size=Decimal("1"))
        # should still answer from the kept copy within its time
        assert place(bot, key="within").status_code == 201
        monkeypatch.setattr(account_services, "CONTRACT_REUSE_SECONDS", 0.0)

        # should read the contract again once the kept copy is older than CONTRACT_REUSE_SECONDS
        response = place(bot, key="after")
        assert response.status_code == 400, response.json()
        assert "limit_price" in response.json()["error"]["fields"]

    def test_a_contract_unknown_at_first_is_asked_again(self, bot, sim) -> None:
        order = {**LIMIT_BUY, "contract_id": "CON.F.US.NEW.Z26"}
        refused = place(bot, order, key="unknown")
        sim.add_contract("CON.F.US.NEW.Z26", "NEWZ6", Decimal("0.25"), Decimal("0.5"))

        # should refuse a contract the broker does not know, and not keep that answer
        assert refused.status_code == 400, refused.json()
        assert "contract_id" in refused.json()["error"]["fields"]
        assert place(bot, order, key="known").status_code == 201
