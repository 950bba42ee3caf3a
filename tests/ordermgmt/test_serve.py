"""`manage.py serve` (what `make run` starts): the real ASGI server with the simulator beside
it, driven over HTTP as a newcomer would with the printed curl line."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.timeout(120)
def test_serve_starts_the_system_and_the_printed_login_and_token_work(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DATABASE", "PROJECTX"))
    }
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        DJANGO_SECRET_KEY="t",
        DJANGO_SETTINGS_MODULE="ordermgmt.settings",
    )
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=60
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--port", str(port), "--simulator-port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            output.append(line)
            if "Uvicorn running" in line or server.poll() is not None:
                break
        text = "".join(output)
        token = re.search(r"bot token: (\w+)", text).group(1)
        login = re.search(r"login:\s+(\S+) / (\S+)", text)
        base = f"http://127.0.0.1:{port}"
        body = {
            "account": 1001,
            "contract_id": "CON.F.US.MNQ.Z26",
            "side": "buy",
            "type": "limit",
            "size": 1,
            "limit_price": "20950.00",
        }
        placed = httpx.post(
            f"{base}/api/v1/orders/",
            json=body,
            timeout=30,
            headers={"Authorization": f"Token {token}", "Idempotency-Key": "smoke"},
        )
        # should place the order through the real server and the simulator
        assert placed.status_code == 201, placed.text
        assert placed.json()["status"] == "open"
        # should serve the admin with its static files, and the printed login should work
        with httpx.Client(base_url=base, timeout=30) as browser:
            page = browser.get("/admin/login/")
            assert page.status_code == 200
            assert browser.get("/static/admin/css/base.css").status_code == 200
            csrf = browser.cookies["csrftoken"]
            logged_in = browser.post(
                "/admin/login/?next=/admin/",
                data={
                    "username": login.group(1),
                    "password": login.group(2),
                    "csrfmiddlewaretoken": csrf,
                },
                follow_redirects=True,
            )
            assert "Log out" in logged_in.text or "logout" in logged_in.text
    finally:
        server.terminate()
        server.wait(timeout=15)
