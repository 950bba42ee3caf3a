"""Every answer under /api/ is JSON in the one error shape, whatever goes wrong and wherever:
a path no route matches, an order id that is not a UUID, a wrong method, a bug in a view.
The rest of the site (admin, desk) keeps Django's HTML pages.

DEBUG is off here, as in production (pytest-django turns it off, as Django's test runner does).
"""

from __future__ import annotations

import logging

import pytest
from django.test import Client
from rest_framework.test import APIClient

from tests.helpers import place

pytestmark = pytest.mark.django_db(transaction=True)

NOT_A_UUID = "not-a-uuid"


def assert_error(response, status: int, code: str) -> dict:
    # should answer JSON in the documented shape, with the status and code a bot can act on
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    error = response.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", f"/api/v1/orders/{NOT_A_UUID}/"),
        ("patch", f"/api/v1/orders/{NOT_A_UUID}/"),
        ("post", f"/api/v1/orders/{NOT_A_UUID}/cancel/"),
        ("get", f"/api/v1/orders/{NOT_A_UUID}/fills/"),
        ("get", f"/api/v1/orders/{NOT_A_UUID}/transitions/"),
        ("get", "/api/v1/orders/123/"),
    ],
)
def test_an_order_id_that_is_not_a_uuid_is_a_json_404(bot, method: str, path: str) -> None:
    response = getattr(bot, method)(path, {"size": 1}, format="json", HTTP_IF_MATCH='"1"')
    assert_error(response, 404, "not_found")


def test_a_malformed_id_answers_like_an_unknown_one(bot) -> None:
    unknown = bot.get("/api/v1/orders/00000000-0000-0000-0000-000000000000/")
    malformed = bot.get(f"/api/v1/orders/{NOT_A_UUID}/")
    # should give a bot one answer for "no such order", however the id is wrong
    assert (malformed.status_code, malformed.json()) == (unknown.status_code, unknown.json())


@pytest.mark.parametrize(
    "path", ["/api/v1/nothing-here/", "/api/v2/orders/", "/api/", "/api/v1/orders/x/y/z/"]
)
def test_an_unknown_api_path_is_a_json_404(bot, path: str) -> None:
    assert_error(bot.get(path), 404, "not_found")


def test_an_unknown_api_path_is_a_json_404_before_authentication() -> None:
    # should not need a token to be told, in JSON, that nothing lives there
    assert_error(APIClient().get("/api/v1/nothing-here/"), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/api/v1/orders/"),
        ("put", "/api/v1/orders/00000000-0000-0000-0000-000000000000/"),
        ("get", "/api/v1/orders/00000000-0000-0000-0000-000000000000/cancel/"),
        ("post", "/api/v1/accounts/"),
    ],
)
def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(bot, method: str, path: str) -> None:
    response = getattr(bot, method)(path)
    assert_error(response, 405, "method_not_allowed")
    # should say which methods the resource takes
    assert response["Allow"]


def test_a_bug_in_a_view_is_a_json_500_that_leaks_nothing_and_is_logged(
    bot, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(**_: object) -> None:
        raise RuntimeError("secret-internal-detail")

    # A stand-in for any bug: the order list's selector fails in a way nothing handles.
    monkeypatch.setattr("api.views.orders.order_list", broken)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=bot.auth_headers["Authorization"])
    with caplog.at_level(logging.ERROR, logger="django.request"):
        response = client.get("/api/v1/orders/")
    assert_error(response, 500, "internal_error")
    # should tell the bot nothing of the cause: no message, no traceback
    body = response.content.decode()
    assert "secret-internal-detail" not in body
    assert "Traceback" not in body
    # should log the failure with its traceback for the operators
    (record,) = [r for r in caplog.records if r.name == "django.request"]
    assert record.exc_info is not None
    assert "secret-internal-detail" in str(record.exc_info[1])


def test_a_request_django_refuses_before_any_view_is_a_json_400(bot) -> None:
    # should refuse a Host the site does not serve in the API's shape too
    assert_error(bot.get("/api/v1/orders/", HTTP_HOST="evil.example"), 400, "invalid_request")


def test_the_api_keeps_working_after_an_error(bot) -> None:
    bot.get(f"/api/v1/orders/{NOT_A_UUID}/")
    # should leave the API serving normally (a 404 is not a broken state)
    assert place(bot, key="after-404").status_code == 201


@pytest.mark.parametrize(
    "path", ["/desk/orders/not-a-uuid/", "/not-the-api/", "/apiary/", "/admin/orders/nope/"]
)
def test_pages_outside_the_api_keep_djangos_html_404(staff_client: Client, path: str) -> None:
    response = staff_client.get(path)
    # should answer the site's usual HTML page, not the API's JSON
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.postgres  # the connection pool is PostgreSQL's (psycopg_pool)
def test_no_free_database_connection_is_a_503_to_retry_not_a_500(bot) -> None:
    from django.db import connection

    # Every pooled connection busy (here: taken by this test) for longer than the pool waits.
    connection.ensure_connection()
    pool = connection.pool
    assert pool is not None, "the PostgreSQL settings use a connection pool"
    connection.close()  # back to the pool: the request below must take one of its own
    taken = []
    waited, pool.timeout = pool.timeout, 0.2
    try:
        while len(taken) < pool.max_size:
            taken.append(pool.getconn())
        client = APIClient(raise_request_exception=False)
        client.credentials(HTTP_AUTHORIZATION=bot.auth_headers["Authorization"])
        response = client.get("/api/v1/orders/")
    finally:
        for held in taken:
            pool.putconn(held)
        pool.timeout = waited
    # should answer in the shape, with a code a bot can act on and when to retry
    assert_error(response, 503, "database_busy")
    assert response["Retry-After"] == "1"
