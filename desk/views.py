"""The live order desk: the page, its snapshot, an order's story, the ticket, the chart's data,
the health strip, and its buttons.

Every action goes through the same service as the API, with the same checks: the ticket through
`order_place` with a key the page makes per submission; Cancel and Cancel all with the version
of each row the page shows, so a changed order is refused (412) with its current row, which the
page then shows. Refusals answer in the API's one error shape (`describe_error`).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.models import Account, PositionClose
from accounts.selectors import accounts_visible_to
from desk.actions import account_cancel_all
from desk.bars import MAX_BARS, UNIT_MINUTES, chart_bars
from desk.forms import LABELS, TicketForm
from desk.selectors import (
    HEALTH_LIGHTS,
    account_rows,
    desk_accounts,
    desk_chart_overlay,
    desk_health,
    desk_order_detail,
    desk_snapshot,
    order_row,
)
from orders.amend import order_cancel
from orders.exceptions import ErrorDescription, IfMatchRequired, describe_error, error_body
from orders.flatten import account_flatten, flatten_status
from orders.lifecycle import cancel_http_status
from orders.models import Order, TransitionTrigger
from orders.placement import order_place
from orders.position_close import position_close
from orders.selectors import orders_visible_to
from orders.validation import payload_from


@login_required
@require_GET
def desk(request: HttpRequest) -> HttpResponse:
    accounts = desk_accounts(request.user)
    form = TicketForm(account_ids=[a.broker_account_id for a in accounts])
    return render(
        request,
        "desk/desk.html",
        {
            "accounts": accounts,
            "ticket": form,
            "labels": LABELS,
            "minutes": UNIT_MINUTES,
            "health_lights": HEALTH_LIGHTS,
        },
    )


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


def _visible_account(request: HttpRequest, account_id: object) -> Account | None:
    if not isinstance(account_id, int) or isinstance(account_id, bool):
        return None
    return accounts_visible_to(request.user).filter(broker_account_id=account_id).first()


def _refused(exc: Exception) -> JsonResponse:
    described = describe_error(exc)
    if described is None:
        raise exc
    return _error(described)


@login_required
@require_POST
def ticket_place_view(request: HttpRequest) -> JsonResponse:
    """The order ticket's Place order: the API's placement service, with the key the page made
    for this submission (a double click or a resend of the same submission places once)."""
    accounts = desk_accounts(request.user)
    form = TicketForm(_body(request), account_ids=[a.broker_account_id for a in accounts])
    if not form.is_valid():
        return JsonResponse(
            error_body("invalid_request", "the ticket is not valid", form.error_fields()),
            status=400,
        )
    account = next(a for a in accounts if a.broker_account_id == form.cleaned_data["account"])
    try:
        result = order_place(
            account=account,
            payload=payload_from(account=account, **form.order_terms()),
            client_key=form.cleaned_data["idempotency_key"],
            actor=request.user.get_username(),
            trigger=TransitionTrigger.ADMIN,
        )
    except Exception as exc:
        return _refused(exc)
    order = Order.objects.get(pk=result.order_id)
    body: dict[str, Any] = {"row": order_row(order), "replayed": result.replayed}
    if result.body and "error" in result.body:
        body["error"] = result.body["error"]  # a replayed refusal (risk): said as the first time
    return JsonResponse(body, status=result.http_status)


@login_required
@require_POST
def account_cancel_all_view(request: HttpRequest, account_id: int) -> JsonResponse:
    """Cancel all: every working order of the account the page shows, each with its version."""
    account = _visible_account(request, account_id)
    if account is None:
        return JsonResponse(error_body("not_found", "unknown account"), status=404)
    # The rows the person saw when they confirmed: {"orders": [{"id", "version"}, ...]}.
    shown = _body(request).get("orders")
    versions = {
        str(item["id"]): item["version"]
        for item in (shown if isinstance(shown, list) else [])
        if isinstance(item, dict) and isinstance(item.get("version"), int)
    }
    outcome = account_cancel_all(
        account=account, versions=versions, actor=request.user.get_username()
    )
    return JsonResponse(outcome.as_dict(row=order_row))


@login_required
@require_GET
def health_view(request: HttpRequest) -> JsonResponse:
    """The health strip and the account header: the page's first look, and what it asks for
    while its socket is down (otherwise the server pushes it, desk/health_push.py)."""
    return JsonResponse(desk_health(request.user))


@login_required
@require_GET
def chart_view(request: HttpRequest) -> JsonResponse:
    """Candles for the chart (the broker's bars, cached briefly) and the account's fills on
    the contract since the first candle. Without the broker the fills still come, with the
    reason the candles did not."""
    contract_id = request.GET.get("contract_id", "")
    try:
        minutes = int(request.GET.get("minutes", "1"))
    except ValueError:
        minutes = 0
    if not contract_id or len(contract_id) > 64 or minutes not in UNIT_MINUTES:
        return JsonResponse(
            error_body(
                "invalid_request",
                "give contract_id and minutes (one of "
                + ", ".join(str(m) for m in UNIT_MINUTES)
                + ")",
            ),
            status=400,
        )
    count = 120 if minutes == 1 else min(MAX_BARS, 288)
    body: dict[str, Any] = {"minutes": minutes, "bars": [], "bars_error": None}
    try:
        body["bars"] = chart_bars(contract_id=contract_id, minutes=minutes, count=count)
    except Exception as exc:
        described = describe_error(exc)
        if described is None:
            raise
        body["bars_error"] = described.message
    since = timezone.now() - timedelta(minutes=minutes * count)
    body.update(desk_chart_overlay(request.user, contract_id=contract_id, since=since))
    return JsonResponse(body)


@login_required
@require_POST
def account_flatten_view(request: HttpRequest, account_id: int) -> JsonResponse:
    """The desk's "Flatten account" button (the page asks for confirmation first). The answer
    carries the account's header, so the page shows the halted state and the P&L at once."""
    account = accounts_visible_to(request.user).filter(broker_account_id=account_id).first()
    if account is None:
        return JsonResponse(error_body("not_found", "unknown account"), status=404)
    try:
        run = account_flatten(
            account=account, actor=request.user.get_username(), trigger=TransitionTrigger.ADMIN
        )
    except Exception as exc:
        return _refused(exc)
    account.refresh_from_db()
    return JsonResponse(
        {
            "status": flatten_status(run),
            "cancelled": run.cancelled,
            "closed": run.closed,
            "detail": run.detail,
            "account": account_rows([account])[0],
        }
    )
