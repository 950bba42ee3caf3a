"""One error shape for the whole API: `{"error": {"code", "message", "fields"?}}`.

Domain errors are named exceptions; what each means (code, HTTP status, message) is
`orders.exceptions.describe_error`, the one mapping the desk and the admin use too. This handler
renders it, and DRF's and Django's own errors, in the shape; views never build error responses.
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults as django_defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orders.exceptions import describe_error, error_body


def retry_after_header(seconds: float) -> str:
    """Retry-After is a whole number of seconds: rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _flatten(detail: Any) -> Any:
    if isinstance(detail, dict):
        return {key: _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        return [_flatten(item) for item in detail]
    return str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    described = describe_error(exc)
    if described is not None:
        response = Response(described.body(), status=described.http_status)
        if described.retry_after is not None:
            response["Retry-After"] = retry_after_header(described.retry_after)
        if described.current is not None:
            from api.serializers import OrderOutputSerializer

            response.data["order"] = OrderOutputSerializer(described.current).data
            response["ETag"] = f'"{described.current.version}"'
        return response

    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    handled = drf_exception_handler(exc, context)
    if handled is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = _flatten(exc.detail)
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        handled.data = error_body("invalid_request", "the request is not valid", fields)
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        handled.data = error_body(
            codes if isinstance(codes, str) else exc.default_code, str(exc.detail)
        )
    return handled


# --- Errors Django answers before or after a view: the root urlconf's handler400/404/500. -
# An /api/ path no route matches (a non-UUID order id included: the routes take `<uuid:...>`),
# and an exception no view handled, reach Django's handlers, not DRF's. Under /api/ they answer
# the same shape as above; everywhere else (admin, desk) Django's own pages. Django calls these
# only with DEBUG off, as in production and in the test suite; with DEBUG on its debug pages win.

API_PATH_PREFIX = "/api/"


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith(API_PATH_PREFIX)


def _json_error(code: str, message: str, http_status: int) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=http_status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if _is_api(request):
        return _json_error("invalid_request", "the request is not valid", 400)
    return django_defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    # Worded as DRF words a 404 inside a view, so a malformed id and an unknown one read alike.
    if _is_api(request):
        return _json_error(
            exceptions.NotFound.default_code, str(exceptions.NotFound.default_detail), 404
        )
    return django_defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    # Django logs the exception with its traceback (logger `django.request`) as it answers; the
    # client learns only that it happened, never what.
    if _is_api(request):
        return _json_error("internal_error", "an internal error occurred; it has been logged", 500)
    return django_defaults.server_error(request)
