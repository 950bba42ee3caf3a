"""The desk's "Flatten account" button in a real browser against `manage.py serve`: it asks
for confirmation, flattens the account through the kill switch, and says how it ended."""

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
            button = page.locator(f'button.flatten[data-account="{account}"]')
            expect(button).to_have_text("Flatten account")

            dialogs: list[str] = []

            def dismiss(dialog) -> None:
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.once("dialog", dismiss)
            button.click()
            # should ask first, and do nothing when the person says no
            expect(page.locator("#toast")).to_be_hidden()
            assert dialogs and "cancels every working order" in dialogs[0]
            assert api.get(f"/api/v1/orders/{resting['id']}/").json()["status"] == "open"

            page.once("dialog", lambda dialog: dialog.accept())
            button.click()
            # should flatten and say so
            expect(page.locator("#toast")).to_contain_text("Account flat", timeout=30_000)
            expect(page.locator("#toast")).to_contain_text("closed 1 positions")
            page.screenshot(path=SCREENSHOTS / "5-flattened.png")
            (listed,) = [a for a in api.get("/api/v1/accounts/").json() if a["id"] == account]
            assert listed["trading_state"] == "halted"
            assert [
                p for p in api.get("/api/v1/positions/").json() if p["account"] == account
            ] == []
        finally:
            browser.close()
