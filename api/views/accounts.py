"""The bot API for accounts and positions: the accounts with their trading state, today's
realized P&L and the risk limits in force; halting, resuming and flattening (the kill switch)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Account, AccountFlatten, Position
from accounts.selectors import (
    account_limits,
    accounts_visible_to,
    effective_trading_state,
    realized_pnl_by_contract,
)
from accounts.services import account_halt, account_resume
from marketdata.selectors import NO_MARK, account_unrealized_pnl, position_marks
from orders.flatten import account_flatten, flatten_status

DECIMAL_OR_NULL = {"type": "string", "format": "decimal", "nullable": True}
DECIMAL = {"type": "string", "format": "decimal"}


def _exact(value: Decimal | None) -> str | None:
    """A computed figure as a decimal string with every digit it has: DRF's DecimalField
    would round it to a fixed number of places."""
    return None if value is None else format(value.normalize(), "f")


def _money(value: Decimal) -> str:
    """Realized P&L: in cents, as the broker counts it."""
    return format(value.quantize(Decimal("0.01")), "f")


class AccountOutputSerializer(serializers.ModelSerializer):
    """`context`: `now`, `pnl` (realized P&L today by (account pk, contract)) and
    `unrealized_pnl` (by account pk): `_account_context`."""

    id = serializers.IntegerField(source="broker_account_id")
    unrealized_pnl = serializers.SerializerMethodField(
        help_text="Sum of the open positions' unrealized P&L; 0 when flat, null when a price "
        "or a contract's tick value is not known yet"
    )
    trading_state = serializers.SerializerMethodField(
        help_text="active, reduce_only (only orders that reduce a position) or halted"
    )
    realized_pnl_today = serializers.SerializerMethodField(
        help_text="Realized P&L net of fees of the broker's trades since the trading day began "
        "(risk.tradingDayStartsAt)"
    )
    limits = serializers.SerializerMethodField(
        help_text="The risk limits in force (the account's overrides, else orderManagement.risk; "
        "null = no limit), by their YAML names"
    )

    class Meta:
        model = Account
        fields = [
            "id",
            "name",
            "balance",
            "can_trade",
            "simulated",
            "active",
            "unrealized_pnl",
            "trading_state",
            "trading_state_cause",
            "trading_state_reason",
            "trading_state_changed_at",
            "trading_state_changed_by",
            "realized_pnl_today",
            "limits",
        ]
        read_only_fields = fields

    def _now(self) -> datetime:
        now: datetime = self.context.get("now") or timezone.now()
        return now

    @extend_schema_field(DECIMAL_OR_NULL)
    def get_unrealized_pnl(self, account: Account) -> str | None:
        pnl = self.context["unrealized_pnl"].get(account.pk)
        return _exact(pnl)

    def get_trading_state(self, account: Account) -> str:
        return effective_trading_state(account, now=self._now())

    @extend_schema_field(DECIMAL)
    def get_realized_pnl_today(self, account: Account) -> str:
        pnl = self.context["pnl"]
        return _money(sum((v for (a, _), v in pnl.items() if a == account.pk), Decimal(0)))

    def get_limits(self, account: Account) -> dict[str, Any]:
        return account_limits(account).as_dict()


def _account_context(accounts: list[Account]) -> dict[str, Any]:
    now = timezone.now()
    return {
        "now": now,
        "pnl": realized_pnl_by_contract(account_ids=[a.pk for a in accounts], now=now),
        "unrealized_pnl": account_unrealized_pnl(accounts),
    }


def _account_body(account: Account) -> Any:
    return AccountOutputSerializer(account, context=_account_context([account])).data


class AccountListApi(APIView):
    @extend_schema(operation_id="accounts_list", responses=AccountOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        accounts = list(accounts_visible_to(request.user))
        return Response(
            AccountOutputSerializer(accounts, many=True, context=_account_context(accounts)).data
        )


def _visible_account(request: Request, account_id: int) -> Account:
    return get_object_or_404(accounts_visible_to(request.user), broker_account_id=account_id)


class AccountActionInputSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class AccountHaltApi(APIView):
    @extend_schema(
        operation_id="accounts_halt",
        description="Halt the account: every new order is refused (409 account_halted) until it "
        "is resumed. Working orders and positions are left as they are (see flatten). Audited.",
        request=AccountActionInputSerializer,
        responses=AccountOutputSerializer,
    )
    def post(self, request: Request, account_id: int) -> Response:
        account = _visible_account(request, account_id)
        data = AccountActionInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        account = account_halt(
            account=account,
            actor=request.user.get_username(),
            reason=data.validated_data["reason"],
        )
        return Response(_account_body(account))


class AccountResumeApi(APIView):
    @extend_schema(
        operation_id="accounts_resume",
        description="Back to active (staff only: a bot may halt its account, never lift a halt "
        "or the daily loss limit's state). The daily loss limit does not fire again on the "
        "same trading day. Audited.",
        request=AccountActionInputSerializer,
        responses={200: AccountOutputSerializer, 403: OpenApiResponse(description="not staff")},
    )
    def post(self, request: Request, account_id: int) -> Response:
        account = _visible_account(request, account_id)
        if not request.user.is_staff:
            raise PermissionDenied("only staff may resume an account")
        data = AccountActionInputSerializer(data=request.data or {})
        data.is_valid(raise_exception=True)
        account = account_resume(
            account=account,
            actor=request.user.get_username(),
            reason=data.validated_data["reason"],
        )
        return Response(_account_body(account))


class FlattenOutputSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account.broker_account_id")
    status = serializers.SerializerMethodField()

    class Meta:
        model = AccountFlatten
        fields = [
            "status",
            "cancelled",
            "closed",
            "id",
            "account",
            "state",
            "step",
            "attempts",
            "requested_by",
            "started_at",
            "finished_at",
            "detail",
        ]
        read_only_fields = fields

    def get_status(self, run: AccountFlatten) -> str:
        return flatten_status(run)


class AccountFlattenApi(APIView):
    @extend_schema(
        operation_id="accounts_flatten",
        description=(
            "The kill switch: halt the account, cancel every working order on it (bracket "
            "children included), close every open position at market, and wait (at most "
            "risk.flattenTimeoutSeconds) for the broker to confirm. `status` is `flat` when the "
            "broker shows nothing working and no position, else `pending` (call again: it "
            "carries on from the broker's truth). Concurrent calls join one run; a run whose "
            "process died is taken over by the next call once its lease "
            "(risk.flattenLeaseSeconds) expires. The account stays halted: resume it after."
        ),
        request=None,
        responses=FlattenOutputSerializer,
    )
    def post(self, request: Request, account_id: int) -> Response:
        account = _visible_account(request, account_id)
        run = account_flatten(account=account, actor=request.user.get_username())
        return Response(FlattenOutputSerializer(run).data)


class PositionOutputSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account.broker_account_id")
    average_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
    )
    last_price = serializers.SerializerMethodField(
        help_text="The contract's last traded price from the market hub; null until quoted"
    )
    unrealized_pnl = serializers.SerializerMethodField(
        help_text="(last - average) / tick size * tick value * size, negated when short; null "
        "without a last price"
    )
    realized_pnl_today = serializers.SerializerMethodField(
        help_text="Realized P&L net of fees in this contract since the trading day began"
    )

    class Meta:
        model = Position
        fields = [
            "account",
            "contract_id",
            "type",
            "size",
            "average_price",
            "last_server_ts",
            "version",
            "last_price",
            "unrealized_pnl",
            "realized_pnl_today",
        ]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_OR_NULL)
    def get_last_price(self, position: Position) -> str | None:
        price = self.context["marks"].get(position.pk, NO_MARK).last_price
        return _exact(price)

    @extend_schema_field(DECIMAL_OR_NULL)
    def get_unrealized_pnl(self, position: Position) -> str | None:
        pnl = self.context["marks"].get(position.pk, NO_MARK).unrealized_pnl
        return _exact(pnl)

    @extend_schema_field(DECIMAL)
    def get_realized_pnl_today(self, position: Position) -> str:
        pnl = self.context["pnl"]
        return _money(pnl.get((position.account_id, position.contract_id), Decimal(0)))


class PositionListApi(APIView):
    @extend_schema(operation_id="positions_list", responses=PositionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        positions = list(
            Position.objects.filter(account__in=accounts_visible_to(request.user))
            .select_related("account")
            .exclude(size=0)
        )
        pnl = realized_pnl_by_contract(
            account_ids={p.account_id for p in positions}, now=timezone.now()
        )
        context = {"marks": position_marks(positions), "pnl": pnl}
        return Response(PositionOutputSerializer(positions, many=True, context=context).data)
