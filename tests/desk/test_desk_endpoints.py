"""The desk's endpoints for a trader, against the real simulator: the ticket (the API's
placement service, once per submission key), Cancel all (each order with the version the page
showed), the health strip (heartbeats, stuck orders, protection), the chart's data (the broker's
bars, the account's fills), and the socket's account and price messages."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from accounts.models import Account, Contract, Position
from accounts.services import position_apply
from fills.models import ListenerHeartbeat
from marketdata.feed import publish_prices
from orders.models import Order, OrderStatus, Protection
from projectx.enums import PositionType
from projectx.models import Position as WirePosition
from tests.factories import make_account, make_order
from tests.helpers import DEMO_ACCOUNT, MNQ, open_desk, session_cookie, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

TICKET = {
    "account": DEMO_ACCOUNT,
    "contract_id": MNQ,
    "side": "buy",
    "type": "limit",
    "size": 2,
    "limit_price": "20000.25",
}


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def trader(accounts) -> Client:
    """A person with account 1001 on the desk (not staff: they see their account only)."""
    user = User.objects.create_user("trader", password="pw")
    accounts[0].members.add(user)
    client = Client()
    client.force_login(user)
    return client


def post(client: Client, url: str, body: dict):
    return client.post(url, json.dumps(body), content_type="application/json")


def lights(client: Client) -> dict[str, dict]:
    return {light["name"]: light for light in client.get("/desk/health/").json()["lights"]}


# --- The ticket ---------------------------------------------------------------------------------


def test_the_ticket_places_through_the_placement_service_once_per_key(trader, sim) -> None:
    first = post(trader, "/desk/ticket/", {**TICKET, "idempotency_key": "ticket-1"})
    body = first.json()
    # should place the order at the broker and answer its row, as the API would (201)
    assert first.status_code == 201, body
    assert body["row"]["status"] == "open" and body["replayed"] is False
    assert body["row"]["limit_price"] == "20000.25" and body["row"]["size"] == 2
    again = post(trader, "/desk/ticket/", {**TICKET, "idempotency_key": "ticket-1"})
    # should answer a resend of the same submission from the first, without a second order
    assert again.status_code == 201
    assert again.json()["row"]["id"] == body["row"]["id"] and again.json()["replayed"] is True
    assert Order.objects.count() == 1
    assert len(sim.broker.orders(DEMO_ACCOUNT)) == 1
    order = Order.objects.get()
    # should record the person who placed it, and the desk as the way in
    assert order.transitions.first().actor == "trader"
    # a new submission (a new key) is a new order
    assert (
        post(trader, "/desk/ticket/", {**TICKET, "idempotency_key": "ticket-2"}).status_code == 201
    )
    assert Order.objects.count() == 2


def test_the_ticket_refuses_in_words_next_to_the_field(trader, sim) -> None:
    cases = [
        ({"type": "limit", "limit_price": ""}, "limit_price", "required for a limit order"),
        ({"limit_price": "20000.10"}, "limit_price", "not on the contract's tick size 0.25"),
        ({"size": "0"}, "size", "greater than or equal to 1"),
        ({"stop_loss_ticks": "1001"}, "stop_loss_ticks", "less than or equal to 1000"),
        ({"type": "market", "limit_price": "20000"}, "limit_price", "not used by a market"),
        ({"account": 1002}, "account", "not one of the available choices"),
        ({"idempotency_key": ""}, "idempotency_key", "required"),
    ]
    for n, (change, field, words) in enumerate(cases):
        body = {**TICKET, "idempotency_key": f"bad-{n}", **change}
        response = post(trader, "/desk/ticket/", {k: v for k, v in body.items() if v != ""})
        error = response.json()["error"]
        # should refuse with the API's error shape, naming the field and why, in words
        assert response.status_code == 400, (change, error)
        assert words in " ".join(error["fields"][field]), (change, error)
    # should have sent nothing to the broker
    assert Order.objects.count() == 0
    assert sim.broker.orders(DEMO_ACCOUNT) == []


def test_the_ticket_needs_a_signed_in_person(accounts) -> None:
    response = post(Client(), "/desk/ticket/", {**TICKET, "idempotency_key": "anon"})
    # should send an anonymous request to the login page, placing nothing
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Order.objects.count() == 0


# --- Cancel all ---------------------------------------------------------------------------------


def test_cancel_all_cancels_each_order_shown_at_its_version(trader, sim, listener) -> None:
    listener()
    rows = [
        post(
            trader,
            "/desk/ticket/",
            {**TICKET, "limit_price": price, "idempotency_key": f"ca-{price}"},
        ).json()["row"]
        for price in ("20000", "20000.25", "20000.5")
    ]
    shown, stale, unseen = rows
    Order.objects.filter(pk=stale["id"]).update(version=stale["version"] + 1)
    response = post(
        trader,
        f"/desk/accounts/{DEMO_ACCOUNT}/cancel-all/",
        {"orders": [{"id": r["id"], "version": r["version"]} for r in (shown, stale)]},
    )
    body = response.json()
    assert response.status_code == 200, body
    # should cancel the order at the version the page showed
    assert [r["id"] for r in body["cancelled"]] == [shown["id"]]
    # should refuse the one that changed since, with its current row and the reason
    [refused] = body["refused"]
    assert refused["row"]["id"] == stale["id"]
    assert refused["error"]["code"] == "version_conflict"
    # should leave alone (and report) a working order the page did not show
    assert [r["id"] for r in body["not_shown"]] == [unseen["id"]]
    wait_for(lambda: Order.objects.get(pk=shown["id"]).status == OrderStatus.CANCELLED)
    assert Order.objects.get(pk=unseen["id"]).status == OrderStatus.OPEN
    # an account the person cannot see is not found
    assert post(trader, "/desk/accounts/1002/cancel-all/", {"orders": []}).status_code == 404


# --- The health strip ---------------------------------------------------------------------------


def beat(name: str = "host:1", *, ago: float = 0.0, applied_ago: float | None = 0.0, **fields):
    now = timezone.now()
    return ListenerHeartbeat.objects.create(
        name=name,
        connected=fields.pop("connected", True),
        subscribed=fields.pop("subscribed", True),
        applied_at=None if applied_ago is None else now - timedelta(seconds=applied_ago),
        started_at=now - timedelta(hours=1),
        updated_at=now - timedelta(seconds=ago),
        **fields,
    )


def test_the_health_strip_follows_the_listeners_heartbeat(trader) -> None:
    strip = lights(trader)
    # should be red before any listener ran, saying so
    assert strip["broker"]["level"] == "red" and strip["listener"]["level"] == "red"
    assert strip["listener"]["summary"] == "none running"
    running = beat()
    strip = lights(trader)
    # should be green while a listener is connected and applying
    assert (strip["broker"]["level"], strip["listener"]["level"]) == ("green", "green")
    assert strip["listener"]["summary"] == "applied 0 s ago"
    ListenerHeartbeat.objects.filter(pk=running.pk).update(
        applied_at=timezone.now() - timedelta(seconds=20), failing_tasks=["applier"]
    )
    strip = lights(trader)
    # should be amber while its applier falls behind, naming the failing task in the detail
    assert strip["listener"]["level"] == "amber"
    assert "failing: applier" in strip["listener"]["detail"][0]
    ListenerHeartbeat.objects.filter(pk=running.pk).update(connected=False, subscribed=False)
    strip = lights(trader)
    # should be red while it is up but not connected to the broker
    assert strip["broker"]["level"] == "red"
    assert strip["listener"]["summary"].endswith("(disconnected)")
    ListenerHeartbeat.objects.filter(pk=running.pk).update(
        connected=True, updated_at=timezone.now() - timedelta(seconds=30)
    )
    strip = lights(trader)
    # should be red once its heartbeat stopped, whatever its last one said
    assert strip["listener"]["level"] == "red"
    assert strip["listener"]["summary"] == "stopped (last heartbeat 30 s ago)"
    assert strip["broker"]["summary"] == "no listener connected"


def test_the_health_strip_counts_stuck_and_unprotected_orders_of_the_persons_accounts(
    trader, accounts
) -> None:
    mine, theirs = accounts
    beat()
    assert (lights(trader)["stuck"]["level"], lights(trader)["protection"]["level"]) == (
        "green",
        "green",
    )
    long_ago = timezone.now() - timedelta(minutes=30)
    stuck = make_order(account=mine)
    theirs_stuck = make_order(account=theirs)  # not the person's account
    Order.objects.filter(pk__in=[stuck.pk, theirs_stuck.pk]).update(
        status=OrderStatus.UNKNOWN, state_entered_at=long_ago
    )
    entry = make_order(account=mine, stop_loss_ticks=10)
    Order.objects.filter(pk=entry.pk).update(
        status=OrderStatus.FILLED,
        filled_size=2,
        bracket_role="entry",
        protection=Protection.UNPROTECTED,
    )
    strip = lights(trader)
    # should count the person's stuck order (red: far past its threshold), with its short id
    assert strip["stuck"]["level"] == "red" and strip["stuck"]["summary"] == "1 stuck"
    assert strip["stuck"]["detail"][0].startswith(str(stuck.pk)[:8])
    # should show the unprotected entry red, and one still being confirmed amber
    assert strip["protection"]["level"] == "red"
    assert str(entry.pk)[:8] in strip["protection"]["detail"][0]
    Order.objects.filter(pk=entry.pk).update(protection="")
    assert lights(trader)["protection"]["level"] == "amber"
    Order.objects.filter(pk=entry.pk).update(protection=Protection.PROTECTED)
    assert lights(trader)["protection"]["level"] == "green"


def test_the_health_answer_carries_the_account_header(trader, accounts) -> None:
    Contract.objects.get_or_create(
        contract_id=MNQ, defaults={"tick_size": Decimal("0.25"), "tick_value": Decimal("0.50")}
    )
    Position.objects.create(
        account=accounts[0], contract_id=MNQ, type="long", size=2, average_price=Decimal("21000")
    )
    publish_prices(prices={MNQ: Decimal("21001")}, at=datetime.now(UTC))
    [row] = trader.get("/desk/health/").json()["accounts"]
    # should carry the person's account only, with its unrealized P&L (4 ticks x 0.50 x 2)
    assert (row["id"], row["unrealized_pnl"]) == (DEMO_ACCOUNT, "4")
    assert set(row) >= {"trading_state", "realized_pnl_today", "name"}


# --- The chart's data ---------------------------------------------------------------------------


def test_the_chart_has_the_brokers_candles_and_the_accounts_fills(trader, sim, listener) -> None:
    listener()
    placed = post(
        trader,
        "/desk/ticket/",
        {**TICKET, "type": "market", "limit_price": "", "idempotency_key": "chart-1"},
    )
    assert placed.status_code == 201, placed.json()
    wait_for(lambda: Order.objects.get().status == OrderStatus.FILLED)
    response = trader.get("/desk/chart/", {"contract_id": MNQ, "minutes": 1})
    body = response.json()
    assert response.status_code == 200, body
    bars = body["bars"]
    # should answer the broker's candles, oldest first, with exact prices as text
    assert bars and body["bars_error"] is None
    assert [b["time"] for b in bars] == sorted(b["time"] for b in bars)
    assert all(Decimal(b["low"]) <= Decimal(b["close"]) <= Decimal(b["high"]) for b in bars)
    # should carry the account's fill in the contract, for its marker
    [fill] = body["fills"]
    assert (fill["side"], fill["size"], fill["price"]) == ("buy", 2, "21000")
    assert fill["order"] == placed.json()["row"]["id"]
    # should answer the same candles from its cache within a few seconds (one broker call)
    assert trader.get("/desk/chart/", {"contract_id": MNQ, "minutes": 1}).json()["bars"] == bars


def test_the_chart_refuses_what_it_cannot_draw(trader) -> None:
    for params in ({}, {"contract_id": MNQ, "minutes": 7}, {"contract_id": MNQ, "minutes": "x"}):
        response = trader.get("/desk/chart/", params)
        # should refuse in the one error shape
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


def test_the_chart_says_why_it_has_no_candles_and_still_has_the_fills(trader, sim) -> None:
    sim.stop()
    body = trader.get("/desk/chart/", {"contract_id": MNQ, "minutes": 5}).json()
    # should keep the page working without the broker, saying why the candles are missing
    assert body["bars"] == [] and body["bars_error"]
    assert body["fills"] == []


# --- The socket: the account header and the chart's prices --------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def receive_type(communicator, kind: str, within: float = 5.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        message = await communicator.receive_json_from(
            timeout=max(0.01, deadline - time.monotonic())
        )
        if message["type"] == kind:
            return message


@pytest.mark.anyio
async def test_the_chart_prices_reach_the_accounts_trading_the_contract() -> None:
    @database_sync_to_async
    def accounts_with_an_order_and_without():
        Contract.objects.get_or_create(
            contract_id=MNQ,
            defaults={"tick_size": Decimal("0.25"), "tick_value": Decimal("0.50")},
        )
        working, idle = make_account(), make_account()
        make_order(account=working)  # created: working, no position
        return working, idle

    working, idle = await accounts_with_an_order_and_without()
    trading, _, _ = await open_desk(await session_cookie("trading", working))
    other, _, _ = await open_desk(await session_cookie("idle", idle))
    await trading.receive_json_from()  # hello
    await other.receive_json_from()
    await database_sync_to_async(publish_prices)(
        prices={MNQ: Decimal("21000.50"), "CON.F.US.MES.Z26": Decimal("6000")},
        at=datetime.now(UTC),
    )
    message = await receive_type(trading, "marks")
    # should send the price of the contract the account has a working order in, exact, with
    # no position cells (it holds no position), and nothing of the other contract
    assert message["prices"] == {MNQ: "21000.5"} and message["rows"] == []
    assert await trading.receive_nothing(timeout=0.3)
    # should send nothing to a desk whose accounts trade neither
    assert await other.receive_nothing(timeout=0.3)
    await trading.disconnect()
    await other.disconnect()


@pytest.mark.anyio
async def test_a_position_change_carries_the_accounts_header() -> None:
    account = await database_sync_to_async(make_account)(broker_account_id=4242)
    communicator, _, _ = await open_desk(await session_cookie("trader-4242", account))
    await communicator.receive_json_from()  # hello

    @database_sync_to_async
    def open_position() -> None:
        wire = WirePosition(
            id=1,
            account_id=4242,
            contract_id=MNQ,
            creation_timestamp=timezone.now(),
            type=PositionType.LONG,
            size=1,
            average_price=Decimal("21000"),
        )
        position_apply(account=Account.objects.get(pk=account.pk), wire=wire)

    await open_position()
    message = await receive_type(communicator, "position")
    # should send the position with its account's header, in one frame
    assert message["row"]["key"] == f"4242:{MNQ}"
    assert message["account"]["id"] == 4242
    assert set(message["account"]) >= {"trading_state", "realized_pnl_today", "unrealized_pnl"}
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()


@pytest.mark.anyio
async def test_the_health_strip_is_pushed_to_every_socket_with_its_own_accounts(
    fast_health_push,
) -> None:
    mine = await database_sync_to_async(make_account)(broker_account_id=5151)
    theirs = await database_sync_to_async(make_account)(broker_account_id=5252)

    @database_sync_to_async
    def stuck_order_of_theirs() -> None:
        order = make_order(account=theirs)
        Order.objects.filter(pk=order.pk).update(
            status=OrderStatus.UNKNOWN, state_entered_at=timezone.now() - timedelta(hours=1)
        )
        beat()

    await stuck_order_of_theirs()
    desks = []
    for name in ("one", "two"):
        communicator, _, _ = await open_desk(await session_cookie(f"desk-{name}", mine))
        await communicator.receive_json_from()  # hello
        desks.append(communicator)
    other, _, _ = await open_desk(await session_cookie("their-desk", theirs))
    await other.receive_json_from()
    for communicator in desks:
        health = await receive_type(communicator, "health")
        strip = {light["name"]: light for light in health["lights"]}
        # should push the strip to every open desk, with the listener's lights for all ...
        assert strip["listener"]["level"] == "green"
        # ... and only its own accounts' stuck orders and header
        assert strip["stuck"]["level"] == "green"
        assert [a["id"] for a in health["accounts"]] == [5151]
    theirs_strip = await receive_type(other, "health")
    assert {light["name"]: light for light in theirs_strip["lights"]}["stuck"]["level"] == "red"
    for communicator in [*desks, other]:
        await communicator.disconnect()


# --- Risk and the kill switch from the desk (issue 15's services) -------------------------------


def test_a_risk_refusal_is_said_in_words_and_replayed_for_its_key(trader, sim, tune) -> None:
    tune("risk", max_order_size=1)
    body = {**TICKET, "idempotency_key": "too-big"}
    refused = post(trader, "/desk/ticket/", body)
    error = refused.json()["error"]
    # should refuse before the broker, naming the limit, its value and what was asked
    assert refused.status_code == 422, error
    assert error["code"] == "risk_limit"
    assert error["fields"] == {"limit": "maxOrderSize", "value": 1, "requested": 2}
    assert "maxOrderSize" in error["message"]
    again = post(trader, "/desk/ticket/", body)
    # should answer a resend of the submission the same, with the rejected order it stored
    assert again.status_code == 422
    assert again.json()["error"] == error and again.json()["replayed"] is True
    assert again.json()["row"]["status"] == "rejected"
    assert sim.broker.orders(DEMO_ACCOUNT) == []


def test_flatten_answers_with_the_halted_account_header(trader, sim, listener) -> None:
    listener()
    placed = post(
        trader,
        "/desk/ticket/",
        {**TICKET, "type": "market", "limit_price": "", "size": 1, "idempotency_key": "pos"},
    )
    assert placed.status_code == 201, placed.json()
    post(trader, "/desk/ticket/", {**TICKET, "idempotency_key": "resting"})
    response = post(trader, f"/desk/accounts/{DEMO_ACCOUNT}/flatten/", {})
    body = response.json()
    assert response.status_code == 200, body
    # should say how it ended, with the account's header as it is now: halted
    assert body["status"] == "flat"
    assert len(body["cancelled"]) == 1 and len(body["closed"]) == 1
    assert body["account"]["id"] == DEMO_ACCOUNT
    assert body["account"]["trading_state"] == "halted"
    strip = trader.get("/desk/health/").json()
    assert strip["accounts"][0]["trading_state"] == "halted"
    # and the next ticket is refused while halted, in words
    halted = post(trader, "/desk/ticket/", {**TICKET, "idempotency_key": "after"})
    assert halted.status_code == 409
    assert halted.json()["error"]["code"] == "account_halted"
