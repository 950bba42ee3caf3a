"""`manage.py serve` (what `make run` starts): the real ASGI server with the simulator beside
it, driven over HTTP as a newcomer would with the printed curl line."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.serving import served_system


@pytest.mark.timeout(120)
def test_serve_starts_the_system_and_the_printed_login_and_token_work(tmp_path: Path) -> None:
    with served_system(tmp_path) as system:
        body = {
            "account": 1001,
            "contract_id": "CON.F.US.MNQ.Z26",
            "side": "buy",
            "type": "limit",
            "size": 1,
            "limit_price": "20950.00",
        }
        placed = httpx.post(
            f"{system.url}/api/v1/orders/",
            json=body,
            timeout=30,
            headers={"Authorization": f"Token {system.bot_token}", "Idempotency-Key": "smoke"},
        )
        # should place the order through the real server and the simulator
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "open"
        # should print a curl line a newcomer can paste
        assert "curl -s -X POST" in system.output
        # should serve the admin with its static files, and the printed login should work
        with httpx.Client(base_url=system.url, timeout=30) as browser:
            assert browser.get("/admin/login/").status_code == 200
            assert browser.get("/static/admin/css/base.css").status_code == 200
            logged_in = browser.post(
                "/admin/login/?next=/desk/",
                data={
                    "username": system.username,
                    "password": system.password,
                    "csrfmiddlewaretoken": browser.cookies["csrftoken"],
                },
                follow_redirects=True,
            )
            assert logged_in.url.path == "/desk/"
            assert "Order desk" in logged_in.text
