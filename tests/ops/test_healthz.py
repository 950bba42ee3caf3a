"""GET /healthz: the process is alive; it asks nothing of the database or the broker."""

from __future__ import annotations

import pytest
from django.test import Client


@pytest.mark.django_db
def test_it_answers_ok_without_touching_the_database(django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = Client().get("/healthz")
    # should say the process serves requests, and nothing else
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert "no-cache" in response["Cache-Control"]


def test_it_only_answers_get() -> None:
    # should refuse anything but a probe
    assert Client().post("/healthz").status_code == 405
