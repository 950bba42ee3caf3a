"""What every bot request pays before its view: the token's user and account kept briefly in
the process, and the throttle's two counters (api/authentication.py, api/throttling.py)."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token

from api.throttling import PerTokenRateThrottle
from tests.helpers import place

pytestmark = pytest.mark.django_db(transaction=True)


class TestTheThrottle:
    def test_a_burst_at_the_end_of_a_period_still_counts_at_the_start_of_the_next(
        self, bot, monkeypatch
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
