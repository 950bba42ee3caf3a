"""The desk's health strip in a real browser (Playwright driving Debian's Chromium): `manage.py
serve --no-listener` on PostgreSQL with a real `manage.py listen_gateway` process beside it;
the strip is green while the listener runs and turns red when it stops, without a reload, and a
click on a light shows its detail. Screenshots go to test-output/desk/."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.serving import ROOT, served_system

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "desk"

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(240)
def test_the_health_strip_turns_red_when_the_listener_stops(
    tmp_path: Path, chromium_path: str
) -> None:
    from django.db import connection
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    database = connection.settings_dict
    database_url = (
        f"postgres://{database['USER'] or 'postgres'}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    with served_system(tmp_path, "--no-listener", database_url=database_url) as system:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PROJECTX"))},
            "DJANGO_SETTINGS_MODULE": "ordermgmt.settings",
            "DATABASE_URL": database_url,
            "DJANGO_SECRET_KEY": "tests",
            "PROJECTX_API_URL": system.simulator_url,
            "PROJECTX_USER_HUB_URL": f"{system.simulator_url}/hubs/user",
            "PROJECTX_USERNAME": "demo",
            "PROJECTX_API_KEY": "demo-api-key",
        }
        log = (tmp_path / "listener.log").open("w")
        listener = subprocess.Popen(
            [sys.executable, "manage.py", "listen_gateway", "--sweep-interval", "0.5"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with sync_playwright() as playwright:
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
                    page.evaluate("window.__sameDocument = true")
                    broker = page.get_by_role("button", name="Broker", exact=False)
                    applying = page.locator("#light-listener")
                    # should be green while the listener runs and applies (or has nothing to)
                    expect(broker).to_have_attribute("data-level", "green", timeout=30000)
                    expect(applying).to_have_attribute("data-level", "green")
                    expect(page.locator("#light-stuck")).to_have_attribute("data-level", "green")
                    expect(page.locator("#light-protection")).to_have_attribute(
                        "data-level", "green"
                    )
                    page.screenshot(path=SCREENSHOTS / "30-health-green.png")

                    listener.terminate()
                    listener.wait(timeout=30)
                    # should turn red without a reload: nobody is connected to the broker and
                    # nobody applies its events any more
                    expect(broker).to_have_attribute("data-level", "red", timeout=15000)
                    expect(applying).to_have_attribute("data-level", "red")
                    expect(applying).to_contain_text("stopped", timeout=20000)
                    # should say so to a screen reader too, in words
                    expect(applying).to_have_attribute(
                        "aria-label",
                        re.compile(r"^Listener: red, stopped \(last heartbeat \d+ s ago\)$"),
                    )
                    applying.click()
                    detail = page.locator("#health-detail")
                    # should show the detail on a click: which listener, when it last applied
                    expect(detail).to_be_visible()
                    expect(applying).to_have_attribute("aria-expanded", "true")
                    expect(detail).to_contain_text("events applied, last")
                    page.screenshot(path=SCREENSHOTS / "31-health-red-listener-stopped.png")
                    assert page.evaluate("window.__sameDocument") is True
                finally:
                    browser.close()
        finally:
            if listener.poll() is None:
                listener.kill()
            listener.wait(timeout=10)
            log.close()
