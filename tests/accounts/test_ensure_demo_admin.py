from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client, override_settings


@pytest.mark.django_db
def test_it_prints_a_login_that_works(tmp_path: Path) -> None:
    out = StringIO()
    with override_settings(VAR_DIR=tmp_path):
        call_command("ensure_demo_admin", "--url", "http://127.0.0.1:8000", stdout=out)
        call_command("ensure_demo_admin", stdout=StringIO())  # a second run keeps the login
    login_line = next(line for line in out.getvalue().splitlines() if "login:" in line)
    username, password = (part.strip() for part in login_line.split(":", 1)[1].split("/"))
    client = Client()
    # should print the admin URL and credentials that log in to the admin
    assert "http://127.0.0.1:8000/admin/" in out.getvalue()
    assert client.login(username=username, password=password)
    assert client.get("/admin/orders/order/").status_code == 200
