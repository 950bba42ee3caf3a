from __future__ import annotations

from decimal import Decimal

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Account, Position
from accounts.selectors import accounts_visible_to
from marketdata.selectors import NO_MARK, account_unrealized_pnl, position_marks

DECIMAL_OR_NULL = {"type": "string", "format": "decimal", "nullable": True}


def _exact(value: Decimal | None) -> str | None:
    """A computed figure as a decimal string with every digit it has: DRF's DecimalField
    would round it to a fixed number of places."""
    return None if value is None else format(value.normalize(), "f")


class AccountOutputSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="broker_account_id")
    unrealized_pnl = serializers.SerializerMethodField(
        help_text="Sum of the open positions' unrealized P&L; 0 when flat, null when a price "
        "or a contract's tick value is not known yet"
    )

    class Meta:
        model = Account
        fields = ["id", "name", "balance", "can_trade", "simulated", "active", "unrealized_pnl"]
        read_only_fields = fields

    @extend_schema_field(DECIMAL_OR_NULL)
    def get_unrealized_pnl(self, account: Account) -> str | None:
        pnl = self.context["unrealized_pnl"].get(account.pk)
        return _exact(pnl)


class AccountListApi(APIView):
    @extend_schema(operation_id="accounts_list", responses=AccountOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        accounts = list(accounts_visible_to(request.user))
        context = {"unrealized_pnl": account_unrealized_pnl(accounts)}
        return Response(AccountOutputSerializer(accounts, many=True, context=context).data)


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


class PositionListApi(APIView):
    @extend_schema(operation_id="positions_list", responses=PositionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        positions = list(
            Position.objects.filter(account__in=accounts_visible_to(request.user))
            .select_related("account")
            .exclude(size=0)
        )
        context = {"marks": position_marks(positions)}
        return Response(PositionOutputSerializer(positions, many=True, context=context).data)
