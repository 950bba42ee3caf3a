"""The desk's price cells in a real browser (Playwright driving Debian's Chromium) against the
system started by `manage.py serve`: a position opened through the API shows its last price and
unrealized P&L, and both follow the simulator's quotes without a reload."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.serving import served_system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "desk"
MNQ = "CON.F.US.MNQ.Z26"


@pytest.mark.timeout(180)
def test_a_positions_price_and_pnl_move_live_on_the_desk(
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
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
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

            bought = api.post(
                "/api/v1/orders/",
                json={
                    "account": 1001,
                    "contract_id": MNQ,
                    "side": "buy",
                    "type": "market",
                    "size": 2,
                },
                headers={"Idempotency-Key": "browser-marks"},
            )
            assert bought.status_code == 201, bought.text
            row = page.locator(f'tr[data-position="1001:{MNQ}"]')
            # should show the new position at the market price, flat
            expect(row.locator('[data-field="last_price"]')).to_have_text("21000", timeout=15000)
            expect(row.locator('[data-field="unrealized_pnl"]')).to_have_text("0")

            control.post("/_sim/price", json={"contractId": MNQ, "price": "20998.50"})
            # should follow the quote: 6 ticks down at 0.50 on 2 contracts, shown as a loss
            expect(row.locator('[data-field="last_price"]')).to_have_text("20998.5")
            pnl = row.locator('[data-field="unrealized_pnl"]')
            expect(pnl).to_have_text("-6")
            expect(pnl).to_have_class("num pnl loss")
            page.screenshot(path=SCREENSHOTS / "5-position-marks.png")
            # should never have reloaded the page
            assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()
