"""Fuzz every operation of the published OpenAPI schema: no input may cause a 5xx.

Schemathesis generates requests from /api/schema/ and sends them to the Django app in-process
(WSGI), authenticated as a bot, with the simulator as the broker.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error


def closing_its_responses(app: Any) -> Any:
    """The app, with each response's body read and the response closed, as a WSGI server does
    once it has sent the body: Django sends `request_finished` (the pooled connection back, the
    work the request deferred) from that close(), which schemathesis's client never calls. A
    request left unfinished kept its thread in a request for the tests that ran after it."""

    def app_closing(environ: Any, start_response: Any) -> list[bytes]:
        response = app(environ, start_response)
        try:
            return [b"".join(response)]
        finally:
            response.close()

    return app_closing


@pytest.fixture
def api_schema(bot, sim):
    app = closing_its_responses(get_wsgi_application())
    return schemathesis.openapi.from_wsgi("/api/schema/", app, headers=bot.auth_headers)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(300)
@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_no_request_makes_the_api_fail_with_a_5xx(case, bot) -> None:
    response = case.call(headers=bot.auth_headers)
    # should answer every generated request without a server error
    case.validate_response(response, checks=[not_a_server_error])
