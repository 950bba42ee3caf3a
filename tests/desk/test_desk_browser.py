"""The live desk in a real browser (Playwright driving Debian's Chromium) against the whole
system started by `manage.py serve`: an order placed through the API appears, fills partly and
fully, and another is cancelled with its button, all without a reload."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.helpers import DESK_ORDER
from tests.serving import served_system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "desk"


@pytest.mark.timeout(180)
def test_an_order_moves_live_on_the_desk_and_cancels_from_its_button(
    tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with served_system(tmp_path) as system, sync_playwright() as playwright:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        control = httpx.Client(base_url=system.simulator_url, timeout=30)
        browser = playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 800})
            page.goto(f"{system.url}/admin/login/?next=/desk/")
            page.fill("#id_username", system.username)
            page.fill("#id_password", system.password)
            page.click("input[type=submit]")
            page.wait_for_url("**/desk/")
            expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            page.evaluate("window.__sameDocument = true")

            placed = api.post(
                "/api/v1/orders/", json=DESK_ORDER, headers={"Idempotency-Key": "browser-1"}
            ).json()
            row = page.locator(f'tr[data-order-id="{placed["id"]}"]')
            # should show the new order without a reload
            expect(row).to_have_attribute("data-status", "open")
            page.screenshot(path=SCREENSHOTS / "1-placed.png")

            control.post("/_sim/fill", json={"orderId": placed["broker_order_id"], "size": 1})
            # should show the partial fill as it happens
            expect(row).to_have_attribute("data-status", "partially_filled")
            expect(row.locator('[data-field="filled"]')).to_have_text("1 / 2")
            page.screenshot(path=SCREENSHOTS / "2-partially-filled.png")

            control.post("/_sim/fill", json={"orderId": placed["broker_order_id"]})
            # should show it filled, still in the same page
            expect(row).to_have_attribute("data-status", "filled")
            expect(row.locator('[data-field="filled"]')).to_have_text("2 / 2")
            row.click()
            expect(page.locator("#detail-fills li")).to_have_count(2)
            page.screenshot(path=SCREENSHOTS / "3-filled-with-timeline.png")

            other = api.post(
                "/api/v1/orders/",
                json={**DESK_ORDER, "size": 1},
                headers={"Idempotency-Key": "browser-2"},
            ).json()
            other_row = page.locator(f'tr[data-order-id="{other["id"]}"]')
            expect(other_row).to_have_attribute("data-status", "open")
            other_row.locator("button.cancel").click()
            dialog = page.locator("dialog#confirm")
            # should ask first, naming the order it will cancel
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text(f"order {other['id'][:8]}")
            dialog.get_by_role("button", name="Cancel the order").click()
            # should cancel through the button and show the broker's confirmation
            expect(other_row).to_have_attribute("data-status", "cancelled")
            page.screenshot(path=SCREENSHOTS / "4-cancelled.png")
            # should never have reloaded the page
            assert page.evaluate("window.__sameDocument") is True
            assert api.get(f"/api/v1/orders/{other['id']}/").json()["status"] == "cancelled"
        finally:
            browser.close()
