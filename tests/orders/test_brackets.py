"""Native bracket orders over the simulator: the group through the entry's fill, OCO (by the
broker, and by us when the broker's does not come), the protection guarantee, the account
mode refusal, and the signs on the wire."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from desk.selectors import order_row
from orders.models import Order
from projectx.client import ProjectXClient
from tests.helpers import DEMO_ACCOUNT, MARKET_BUY, MNQ, place, read, wait_for

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(120),
]

BRACKETED_BUY = {**MARKET_BUY, "stop_loss_ticks": 8, "take_profit_ticks": 12}
UNPROTECTED = "order_unprotected_positions_total"


def children(entry: Order) -> dict[str, Order]:
    return {o.bracket_role: o for o in Order.objects.filter(bracket_parent_id=entry.pk)}


def group_open(entry_id: str) -> bool:
    entry = Order.objects.get(pk=entry_id)
    legs = children(entry)
    return (
        entry.status == "filled"
        and set(legs) == {"stop_loss", "take_profit"}
        and all(leg.status == "open" and leg.broker_order_id for leg in legs.values())
        and legs["stop_loss"].stop_price is not None
    )


def broker_status(sim, broker_order_id: int | None) -> int:
    order = sim.broker.order(broker_order_id)
    assert order is not None
    return order["status"]


def position_size(sim) -> int:
    return sum(p["size"] for p in sim.broker.positions(DEMO_ACCOUNT) if p["contractId"] == MNQ)


def placed_group(bot, key: str, body: dict[str, Any] | None = None) -> tuple[Order, Order, Order]:
    response = place(bot, body or BRACKETED_BUY, key=key)
    assert response.status_code == 201, response.json()
    entry_id = response.json()["id"]
    wait_for(lambda: group_open(entry_id), message="the entry filled and both children working")
    entry = Order.objects.get(pk=entry_id)
    legs = children(entry)
    return entry, legs["stop_loss"], legs["take_profit"]


# --- The group ---------------------------------------------------------------------------------


def test_a_bracket_group_through_entry_fill_a_leg_filling_and_the_broker_cancelling_the_other(
    bot, sim, listener
) -> None:
    listener()
    entry, stop, target = placed_group(bot, key="group-1")
    # should link each child to its entry, with its role and the broker's absolute prices
    assert (entry.bracket_role, entry.bracket_parent_id) == ("entry", None)
    assert stop.stop_price == Decimal("20998.00")  # 8 ticks of 0.25 below the 21000 fill
    assert target.limit_price == Decimal("21003.00")  # 12 ticks above
    assert (stop.side, target.side) == ("sell", "sell")

    body = bot.get(f"/api/v1/orders/{entry.pk}/").json()
    # should show the entry with its children, and each child with its entry and role
    assert (body["role"], body["parent"], body["stop_loss_ticks"]) == ("entry", None, 8)
    assert {(c["role"], c["status"]) for c in body["brackets"]} == {
        ("stop_loss", "open"),
        ("take_profit", "open"),
    }
    listed = bot.get(f"/api/v1/orders/?parent={entry.pk}").json()["results"]
    # should list exactly the group's children
    assert {row["id"] for row in listed} == {str(stop.pk), str(target.pk)}
    assert all(row["parent"] == str(entry.pk) and row["brackets"] is None for row in listed)
    plain = place(bot, {**MARKET_BUY, "size": 1}, key="plain").json()
    # should leave a plain order without a role, an entry or children
    assert (plain["role"], plain["parent"], plain["brackets"]) == (None, None, None)

    sim.fill_order(target.broker_order_id)
    wait_for(
        lambda: Order.objects.get(pk=stop.pk).oco_cancelled_by == "broker",
        message="the stop loss cancelled by the broker's OCO, recorded",
    )
    stop.refresh_from_db()
    # should record the broker's OCO cancel of the sibling, with the filled leg named
    assert stop.status == "cancelled"
    assert "OCO: cancelled by the broker when the take profit" in (
        stop.transitions.order_by("-version").first().reason
    )
    assert Order.objects.get(pk=target.pk).status == "filled"
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "ended", message="guard ends")
    # should leave the account flat: one market buy of 1 (the plain one) remains
    assert position_size(sim) == 1


def test_a_sibling_the_broker_does_not_cancel_in_time_is_cancelled_by_us(
    bot, sim, listener, tune
) -> None:
    tune("brackets", oco_cancel_within_seconds=0.5)
    listener()
    entry, stop, target = placed_group(bot, key="group-oco")
    sim.faults.suppress_oco()  # the broker forgets to cancel the sibling
    sim.fill_order(stop.broker_order_id)
    wait_for(
        lambda: Order.objects.get(pk=target.pk).oco_cancelled_by == "ordermgmt",
        message="the take profit cancelled by us",
    )
    wait_for(lambda: Order.objects.get(pk=target.pk).status == "cancelled", message="cancelled")
    # should have cancelled it at the broker, and recorded that we did
    assert broker_status(sim, target.broker_order_id) == 3
    reasons = list(Order.objects.get(pk=target.pk).transitions.values_list("reason", flat=True))
    assert any("OCO: cancelled by ordermgmt when the stop loss" in r for r in reasons)
    # should not count a flat group as unprotected
    assert Order.objects.get(pk=entry.pk).unprotected_at is None
    assert position_size(sim) == 0


def test_the_admin_and_the_desk_show_the_group_together(
    bot, sim, listener, staff_client, accounts
) -> None:
    listener()
    entry, stop, target = placed_group(bot, key="group-shown")
    page = staff_client.get(f"/admin/orders/order/{stop.pk}/change/").content.decode()
    # should show, on a child's page, its entry and its sibling, each a link to its own page
    for member in (entry, stop, target):
        assert f"/admin/orders/order/{member.pk}/change/" in page
    assert "Stop loss" in page and "Take profit" in page
    listing = staff_client.get(f"/admin/orders/order/?q={entry.pk}").content.decode()
    # should find the children by their entry's id in the admin's search
    assert str(stop.pk) in listing and str(target.pk) in listing

    staff_client.force_login(bot.user)
    rows = {row["id"]: row for row in staff_client.get("/desk/snapshot/").json()["orders"]}
    # should give the desk each member's role and the group it belongs to
    assert (rows[str(entry.pk)]["role"], rows[str(entry.pk)]["parent"]) == ("entry", None)
    assert (rows[str(stop.pk)]["role"], rows[str(stop.pk)]["parent"]) == (
        "stop_loss",
        str(entry.pk),
    )
    assert rows[str(entry.pk)]["unprotected"] is False


# --- The protection guarantee ------------------------------------------------------------------


@pytest.mark.parametrize("side", ["buy", "sell"])
def test_a_stop_cancelled_by_someone_else_gets_the_position_flattened_within_the_window(
    bot, sim, listener, tune, side
) -> None:
    tune("brackets", protect_within_seconds=1.0)
    listener()
    before = read(UNPROTECTED)
    entry, stop, target = placed_group(
        bot, key=f"group-cut-{side}", body={**BRACKETED_BUY, "side": side}
    )
    # should put the stop on the losing side of the fill (below a long, above a short)
    assert stop.stop_price == (Decimal("20998.00") if side == "buy" else Decimal("21002.00"))
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "protected", message="guarded")
    assert position_size(sim) == 1

    # someone cancels the stop at the broker (its platform, another tool)
    sim.broker.cancel_order("demo", DEMO_ACCOUNT, stop.broker_order_id)
    # should be flat by the window (1 s) plus the close's own round trips
    wait_for(lambda: position_size(sim) == 0, timeout=4, message="the position flattened")
    entry.refresh_from_db()
    # should record the entry unprotected, count it once and cancel the group's working orders
    assert entry.protection == "unprotected" and entry.unprotected_at is not None
    assert read(UNPROTECTED) == before + 1
    assert broker_status(sim, target.broker_order_id) == 3
    wait_for(lambda: Order.objects.get(pk=target.pk).status == "cancelled", message="TP mirrored")
    # should not act twice on the same entry
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "ended", message="guard ends")
    assert read(UNPROTECTED) == before + 1


def test_a_partly_filled_entry_still_working_is_protected_by_its_suspended_stop(
    bot, sim, listener, tune
) -> None:
    tune("brackets", protect_within_seconds=0.2)
    running = listener()
    body = {**BRACKETED_BUY, "type": "limit", "limit_price": "20000.00", "size": 2}
    entry_id = place(bot, body, key="group-partial").json()["id"]
    wait_for(lambda: Order.objects.get(pk=entry_id).broker_order_id is not None, message="sent")
    entry = Order.objects.get(pk=entry_id)
    sim.fill_order(entry.broker_order_id, size=1, price="20000.00")
    wait_for(
        lambda: Order.objects.get(pk=entry_id).protection == "protected",
        message="the partial fill checked",
    )
    # past the window, and rechecked through REST a few times since
    wait_for(
        lambda: running.listener.stats.outcomes["protection:protected"] >= 3,
        message="rechecks",
    )
    # should leave the position alone: the broker arms the stop when the entry completes
    stops = [o for o in sim.broker.orders(DEMO_ACCOUNT) if o.get("customTag", "").endswith("-SL")]
    assert [s["status"] for s in stops] == [8]  # Suspended
    assert position_size(sim) == 1
    assert Order.objects.get(pk=entry_id).unprotected_at is None


def test_a_stop_lost_while_the_hub_is_silent_is_found_through_rest(
    bot, sim, listener, tune
) -> None:
    tune("brackets", protect_within_seconds=1.0)
    listener()
    entry, stop, _ = placed_group(bot, key="group-silent")
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "protected", message="guarded")
    sim.faults.stall_hub()
    sim.broker.cancel_order("demo", DEMO_ACCOUNT, stop.broker_order_id)
    # should find the lost stop through Order/search, not the stream, and flatten
    wait_for(lambda: position_size(sim) == 0, timeout=8, message="the position flattened")
    assert Order.objects.get(pk=entry.pk).protection == "unprotected"


def test_alert_only_records_and_counts_and_leaves_the_position(bot, sim, listener, tune) -> None:
    tune("brackets", protect_within_seconds=0.5, on_unprotected="alert")
    listener()
    before = read(UNPROTECTED)
    entry, stop, _ = placed_group(bot, key="group-alert")
    sim.broker.cancel_order("demo", DEMO_ACCOUNT, stop.broker_order_id)
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "unprotected", message="recorded")
    # should count it, leave the position as it is, and flag the entry on the desk
    assert read(UNPROTECTED) == before + 1
    assert position_size(sim) == 1
    assert order_row(Order.objects.select_related("account").get(pk=entry.pk))["unprotected"]


def test_the_stuck_sweep_guards_the_groups_while_no_listener_runs(bot, sim, listener, tune) -> None:
    # A window shorter than a process start: past by the time the sweep runs.
    tune("brackets", protect_within_seconds=0.01)
    running = listener()
    entry, stop, _ = placed_group(bot, key="group-sweep")
    wait_for(lambda: Order.objects.get(pk=entry.pk).protection == "protected", message="guarded")
    running.stop()  # the listener is down (a deploy, a crash)
    sim.broker.cancel_order("demo", DEMO_ACCOUNT, stop.broker_order_id)
    out = StringIO()

    def sweep_once() -> bool:
        call_command("detect_stuck_orders", "--verify", stdout=out)
        return position_size(sim) == 0

    # the every-minute sweep runs (here: until the window has passed), from the stored state
    # and the broker's truth; it should flatten the position on its own
    wait_for(sweep_once, timeout=8, message="the sweep flattened the position")
    assert "bracket guard: " in out.getvalue() and "protection:flattened" in out.getvalue()
    assert Order.objects.get(pk=entry.pk).protection == "unprotected"


# --- The account's mode, validation, the wire --------------------------------------------------


def test_an_account_not_in_auto_oco_mode_is_refused_with_the_brokers_message(
    bot, sim, contract_known
) -> None:
    sim.broker.update_account(DEMO_ACCOUNT, auto_oco_brackets=False)
    response = place(bot, BRACKETED_BUY, key="no-oco")
    body = response.json()
    # should answer 422 brackets_not_enabled in the one error shape, with the broker's words
    assert response.status_code == 422, body
    assert body["error"]["code"] == "brackets_not_enabled"
    assert body["error"]["message"] == (
        "Brackets cannot be used with Position Brackets. You must enable Auto OCO Brackets."
    )
    assert body["order"]["status"] == "rejected"
    replay = place(bot, BRACKETED_BUY, key="no-oco")
    # should replay the same definitive answer for the key
    assert (replay.status_code, replay.json()) == (422, body)
    assert replay["Idempotent-Replayed"] == "true"
    # should leave nothing working and no position at the broker
    assert not sim.broker.open_orders(DEMO_ACCOUNT) and position_size(sim) == 0


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"stop_loss_ticks": 0}, "stop_loss_ticks", "greater than or equal to 1"),
        ({"take_profit_ticks": 1001}, "take_profit_ticks", "less than or equal to 1000"),
        ({"stop_loss_ticks": "5"}, "stop_loss_ticks", "JSON integer"),
        ({"stop_loss_ticks": 5.0}, "stop_loss_ticks", "JSON integer"),
        ({"stop_loss_ticks": True}, "stop_loss_ticks", "JSON integer"),
        (
            {"type": "trailing_stop", "trail_price": "20990.00", "stop_loss_ticks": 5},
            "stop_loss_ticks",
            "not available on a trailing_stop order",
        ),
    ],
)
def test_bad_brackets_are_refused_with_400_naming_the_field(
    bot, sim, contract_known, changes, field, message
) -> None:
    response = place(bot, {**MARKET_BUY, **changes}, key=f"bad-{field}-{changes[field]!r}")
    error = response.json()["error"]
    # should refuse in the one error shape, naming the field and why, and send nothing
    assert response.status_code == 400, error
    assert message in " ".join(error["fields"][field])
    assert not sim.broker.orders(DEMO_ACCOUNT)


def test_brackets_are_part_of_the_idempotency_fingerprint(bot, sim, contract_known) -> None:
    first = place(bot, {**BRACKETED_BUY, "type": "limit", "limit_price": "20000.00"}, key="fp")
    assert first.status_code == 201
    other = place(
        bot,
        {**BRACKETED_BUY, "type": "limit", "limit_price": "20000.00", "stop_loss_ticks": 9},
        key="fp",
    )
    # should refuse the same key with other brackets as another order
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_reused"


@pytest.mark.parametrize(
    ("side", "stop_ticks", "target_ticks"), [("buy", -8, 12), ("sell", 8, -12)]
)
def test_the_ticks_are_signed_as_the_broker_expects(
    bot, sim, contract_known, monkeypatch, side, stop_ticks, target_ticks
) -> None:
    sent: list[dict[str, Any]] = []
    place_order = ProjectXClient.place_order

    async def spy(self: ProjectXClient, **kwargs: Any) -> int:
        sent.append(kwargs)
        return await place_order(self, **kwargs)

    monkeypatch.setattr(ProjectXClient, "place_order", spy)
    response = place(bot, {**BRACKETED_BUY, "side": side}, key=f"signs-{side}")
    assert response.status_code == 201, response.json()
    (call,) = sent
    # should send stop loss as Stop (4) and take profit as Limit (1), signed by the side
    assert call["stop_loss_bracket"].to_wire() == {"ticks": stop_ticks, "type": 4}
    assert call["take_profit_bracket"].to_wire() == {"ticks": target_ticks, "type": 1}
