"""The desk a trader works from, in a real browser (Playwright driving Debian's Chromium) against
the whole system started by `manage.py serve`: the order ticket places through the same service
as the API, once per submission; refusals are said next to the field or the button; the chart
shows the fill; the act-fast buttons ask first and say what happened in the row.

Screenshots of each step go to test-output/desk/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import ROOT, ServedSystem, served_system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "desk"
MNQ = "CON.F.US.MNQ.Z26"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@contextmanager
def desk_page(system: ServedSystem, chromium_path: str) -> Iterator[Any]:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=BROWSER_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.goto(f"{system.url}/admin/login/?next=/desk/")
            page.fill("#id_username", system.username)
            page.fill("#id_password", system.password)
            page.click("input[type=submit]")
            page.wait_for_url("**/desk/")
            expect(page.locator("#connection")).to_have_attribute("data-state", "live")
            page.evaluate("window.__sameDocument = true")
            yield page
            # should never have reloaded the page
            assert page.evaluate("window.__sameDocument") is True
        finally:
            browser.close()


def fill_ticket(page: Any, **fields: str) -> None:
    """Fill the ticket by its labels (the accessible names the issue gives)."""
    labels = {
        "contract": "Contract",
        "side": "Side",
        "type": "Type",
        "size": "Size",
        "limit_price": "Limit price",
        "stop_price": "Stop price",
        "stop_loss": "Stop loss (ticks)",
        "take_profit": "Take profit (ticks)",
    }
    ticket = page.locator("#ticket")
    for name, value in fields.items():
        field = ticket.get_by_label(labels[name], exact=True)
        if name in ("side", "type"):
            field.select_option(value)
        else:
            field.fill(value)


def api_orders(api: httpx.Client) -> list[dict]:
    return api.get("/api/v1/orders/", params={"page_size": 500}).json()["results"]


@pytest.mark.timeout(240)
def test_the_ticket_places_once_per_submission_and_the_chart_shows_the_fill(
    tmp_path: Path, chromium_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The shipped configuration with one risk limit: no order above 3 contracts.
    config = (ROOT / "config" / "order_management.yaml").read_text()
    assert "    maxOrderSize: null" in config
    limited = tmp_path / "order_management.yaml"
    limited.write_text(config.replace("    maxOrderSize: null", "    maxOrderSize: 3", 1))
    monkeypatch.setenv("ORDERMGMT_CONFIG", str(limited))
    with served_system(tmp_path) as system, desk_page(system, chromium_path) as page:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        control = httpx.Client(base_url=system.simulator_url, timeout=30)
        place = page.get_by_role("button", name="Place order", exact=True)

        # 1. A resting limit order from the ticket: it opens, then fills when the broker fills it.
        fill_ticket(page, contract=MNQ, side="buy", type="limit", size="2", limit_price="20950")
        page.screenshot(path=SCREENSHOTS / "10-ticket-filled-in.png")
        place.click()
        result = page.locator("#ticket-result")
        # should say it was placed, and show the new order open in the table
        expect(result).to_contain_text("Placed: order")
        placed = api_orders(api)
        assert len(placed) == 1, placed
        order = placed[0]
        assert (order["side"], order["type"], order["size"], order["limit_price"]) == (
            "buy",
            "limit",
            2,
            "20950",
        )
        row = page.locator(f'tr[data-order-id="{order["id"]}"]')
        expect(row).to_have_attribute("data-status", "open")
        # should draw the working order's level on the chart (and say it in text)
        expect(page.locator("#chart-levels li")).to_contain_text(["order buy 2 limit 20950"])
        page.screenshot(path=SCREENSHOTS / "11-ticket-placed-open.png")

        control.post("/_sim/fill", json={"orderId": order["broker_order_id"]})
        expect(row).to_have_attribute("data-status", "filled")
        # should mark the fill on the chart, at its price, and drop the filled order's level
        fills = page.locator("#chart-fills li")
        expect(fills).to_have_count(1)
        expect(fills.first).to_contain_text("buy 2 @ 20950")
        expect(page.locator("#chart-levels li")).to_have_count(0)
        markers = page.evaluate("window.deskState.chart.markers()")
        assert [(m["side"], m["size"], m["price"]) for m in markers] == [("buy", 2, "20950")]
        page.screenshot(path=SCREENSHOTS / "12-filled-marker-on-chart.png")

        # 2. A double click on Place order places one order, not two.
        fill_ticket(page, type="market", size="1", limit_price="")
        place.dblclick()
        expect(result).to_contain_text("Placed: order")
        page.wait_for_function(
            "() => [...window.deskState.orders.values()].filter(o => o.type === 'market').length"
        )
        market = [o for o in api_orders(api) if o["type"] == "market"]
        # should have placed the market order exactly once
        assert len(market) == 1, market
        # ... and a resend of that very submission (the same key) is answered, not placed again
        again = page.evaluate(
            """async ({key, contract}) => {
                const body = {account: 1001, contract_id: contract, side: "buy", type: "market",
                              size: 1, idempotency_key: key};
                const send = () => fetch(window.DESK.ticketUrl, {method: "POST",
                    headers: {"Content-Type": "application/json",
                              "X-CSRFToken": window.DESK.csrfToken}, body: JSON.stringify(body)})
                    .then(r => r.json());
                const first = await send();
                const second = await send();
                return [first.row.id, second.row.id, second.replayed];
            }""",
            {"key": "resend-check-1", "contract": MNQ},
        )
        assert again[0] == again[1] and again[2] is True, again
        assert len([o for o in api_orders(api) if o["type"] == "market"]) == 2
        page.screenshot(path=SCREENSHOTS / "13-double-click-placed-once.png")

        # 3. Refusals in words, next to the field: a limit order without its price, a price
        # off the tick size.
        before = len(api_orders(api))
        fill_ticket(page, type="limit", size="1", limit_price="")
        place.click()
        error = page.locator("#ticket-error-limit_price")
        expect(error).to_have_text("required for a limit order")
        expect(page.get_by_label("Limit price", exact=True)).to_have_attribute(
            "aria-invalid", "true"
        )
        expect(result).to_contain_text("Not placed")
        fill_ticket(page, limit_price="20950.1")
        place.click()
        expect(error).to_have_text("20950.1 is not on the contract's tick size 0.25")
        fill_ticket(page, size="0", limit_price="20950")
        place.click()
        expect(page.locator("#ticket-error-size")).to_contain_text("greater than or equal to 1")
        page.screenshot(path=SCREENSHOTS / "14-validation-refusal.png")
        # should have placed nothing for the refused tickets
        assert len(api_orders(api)) == before

        # 4. A risk refusal, in words, next to the field it is about (the size).
        fill_ticket(page, type="market", size="5", limit_price="")
        place.click()
        expect(result).to_contain_text("Not placed")
        expect(page.locator("#ticket-error-size")).to_contain_text("maxOrderSize")
        expect(page.get_by_label("Size", exact=True)).to_have_attribute("aria-invalid", "true")
        page.screenshot(path=SCREENSHOTS / "15-risk-refusal.png")
        refused = [o for o in api_orders(api) if o["size"] == 5]
        # should have sent nothing to the broker (the refusal is kept as a rejected order)
        assert [(o["status"], o["broker_order_id"]) for o in refused] == [("rejected", None)]


@pytest.mark.timeout(240)
def test_cancel_all_asks_first_names_the_orders_and_reports_in_the_rows(
    tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with served_system(tmp_path) as system, desk_page(system, chromium_path) as page:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        ids = []
        for n, price in enumerate(["20900", "20925"]):
            body = {
                "account": 1001,
                "contract_id": MNQ,
                "side": "buy",
                "type": "limit",
                "size": 1,
                "limit_price": price,
            }
            placed = api.post("/api/v1/orders/", json=body, headers={"Idempotency-Key": f"ca-{n}"})
            assert placed.status_code == 201, placed.text
            ids.append(placed.json()["id"])
        for order_id in ids:
            expect(page.locator(f'tr[data-order-id="{order_id}"]')).to_have_attribute(
                "data-status", "open"
            )
        account = page.get_by_role("group", name="Account PRAC-V2-1001 (1001)")
        expect(account.locator('[data-field="working_orders"]')).to_have_text("2")

        account.get_by_role("button", name="Cancel all").focus()
        page.keyboard.press("Enter")
        dialog = page.locator("dialog#confirm")
        # should ask first, naming each order it will cancel; Go back has the focus
        expect(dialog).to_be_visible()
        expect(dialog.locator("#confirm-list li")).to_have_count(2)
        expect(dialog).to_contain_text(ids[0][:8])
        expect(page.locator("#confirm-back")).to_be_focused()
        page.screenshot(path=SCREENSHOTS / "20-cancel-all-confirm.png")
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()
        # should have cancelled nothing when the person went back
        assert {o["status"] for o in api_orders(api)} == {"open"}

        account.get_by_role("button", name="Cancel all").click()
        dialog.get_by_role("button", name="Cancel 2 orders").click()
        for order_id in ids:
            row = page.locator(f'tr[data-order-id="{order_id}"]')
            expect(row).to_have_attribute("data-status", "cancelled")
            # should say the result in the row itself
            expect(row.locator('[data-field="result"]')).to_have_text("Cancelled (Cancel all)")
        expect(account.locator('[data-field="result"]')).to_have_text("Cancelled 2, refused 0.")
        expect(account.locator('[data-field="working_orders"]')).to_have_text("0")
        page.screenshot(path=SCREENSHOTS / "21-cancel-all-done.png")
        assert {o["status"] for o in api_orders(api)} == {"cancelled"}


@pytest.mark.timeout(240)
def test_the_desk_and_the_admins_order_list_fit_a_1400_px_screen(
    tmp_path: Path, chromium_path: str
) -> None:
    from playwright.sync_api import expect

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with served_system(tmp_path) as system, desk_page(system, chromium_path) as page:
        api = httpx.Client(
            base_url=system.url, timeout=30, headers={"Authorization": f"Token {system.bot_token}"}
        )
        bracket = api.post(
            "/api/v1/orders/",
            json={
                "account": 1001,
                "contract_id": MNQ,
                "side": "buy",
                "type": "market",
                "size": 1,
                "stop_loss_ticks": 20,
                "take_profit_ticks": 40,
            },
            headers={"Idempotency-Key": "fit-bracket"},
        )
        assert bracket.status_code == 201, bracket.text
        entry = bracket.json()["id"]
        resting = api.post(
            "/api/v1/orders/",
            json={
                "account": 1001,
                "contract_id": MNQ,
                "side": "sell",
                "type": "limit",
                "size": 3,
                "limit_price": "21100",
            },
            headers={"Idempotency-Key": "fit-resting"},
        ).json()["id"]
        group = page.locator(f'#orders tr[data-group="{entry}"]')
        # should show the entry with its stop loss and take profit together, the entry first
        expect(group).to_have_count(3, timeout=15000)
        roles = group.locator('[data-field="role"]').all_inner_texts()
        assert [r.split()[0] for r in roles] == ["entry", "SL", "TP"], roles
        assert all(r.endswith(entry[:8]) for r in roles)
        row = page.locator(f'tr[data-order-id="{resting}"]')
        expect(row.get_by_role("button", name="Cancel")).to_be_visible()
        # should fit: nothing scrolls sideways, the Cancel button is on screen, ids are short
        assert page.evaluate("document.documentElement.scrollWidth") <= 1400
        assert page.evaluate(
            "document.querySelector('section.orders').scrollWidth"
        ) <= page.evaluate("document.querySelector('section.orders').clientWidth")
        box = row.get_by_role("button", name="Cancel").bounding_box()
        assert box is not None and box["x"] + box["width"] <= 1400
        expect(row.locator("td.id")).to_have_text(resting[:8])
        page.screenshot(path=SCREENSHOTS / "40-desk-bracket-group-fits-1400.png", full_page=True)

        # Keyboard and screen readers: every control has a name, and the ticket is walked by Tab.
        unnamed = page.evaluate(
            """() => [...document.querySelectorAll('button, select, input:not([type=hidden])')]
                .filter(el => el.offsetParent !== null || el.closest('dialog'))
                .filter(el => {
                    const named = (el.getAttribute('aria-label') || '').trim()
                        || (el.labels && [...el.labels].some(l => l.textContent.trim()))
                        || (el.tagName === 'BUTTON' && el.textContent.trim());
                    return !named;
                })
                .map(el => el.outerHTML.slice(0, 80))"""
        )
        assert unnamed == [], unnamed
        for name in (
            "Account",
            "Contract",
            "Side",
            "Type",
            "Size",
            "Limit price",
            "Stop price",
            "Stop loss (ticks)",
            "Take profit (ticks)",
        ):
            expect(page.locator("#ticket").get_by_label(name, exact=True)).to_have_count(1)
        page.locator("#ticket").get_by_label("Account", exact=True).focus()
        for _ in range(9):
            page.keyboard.press("Tab")
        # should reach Place order from the first field in field order
        expect(page.get_by_role("button", name="Place order", exact=True)).to_be_focused()

        admin = page.context.new_page()
        admin.goto(f"{system.url}/admin/orders/order/")
        table = admin.locator("#result_list")
        expect(table).to_be_visible()
        admin.screenshot(path=SCREENSHOTS / "41-admin-order-list-1400.png", full_page=True)
        # should show short ids (full id in the title), the bracket group and the overfilled flag
        expect(table.locator("th.column-short_id")).to_have_count(1)
        expect(table.locator("th.column-overfilled")).to_have_count(1)
        expect(table.get_by_text(resting[:8], exact=True)).to_have_count(1)
        assert table.get_by_text(resting, exact=True).count() == 0
        expect(table.locator("td.field-bracket").filter(has_text=entry[:8])).to_have_count(3)
        # should fit the screen without wrapping rows or a sideways scroll in the list
        assert admin.evaluate("document.documentElement.scrollWidth") <= 1400
        assert admin.evaluate(
            "(() => { const r = document.querySelector('#changelist .results');"
            " return r.scrollWidth <= r.clientWidth; })()"
        ), "the order list scrolls sideways at 1400 px"
        heights = admin.locator("#result_list tbody tr").evaluate_all(
            "rows => rows.map(r => r.getBoundingClientRect().height)"
        )
        assert max(heights) < 2 * min(heights), heights
        admin.close()

        # The desk's socket is served without permessage-deflate, whatever the browser offers:
        # per-socket compression of every frame was most of the fill -> desk time at 200 desks.
        from websockets.sync.client import connect

        session = next(c for c in page.context.cookies() if c["name"] == "sessionid")
        with connect(
            system.url.replace("http://", "ws://") + "/ws/desk/",
            additional_headers={"Cookie": f"sessionid={session['value']}", "Origin": system.url},
            compression="deflate",
        ) as socket:
            assert socket.response is not None
            assert "Sec-WebSocket-Extensions" not in socket.response.headers
            assert '"type": "hello"' in str(socket.recv(timeout=10))
