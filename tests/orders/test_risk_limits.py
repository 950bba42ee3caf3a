"""Pre-trade risk limits and trading states, over the simulator on PostgreSQL: each limit
refuses with nothing sent to the broker, in the error shape the issue gives; the final
refusals are stored and replayed, the passing ones leave the key free."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection
from rest_framework.test import APIClient

from accounts.models import Account, AccountAudit
from orders.models import Order
from tests.helpers import (
    DEMO_ACCOUNT,
    LIMIT_BUY,
    MARKET_BUY,
    MNQ,
    broker_orders,
    place,
    read,
    wait_for,
)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RESTING_SELL = {**LIMIT_BUY, "side": "sell", "limit_price": "22000.00"}  # above the market


def assert_risk_refusal(response, *, status: int, code: str, limit: str) -> dict:
    body = response.json()
    # should answer in the one error shape, naming the limit
    assert response.status_code == status, body
    assert body["error"]["code"] == code, body
    assert body["error"]["fields"]["limit"] == limit, body
    assert body["error"]["message"]
    return body


def test_max_order_size_refuses_stores_a_rejected_order_and_replays_it(bot, sim, tune) -> None:
    tune("risk", max_order_size=3)
    before = read("order_risk_refusals_total", limit="maxOrderSize")
    response = place(bot, {**LIMIT_BUY, "size": 4}, key="too-big")
    body = assert_risk_refusal(response, status=422, code="risk_limit", limit="maxOrderSize")
    # should say the limit's value and what was asked
    assert body["error"]["fields"] == {"limit": "maxOrderSize", "value": 3, "requested": 4}
    # should send nothing to the broker, and keep a rejected order saying why
    assert broker_orders(sim) == []
    order = Order.objects.get(idempotency_key="too-big")
    assert order.status == "rejected"
    assert "maxOrderSize" in order.status_reason
    # should answer a retry with the key from the stored outcome, the same body
    again = place(bot, {**LIMIT_BUY, "size": 4}, key="too-big")
    assert again.status_code == 422
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == body
    assert Order.objects.filter(idempotency_key="too-big").count() == 1
    # should count the refusal once, by limit
    assert read("order_risk_refusals_total", limit="maxOrderSize") == before + 1
    # an order within the limit is placed
    assert place(bot, {**LIMIT_BUY, "size": 3}, key="fits").status_code == 201


def test_max_working_orders_counts_every_order_not_yet_ended(bot, sim, tune) -> None:
    tune("risk", max_working_orders=2)
    assert place(bot, key="w1").status_code == 201
    assert place(bot, RESTING_SELL, key="w2").status_code == 201
    response = place(bot, key="w3")
    body = assert_risk_refusal(response, status=422, code="risk_limit", limit="maxWorkingOrders")
    assert body["error"]["fields"]["value"] == 2 and body["error"]["fields"]["requested"] == 3
    # should have sent only the two accepted ones
    assert len(broker_orders(sim)) == 2
    # once one ends, a new order (a new key) is accepted
    first = Order.objects.get(idempotency_key="w1")
    cancel = bot.post(f"/api/v1/orders/{first.pk}/cancel/", HTTP_IF_MATCH=f'"{first.version}"')
    assert cancel.status_code in (200, 202)
    wait_for(lambda: Order.objects.get(pk=first.pk).status == "cancelled")
    assert place(bot, key="w4").status_code == 201


def test_max_position_size_counts_the_working_orders_on_the_orders_side(bot, sim, tune) -> None:
    tune("risk", max_position_size=5)
    assert place(bot, {**LIMIT_BUY, "size": 3}, key="b1").status_code == 201
    response = place(bot, {**LIMIT_BUY, "size": 3}, key="b2")
    body = assert_risk_refusal(response, status=422, code="risk_limit", limit="maxPositionSize")
    # should count the working buy: 3 + 3 = 6 > 5
    assert body["error"]["fields"] == {"limit": "maxPositionSize", "value": 5, "requested": 6}
    # the other side is counted on its own: selling 5 would make the position -5 at most
    assert place(bot, {**RESTING_SELL, "size": 5}, key="s1").status_code == 201
    assert place(bot, {**LIMIT_BUY, "size": 2}, key="b3").status_code == 201
    assert len(broker_orders(sim)) == 3


def test_max_orders_per_minute_answers_429_and_leaves_the_key_free(bot, sim, tune) -> None:
    tune("risk", max_orders_per_minute=2)
    assert place(bot, key="r1").status_code == 201
    assert place(bot, RESTING_SELL, key="r2").status_code == 201
    response = place(bot, {**LIMIT_BUY, "size": 1}, key="r3")
    assert_risk_refusal(response, status=429, code="risk_limit", limit="maxOrdersPerMinute")
    # should say when to retry: when the oldest order leaves the minute
    assert 1 <= int(response["Retry-After"]) <= 60
    # should store nothing and send nothing
    assert not Order.objects.filter(idempotency_key="r3").exists()
    assert len(broker_orders(sim)) == 2
    # the same key places the order once the rate allows it
    tune("risk", max_orders_per_minute=3)
    assert place(bot, {**LIMIT_BUY, "size": 1}, key="r3").status_code == 201
    assert len(broker_orders(sim)) == 3


def staff_api() -> APIClient:
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("risk-officer", "risk@example.com", "pw")
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_halted_account_answers_409_until_resumed_and_the_key_then_places(bot, sim) -> None:
    halted = bot.post(f"/api/v1/accounts/{DEMO_ACCOUNT}/halt", {"reason": "desk says stop"})
    # should answer the account, halted
    assert halted.status_code == 200, halted.content
    assert halted.json()["trading_state"] == "halted"
    response = place(bot, key="while-halted")
    body = assert_risk_refusal(response, status=409, code="account_halted", limit="tradingState")
    assert "desk says stop" in body["error"]["fields"]["reason"]
    # should show the state per account on /metrics (the AccountHalted alert reads it)
    assert read("order_account_trading_state", account=str(DEMO_ACCOUNT), state="halted") == 1
    assert read("order_account_trading_state", account=str(DEMO_ACCOUNT), state="active") == 0
    assert broker_orders(sim) == []
    assert not Order.objects.filter(idempotency_key="while-halted").exists()
    # a bot may halt its account, not lift the halt
    assert bot.post(f"/api/v1/accounts/{DEMO_ACCOUNT}/resume").status_code == 403
    resumed = staff_api().post(f"/api/v1/accounts/{DEMO_ACCOUNT}/resume")
    assert resumed.status_code == 200 and resumed.json()["trading_state"] == "active"
    # the same key places the order now
    assert place(bot, key="while-halted").status_code == 201
    # every change is audited with who made it
    audit = list(
        AccountAudit.objects.filter(action="trading_state")
        .order_by("id")
        .values_list("from_state", "to_state", "actor")
    )
    assert audit == [("active", "halted", "bot-1"), ("halted", "active", "risk-officer")]


def test_the_accounts_list_shows_state_pnl_and_the_limits_in_force(bot, sim, tune) -> None:
    tune("risk", max_order_size=10, daily_loss_limit=Decimal("500"))
    Account.objects.filter(broker_account_id=DEMO_ACCOUNT).update(max_order_size=4)
    (account,) = bot.get("/api/v1/accounts/").json()
    assert account["trading_state"] == "active"
    assert account["realized_pnl_today"] == "0.00"
    # should show the account's override over the YAML, and the YAML's value otherwise
    assert account["limits"]["maxOrderSize"] == 4
    assert account["limits"]["dailyLossLimit"] == "500"
    assert account["limits"]["maxPositionSize"] is None
    assert account["limits"]["onDailyLossLimit"] == "reduce_only"


@pytest.mark.timeout(120)
def test_concurrent_orders_cannot_pass_max_position_size_together(bot, sim, tune) -> None:
    tune("risk", max_position_size=5)
    count = 12
    barrier = threading.Barrier(count)
    statuses: list[int | None] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            statuses[index] = place(bot, {**LIMIT_BUY, "size": 1}, key=f"c{index}").status_code
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    # should accept exactly the five that fit, and refuse the rest
    assert sorted(statuses) == [201] * 5 + [422] * 7, statuses
    assert len(broker_orders(sim)) == 5
    assert sum(o["size"] for o in broker_orders(sim)) == 5


@pytest.mark.timeout(120)
def test_the_daily_loss_limit_switches_to_reduce_only_from_real_trades(
    bot, sim, listener, tune
) -> None:
    # A loss of 10 points on one MNQ ($2 a point) is $20 plus fees: beyond a $15 limit.
    tune("risk", daily_loss_limit=Decimal("15"))
    listener()
    sim.set_price(MNQ, Decimal("21000.00"))
    assert place(bot, {**MARKET_BUY, "size": 2}, key="open").status_code == 201
    wait_for(lambda: bot.get("/api/v1/positions/").json() != [], message="the position")
    sim.set_price(MNQ, Decimal("20990.00"))
    sell_one = {**MARKET_BUY, "side": "sell", "size": 1}
    assert place(bot, sell_one, key="take-the-loss").status_code == 201

    def state() -> dict:
        return bot.get("/api/v1/accounts/").json()[0]

    # should switch the account once the broker's trade (P&L and fees) is stored
    wait_for(lambda: state()["trading_state"] == "reduce_only", message="reduce_only")
    account = state()
    trades = [t for t in sim.broker.trades(DEMO_ACCOUNT) if not t["voided"]]
    expected = sum(
        (Decimal(str(t["profitAndLoss"] or 0)) - Decimal(str(t["fees"])) for t in trades),
        Decimal(0),
    )
    assert Decimal(account["realized_pnl_today"]) == expected.quantize(Decimal("0.01"))
    assert expected <= Decimal("-15")
    assert account["trading_state_cause"] == "daily_loss_limit"
    # should say so on /metrics (the DailyLossLimitReached alert reads it)
    assert read("order_account_daily_loss_limit_reached", account=str(DEMO_ACCOUNT)) == 1
    # an order that would grow the position is refused, naming the loss limit
    sent = len(broker_orders(sim))
    response = place(bot, {**MARKET_BUY, "size": 1}, key="more")
    assert_risk_refusal(response, status=422, code="risk_limit", limit="dailyLossLimit")
    assert len(broker_orders(sim)) == sent
    # the position shows its realized P&L of the day
    (position,) = bot.get("/api/v1/positions/").json()
    assert position["realized_pnl_today"] == account["realized_pnl_today"]
    # one that reduces the position is accepted
    assert place(bot, sell_one, key="reduce").status_code == 201
    wait_for(lambda: bot.get("/api/v1/positions/").json() == [], message="flat")
    # and the switch is audited, by the risk engine, once
    assert AccountAudit.objects.filter(to_state="reduce_only", actor="risk").count() == 1


def test_the_loss_limits_state_ends_when_the_next_trading_day_begins(bot, sim, tune) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from accounts.selectors import trading_day

    tune("risk", daily_loss_limit=Decimal("15"))
    yesterday = trading_day(timezone.now()) - timedelta(days=1)
    Account.objects.filter(broker_account_id=DEMO_ACCOUNT).update(
        trading_state="reduce_only",
        trading_state_cause="daily_loss_limit",
        loss_limit_day=yesterday,
    )
    # should show the account active again, and accept a new position
    assert bot.get("/api/v1/accounts/").json()[0]["trading_state"] == "active"
    assert place(bot, key="new-day").status_code == 201
    account = Account.objects.get(broker_account_id=DEMO_ACCOUNT)
    assert account.trading_state == "active"
    # the change is audited, by the risk engine, saying why
    change = AccountAudit.objects.get(action="trading_state")
    assert (change.from_state, change.to_state, change.actor) == ("reduce_only", "active", "risk")
    assert "new trading day" in change.reason


def realized_at_broker(sim) -> Decimal:
    """The broker's own figure: P&L net of fees of its trades that stand."""
    return sum(
        (
            Decimal(str(t["profitAndLoss"] or 0)) - Decimal(str(t["fees"]))
            for t in sim.broker.trades(DEMO_ACCOUNT)
            if not t["voided"]
        ),
        Decimal(0),
    ).quantize(Decimal("0.01"))


@pytest.mark.timeout(120)
def test_on_daily_loss_limit_halt_halts_and_a_voided_trade_is_taken_back(
    bot, sim, listener, tune
) -> None:
    tune("risk", daily_loss_limit=Decimal("15"), on_daily_loss_limit="halt")
    listener()
    sim.set_price(MNQ, Decimal("21000.00"))
    assert place(bot, MARKET_BUY, key="open").status_code == 201
    sim.set_price(MNQ, Decimal("20990.00"))
    assert place(bot, {**MARKET_BUY, "side": "sell"}, key="close").status_code == 201

    def account() -> dict:
        return bot.get("/api/v1/accounts/").json()[0]

    # should halt the account: every new order answers 409, nothing is sent
    wait_for(lambda: account()["trading_state"] == "halted", message="halted")
    sent = len(broker_orders(sim))
    response = place(bot, MARKET_BUY, key="after")
    assert_risk_refusal(response, status=409, code="account_halted", limit="tradingState")
    assert len(broker_orders(sim)) == sent
    assert Decimal(account()["realized_pnl_today"]) == realized_at_broker(sim)

    # The broker voids the losing trade: its P&L and fees no longer count.
    losing = next(t for t in sim.broker.trades(DEMO_ACCOUNT) if t["profitAndLoss"])
    sim.void_trade(losing["id"])
    wait_for(
        lambda: Decimal(account()["realized_pnl_today"]) == realized_at_broker(sim),
        message="the void taken back",
    )
    assert realized_at_broker(sim) > Decimal("-15")
    # the halt stands until a person resumes the account (the limit fired for the day)
    assert account()["trading_state"] == "halted"


def test_a_modify_that_grows_an_order_meets_the_same_limits(bot, sim, tune) -> None:
    tune("risk", max_order_size=3, max_position_size=4)
    first = place(bot, {**LIMIT_BUY, "size": 2}, key="first").json()["id"]

    def modify(order_id: str, size: int):
        version = Order.objects.get(pk=order_id).version
        return bot.patch(
            f"/api/v1/orders/{order_id}/",
            {"size": size},
            format="json",
            HTTP_IF_MATCH=f'"{version}"',
        )

    # should refuse a size above maxOrderSize, and leave the broker's order as it was
    assert_risk_refusal(modify(first, 4), status=422, code="risk_limit", limit="maxOrderSize")
    assert [o["size"] for o in broker_orders(sim)] == [2]
    # with a second buy of 1 working, growing the first to 3 makes 4 on the side: allowed
    second = place(bot, {**LIMIT_BUY, "size": 1}, key="second").json()["id"]
    assert modify(first, 3).status_code == 200
    # and a new order on the side would make 5
    third = place(bot, {**LIMIT_BUY, "size": 1}, key="third")
    assert_risk_refusal(third, status=422, code="risk_limit", limit="maxPositionSize")
    # a halted account may still shrink an order, never grow one
    bot.post(f"/api/v1/accounts/{DEMO_ACCOUNT}/halt")
    grow = modify(second, 2)
    assert grow.status_code == 409 and grow.json()["error"]["code"] == "account_halted"
    assert modify(first, 1).status_code == 200
    assert sorted(o["size"] for o in broker_orders(sim)) == [1, 1]


BRACKETED_BUY = {**MARKET_BUY, "stop_loss_ticks": 8, "take_profit_ticks": 12}


def bracket_group_working(entry_id: str) -> bool:
    legs = Order.objects.filter(bracket_parent_id=entry_id, status="open").exclude(
        broker_order_id=None
    )
    return Order.objects.get(pk=entry_id).status == "filled" and legs.count() == 2


@pytest.mark.timeout(120)
def test_a_bracket_groups_children_count_once_and_use_no_working_order(
    bot, sim, listener, tune
) -> None:
    tune("risk", max_position_size=2, max_working_orders=1)
    listener()
    sim.set_price(MNQ, Decimal("21000.00"))
    entry = place(bot, {**BRACKETED_BUY, "size": 2}, key="entry").json()["id"]
    wait_for(lambda: bracket_group_working(entry), message="the entry filled, both legs working")
    # Long 2, a stop loss and a take profit of 2 each working (one cancels the other). Selling
    # 2 more at most takes the position to -2: within maxPositionSize, and the legs are the
    # broker's protection, not working orders of the bot's.
    sell = {**LIMIT_BUY, "side": "sell", "limit_price": "21100.00", "size": 2}
    assert place(bot, sell, key="sell-2").status_code == 201
    # one more contract on that side would make -3
    refused = place(bot, {**sell, "size": 1}, key="sell-1")
    assert_risk_refusal(refused, status=422, code="risk_limit", limit="maxPositionSize")


@pytest.mark.timeout(120)
def test_a_reduce_only_account_refuses_brackets_even_on_a_reducing_order(
    bot, sim, listener
) -> None:
    listener()
    assert place(bot, {**MARKET_BUY, "size": 2}, key="long").status_code == 201
    wait_for(lambda: bot.get("/api/v1/positions/").json() != [], message="the position")
    Account.objects.filter(broker_account_id=DEMO_ACCOUNT).update(trading_state="reduce_only")
    sell = {**MARKET_BUY, "side": "sell", "size": 1}
    # its stop loss would buy back above: exposure the account may not add
    refused = place(bot, {**sell, "stop_loss_ticks": 8}, key="bracketed-sell")
    assert_risk_refusal(refused, status=422, code="risk_limit", limit="tradingState")
    assert place(bot, sell, key="plain-sell").status_code == 201
