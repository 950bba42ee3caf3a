"""The risk controls outside the bot API: the admin's overrides and actions, and the desk's
"Flatten account" button; each through the same services, audited with the person."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Account, AccountAudit, AccountFlatten
from tests.helpers import DEMO_ACCOUNT, LIMIT_BUY, MARKET_BUY, place, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def staff(accounts) -> Client:
    User.objects.create_superuser("desk-lead", "lead@example.com", "pw")
    client = Client()
    client.login(username="desk-lead", password="pw")
    return client


def act(client: Client, action: str, ids: list) -> str:
    response = client.post(
        "/admin/accounts/account/",
        {"action": action, "_selected_action": [str(i) for i in ids]},
        follow=True,
    )
    return response.content.decode()


def test_an_override_set_in_the_admin_is_in_force_and_audited(bot, sim, staff) -> None:
    account = Account.objects.get(broker_account_id=DEMO_ACCOUNT)
    response = staff.post(
        f"/admin/accounts/account/{account.pk}/change/",
        {
            "name": account.name,
            "active": "on",
            "members": [bot.user.pk],
            "max_order_size": "1",
            "max_position_size": "",
            "max_working_orders": "",
            "max_orders_per_minute": "",
            "daily_loss_limit": "250.50",
            "on_daily_loss_limit": "halted",
            "_save": "Save",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    # should be the limit in force for the account's bots
    refused = place(bot, {**LIMIT_BUY, "size": 2}, key="over-the-override")
    assert refused.status_code == 422
    assert refused.json()["error"]["fields"]["limit"] == "maxOrderSize"
    limits = bot.get("/api/v1/accounts/").json()[0]["limits"]
    assert limits["dailyLossLimit"] == "250.5"
    assert limits["onDailyLossLimit"] == "halt"  # spelt as in the YAML
    # should record who changed what
    audit = AccountAudit.objects.get(action="risk_limits")
    assert audit.actor == "desk-lead"
    assert "max_order_size: 1" in audit.reason and "daily_loss_limit" in audit.reason


def test_the_admin_halts_resumes_and_flattens_with_the_person_recorded(
    bot, sim, staff, listener
) -> None:
    listener()
    account = Account.objects.get(broker_account_id=DEMO_ACCOUNT)
    act(staff, "halt_accounts", [account.pk])
    account.refresh_from_db()
    assert (account.trading_state, account.trading_state_changed_by) == ("halted", "desk-lead")
    act(staff, "resume_accounts", [account.pk])
    account.refresh_from_db()
    assert account.trading_state == "active"

    assert place(bot, {**MARKET_BUY, "size": 2}, key="open").status_code == 201
    page = act(staff, "flatten_accounts", [account.pk])
    # should flatten through the same service and say how it ended
    assert "flat; cancelled 0 orders, closed 1 positions" in page
    assert all(p["size"] == 0 for p in sim.broker.positions(DEMO_ACCOUNT))
    run = AccountFlatten.objects.get()
    assert run.requested_by == "desk-lead"
    assert set(
        AccountAudit.objects.filter(action="flatten_step").values_list("actor", flat=True)
    ) == {"desk-lead"}


def test_the_desk_shows_a_flatten_button_and_its_view_flattens(bot, sim, listener) -> None:
    listener()
    user = User.objects.create_user("trader", password="pw")
    Account.objects.get(broker_account_id=DEMO_ACCOUNT).members.add(user)
    desk = Client()
    desk.force_login(user)
    page = desk.get("/desk/").content.decode()
    # should offer the button per account, which the page confirms before posting
    assert f'data-account="{DEMO_ACCOUNT}"' in page and "Flatten account" in page
    assert place(bot, {**MARKET_BUY, "size": 1}, key="open").status_code == 201
    resting = place(bot, key="resting").json()["id"]
    response = desk.post(f"/desk/accounts/{DEMO_ACCOUNT}/flatten/", "{}", "application/json")
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "flat"
    assert [e["order"] for e in body["cancelled"]] == [resting]
    assert [(c["side"], c["size"]) for c in body["closed"]] == [("long", 1)]
    wait_for(lambda: sim.broker.open_orders(DEMO_ACCOUNT) == [])
    # an account the person cannot see is not found
    other = desk.post("/desk/accounts/1002/flatten/", "{}", "application/json")
    assert other.status_code == 404
