"""The bot API for orders: validate, call one service, serialize."""

from __future__ import annotations

import time
from typing import Any

from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import PositionClose
from accounts.selectors import accounts_visible_to
from api.authentication import account_for_placement
from api.errors import error_body
from api.serializers import (
    INCLUDE_ARCHIVED_HELP,
    FillOutputSerializer,
    OrderCreateInputSerializer,
    OrderIncludingArchivedOutputSerializer,
    OrderListFilterSerializer,
    OrderModifyInputSerializer,
    OrderOutputSerializer,
    OrderTransitionOutputSerializer,
    order_placement_body,
)
from fills.selectors import order_fills
from orders.amend import order_cancel, order_modify
from orders.brackets import bracket_children
from orders.exceptions import CloseFailed, IfMatchRequired
from orders.lifecycle import cancel_http_status
from orders.models import BracketRole, Order, OrderIncludingArchived
from orders.placement import order_place, timing
from orders.position_close import position_close
from orders.selectors import (
    order_list,
    order_transitions,
    orders_including_archived_visible_to,
    orders_visible_to,
)
from orders.validation import payload_from

IDEMPOTENCY_DOC = (
    "Optional `Idempotency-Key` header (1-255 printable ASCII characters). The same key with the "
    "same order returns the first response again, with `Idempotent-Replayed: true`; with a "
    "different order it is refused with 422; while the first request is still being processed, "
    "409. Keys are kept for `idempotency.keyTtlSeconds` (1 hour by default). Without the header "
    "the key is derived from the order (account, contract, side, type, size, prices) and the "
    "current time bucket (`idempotency.derivedKeyBucketSeconds`, 60 s by default): an identical "
    "order sent again within the same bucket is treated as a retry of the first. Every answer "
    "carries a `Server-Timing` header: the milliseconds each step of the placement took (auth, "
    "validation, storing, turn, broker, settling, response)."
)


INCLUDE_ARCHIVED_PARAMETER = OpenApiParameter(
    "include_archived", OpenApiTypes.BOOL, OpenApiParameter.QUERY, description=INCLUDE_ARCHIVED_HELP
)


def _etag(order: Order | OrderIncludingArchived) -> str:
    return f'"{order.version}"'


def _order_response(
    request: Request, order: Order | OrderIncludingArchived, status: int, data: Any = None
) -> Response:
    response = Response(
        data if data is not None else OrderOutputSerializer(order).data, status=status
    )
    response["ETag"] = _etag(order)
    response["Location"] = request.build_absolute_uri(
        reverse("api:order-detail", kwargs={"order_id": order.pk})
    )
    return response


def _if_match_version(request: Request) -> int:
    """The version in `If-Match: "<version>"`; a change without it is refused (428)."""
    raw = request.headers.get("If-Match")
    if raw is None:
        raise IfMatchRequired()
    value = raw.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isdigit():
        raise serializers.ValidationError({"If-Match": ['expected a version, e.g. "3"']})
    return int(value)


class OrderPagination(CursorPagination):
    ordering = "-created_at"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class OrderListCreateApi(APIView):
    @extend_schema(
        operation_id="orders_list",
        parameters=[OrderListFilterSerializer],
        responses=OrderOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        filters = OrderListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = dict(filters.validated_data)
        if "status" in params:
            params["status"] = sorted(params["status"])
        orders = order_list(user=request.user, **params)
        output = (
            OrderIncludingArchivedOutputSerializer
            if params["include_archived"]
            else OrderOutputSerializer
        )
        paginator = OrderPagination()
        page = paginator.paginate_queryset(orders, request, view=self) or []
        entries = [order.pk for order in page if order.bracket_role == BracketRole.ENTRY]
        context = {"bracket_children": bracket_children(entries)}
        return paginator.get_paginated_response(output(page, many=True, context=context).data)

    @extend_schema(
        operation_id="orders_create",
        description=IDEMPOTENCY_DOC,
        request=OrderCreateInputSerializer,
        parameters=[OpenApiParameter("Idempotency-Key", OpenApiTypes.STR, OpenApiParameter.HEADER)],
        responses={
            201: OpenApiResponse(OrderOutputSerializer, "Accepted by the broker"),
            202: OpenApiResponse(OrderOutputSerializer, "Outcome not yet known: poll the order"),
            422: OpenApiResponse(OrderOutputSerializer, "Rejected by the broker"),
        },
    )
    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        # Authentication and throttling, timed for the placement's Server-Timing.
        started = time.perf_counter()
        super().initial(request, *args, **kwargs)
        request.auth_seconds = time.perf_counter() - started  # type: ignore[attr-defined]

    def post(self, request: Request) -> Response:
        with timing.recording() as steps:
            steps["auth"] = getattr(request, "auth_seconds", 0.0)
            with timing.step("validation"):
                data = OrderCreateInputSerializer(data=request.data)
                data.is_valid(raise_exception=True)
                fields = dict(data.validated_data)
                account = account_for_placement(request.user, fields.pop("account"))
                if account is None:
                    raise serializers.ValidationError({"account": ["unknown account"]})
                payload = payload_from(account=account, **fields)

            result = order_place(
                account=account,
                payload=payload,
                client_key=request.headers.get("Idempotency-Key"),
                actor=request.user.get_username(),
                render=order_placement_body,
            )
            response = Response(result.body, status=result.http_status)
            if result.version is not None:
                response["ETag"] = f'"{result.version}"'
            response["Location"] = request.build_absolute_uri(
                reverse("api:order-detail", kwargs={"order_id": result.order_id})
            )
            if result.replayed:
                response["Idempotent-Replayed"] = "true"
        response["Server-Timing"] = timing.server_timing(steps)
        return response


def _visible_order(request: Request, order_id: str) -> Order:
    return get_object_or_404(orders_visible_to(request.user), pk=order_id)


def _include_archived(request: Request) -> bool:
    raw = request.query_params.get("include_archived")
    if raw is None:
        return False
    try:
        return bool(serializers.BooleanField().to_internal_value(raw))
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"include_archived": exc.detail}) from None


def _readable_order(request: Request, order_id: str) -> Order | OrderIncludingArchived:
    """The order to read: hot only, or from either table with `?include_archived=1`."""
    if _include_archived(request):
        return get_object_or_404(orders_including_archived_visible_to(request.user), pk=order_id)
    return _visible_order(request, order_id)


class OrderDetailApi(APIView):
    @extend_schema(
        operation_id="orders_retrieve",
        parameters=[INCLUDE_ARCHIVED_PARAMETER],
        responses=OrderOutputSerializer,
    )
    def get(self, request: Request, order_id: str) -> Response:
        order = _readable_order(request, order_id)
        if isinstance(order, OrderIncludingArchived):
            data = OrderIncludingArchivedOutputSerializer(order).data
            return _order_response(request, order, 200, data)
        return _order_response(request, order, 200)

    @extend_schema(
        operation_id="orders_modify",
        request=OrderModifyInputSerializer,
        parameters=[OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER)],
        responses=OrderOutputSerializer,
    )
    def patch(self, request: Request, order_id: str) -> Response:
        order = _visible_order(request, order_id)
        data = OrderModifyInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        order = order_modify(
            order_id=order.pk,
            expected_version=_if_match_version(request),
            changes=dict(data.validated_data),
            actor=request.user.get_username(),
        )
        return _order_response(request, order, 200)


class OrderCancelApi(APIView):
    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        parameters=[OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER)],
        responses={
            200: OpenApiResponse(OrderOutputSerializer, "Cancelled (or already cancelled)"),
            202: OpenApiResponse(
                OrderOutputSerializer,
                "Cancel sent, not yet confirmed by the broker: the order is pending_cancel and "
                "its status_reason says why; poll it, or retry the cancel (safe)",
            ),
            409: OpenApiResponse(description="not_cancellable: the order has already ended"),
        },
    )
    def post(self, request: Request, order_id: str) -> Response:
        order = _visible_order(request, order_id)
        order = order_cancel(
            order_id=order.pk,
            expected_version=_if_match_version(request),
            actor=request.user.get_username(),
        )
        # 202 while the broker has not confirmed the cancel: the order says why.
        return _order_response(request, order, cancel_http_status(order))


class OrderTransitionsApi(APIView):
    @extend_schema(
        operation_id="orders_transitions",
        parameters=[INCLUDE_ARCHIVED_PARAMETER],
        responses=OrderTransitionOutputSerializer(many=True),
    )
    def get(self, request: Request, order_id: str) -> Response:
        order = _readable_order(request, order_id)
        return Response(
            OrderTransitionOutputSerializer(order_transitions(order=order), many=True).data
        )


class OrderFillsApi(APIView):
    @extend_schema(
        operation_id="orders_fills",
        parameters=[INCLUDE_ARCHIVED_PARAMETER],
        responses=FillOutputSerializer(many=True),
    )
    def get(self, request: Request, order_id: str) -> Response:
        order = _readable_order(request, order_id)
        return Response(FillOutputSerializer(order_fills(order=order), many=True).data)


class PositionCloseInputSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="The broker's account id")
    contract_id = serializers.CharField(max_length=64)


class PositionCloseOutputSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account.broker_account_id")

    class Meta:
        model = PositionClose
        fields = [
            "id",
            "account",
            "contract_id",
            "state",
            "step",
            "attempts",
            "requested_by",
            "started_at",
            "finished_at",
            "cancelled_orders",
            "closed_size",
            "closed_side",
            "detail",
        ]
        read_only_fields = fields


class PositionCloseApi(APIView):
    @extend_schema(
        operation_id="positions_close",
        description=(
            "Close the account's position in the contract: cancel its working orders, wait for "
            "the broker to confirm, then close the position as it stands, at market. One close "
            "per account and contract at a time: a request during a close joins it and gets its "
            "result, for up to concurrencyControl.positionCloseTimeoutSeconds; then 409 "
            "close_in_progress with Retry-After. New orders on the contract are refused with "
            "409 until the close ends. A close whose process died is taken over (by the next "
            "request or the stuck sweep) once its lease expires, and finished from the "
            "broker's truth. A close that fails answers 503 close_failed with Retry-After."
        ),
        request=PositionCloseInputSerializer,
        responses={
            200: PositionCloseOutputSerializer,
            409: OpenApiResponse(description="close_in_progress: retry after Retry-After"),
            503: OpenApiResponse(description="close_failed, with the close under `close`"),
        },
    )
    def post(self, request: Request) -> Response:
        data = PositionCloseInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        account = (
            accounts_visible_to(request.user)
            .filter(broker_account_id=data.validated_data["account"])
            .first()
        )
        if account is None:
            raise serializers.ValidationError({"account": ["unknown account"]})
        close = position_close(
            account=account,
            contract_id=data.validated_data["contract_id"],
            actor=request.user.get_username(),
        )
        body = PositionCloseOutputSerializer(close).data
        if close.state != PositionClose.State.DONE:
            return Response(
                {**error_body(CloseFailed.code, close.detail), "close": body},
                status=503,
                headers={"Retry-After": str(CloseFailed.retry_after)},
            )
        return Response(body)
