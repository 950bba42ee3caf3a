"""The desk's "Flatten account" button in a real browser against `manage.py serve`: it asks
for confirmation in a dialog naming what will happen, flattens the account with a working order
and a position through the kill switch, and the account row says it is flat and halted; the
ticket is then refused in words. Screenshots go to test-output/desk/."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import DESK_ORDER
from tests.serving import served_system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "desk"


@pytest.mark.timeout(180)
def test_the_flatten_button_confirms_then_flattens_the_account(
    tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with served_system(tmp_path) as system, sync_playwright() as playwright:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        account = DESK_ORDER["account"]
        market = {**DESK_ORDER, "type": "market", "limit_price": None, "size": 1}
        assert api.post("/api/v1/orders/", json=market).status_code == 201
        resting = api.post("/api/v1/orders/", json=DESK_ORDER).json()
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(f"{system.url}/admin/login/?next=/desk/")
            page.fill("#id_username", system.username)
            page.fill("#id_password", system.password)
            page.click("input[type=submit]")
            page.wait_for_url("**/desk/")
            page.evaluate("window.__sameDocument = true")
            header = page.get_by_role("group", name=f"Account PRAC-V2-{account} ({account})")
            button = header.get_by_role("button", name="Flatten account")
            expect(button).to_have_attribute("data-account", str(account))
            expect(header.locator('[data-field="trading_state"]')).to_have_text("active")
            expect(header.locator('[data-field="working_orders"]')).to_have_text("1")

            button.click()
            dialog = page.locator("dialog#confirm")
            # should ask first in a dialog naming what will happen: the halt, the order it
            # cancels, the position it closes
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text("cancels every working order")
            expect(dialog).to_contain_text(resting["id"][:8])
            expect(dialog).to_contain_text("Close long 1 MNQ.Z26 at market")
            page.screenshot(path=SCREENSHOTS / "50-flatten-confirm.png")
            dialog.get_by_role("button", name="Go back").click()
            # should do nothing when the person goes back
            expect(dialog).to_be_hidden()
            assert api.get(f"/api/v1/orders/{resting['id']}/").json()["status"] == "open"

            button.click()
            dialog.get_by_role("button", name="Flatten account now").click()
            result = header.locator('[data-field="result"]')
            # should flatten, and say so in the account's row, with the halted badge
            expect(result).to_contain_text("Account flat and halted", timeout=30_000)
            expect(result).to_contain_text("cancelled 1 orders, closed 1 positions")
            expect(header.locator('[data-field="trading_state"]')).to_have_text("halted")
            expect(page.locator(f'tr[data-order-id="{resting["id"]}"]')).to_have_attribute(
                "data-status", "cancelled"
            )
            expect(page.locator("#positions tbody tr")).to_have_count(0)
            expect(header.locator('[data-field="working_orders"]')).to_have_text("0")
            page.screenshot(path=SCREENSHOTS / "51-flattened-halted.png")

            # a halted account refuses the ticket, said next to the button in words
            ticket = page.locator("#ticket")
            ticket.get_by_label("Contract", exact=True).fill(DESK_ORDER["contract_id"])
            ticket.get_by_label("Type", exact=True).select_option("market")
            page.get_by_role("button", name="Place order").click()
            expect(page.locator("#ticket-result")).to_contain_text("Not placed")
            expect(page.locator("#ticket-result")).to_contain_text("halted")
            page.screenshot(path=SCREENSHOTS / "52-halted-refusal.png")

            (listed,) = [a for a in api.get("/api/v1/accounts/").json() if a["id"] == account]
            assert listed["trading_state"] == "halted"
            assert [
                p for p in api.get("/api/v1/positions/").json() if p["account"] == account
            ] == []
            assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()
