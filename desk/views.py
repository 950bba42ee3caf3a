"""The live order desk: the page, its snapshot, an order's story, and its two buttons.

The buttons go through the same services as the API, with the same version check: the page
sends the version of the row it shows, and a changed order is refused (412) with its current
row, which the page then shows.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from accounts.models import PositionClose
from accounts.selectors import accounts_visible_to
from desk.selectors import desk_accounts, desk_order_detail, desk_snapshot, order_row
from orders.amend import order_cancel
from orders.exceptions import ErrorDescription, IfMatchRequired, describe_error, error_body
from orders.flatten import account_flatten, flatten_status
from orders.lifecycle import cancel_http_status
from orders.models import TransitionTrigger
from orders.position_close import position_close
from orders.selectors import orders_visible_to


@login_required
@require_GET
def desk(request: HttpRequest) -> HttpResponse:
    return render(request, "desk/desk.html", {"accounts": desk_accounts(request.user)})


@login_required
@require_GET
def snapshot(request: HttpRequest) -> JsonResponse:
    return JsonResponse(desk_snapshot(request.user))


@login_required
@require_GET
def order_detail(request: HttpRequest, order_id: str) -> JsonResponse:
    order = get_object_or_404(orders_visible_to(request.user), pk=order_id)
    return JsonResponse(desk_order_detail(order))


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


@login_required
@require_POST
def order_cancel_view(request: HttpRequest, order_id: str) -> JsonResponse:
    order = get_object_or_404(orders_visible_to(request.user), pk=order_id)
    version = _body(request).get("version")
    try:
        if not isinstance(version, int):
            raise IfMatchRequired()
        order = order_cancel(
            order_id=order.pk,
            expected_version=version,
            actor=request.user.get_username(),
            trigger=TransitionTrigger.ADMIN,
        )
    except Exception as exc:
        described = describe_error(exc)
        if described is None:
            raise
        return _error(described)
    return JsonResponse({"row": order_row(order)}, status=cancel_http_status(order))


def _error(described: ErrorDescription) -> JsonResponse:
    """A refused action, in the API's one error shape and status; with the order's current row
    when the error carries it (the page shows the order as it is now)."""
    body: dict[str, Any] = described.body()
    if described.current is not None:
        body["row"] = order_row(described.current)
    return JsonResponse(body, status=described.http_status)


@login_required
@require_POST
def position_close_view(request: HttpRequest) -> JsonResponse:
    body = _body(request)
    # The desk sends the broker's account id as the number it was given; anything else (a
    # missing or non-numeric value) is no account, not a lookup that raises.
    account_id = body.get("account")
    account = (
        accounts_visible_to(request.user).filter(broker_account_id=account_id).first()
        if isinstance(account_id, int)
        else None
    )
    if account is None or not isinstance(body.get("contract_id"), str):
        return JsonResponse(error_body("not_found", "unknown account or contract"), status=404)
    try:
        close = position_close(
            account=account,
            contract_id=body["contract_id"],
            actor=request.user.get_username(),
            trigger=TransitionTrigger.ADMIN,
        )
    except Exception as exc:
        described = describe_error(exc)
        if described is None:
            raise
        return _error(described)
    status = 200 if close.state == PositionClose.State.DONE else 503
    return JsonResponse(
        {"state": close.state, "detail": close.detail, "closed_size": close.closed_size},
        status=status,
    )


@login_required
@require_POST
def account_flatten_view(request: HttpRequest, account_id: int) -> JsonResponse:
    """The desk's "Flatten account" button (the page asks for confirmation first)."""
    account = accounts_visible_to(request.user).filter(broker_account_id=account_id).first()
    if account is None:
        return JsonResponse(error_body("not_found", "unknown account"), status=404)
    try:
        run = account_flatten(
            account=account, actor=request.user.get_username(), trigger=TransitionTrigger.ADMIN
        )
    except Exception as exc:
        described = describe_error(exc)
        if described is None:
            raise
        return _error(described)
    return JsonResponse(
        {
            "status": flatten_status(run),
            "cancelled": run.cancelled,
            "closed": run.closed,
            "detail": run.detail,
        }
    )
