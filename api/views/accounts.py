from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Account, Position
from accounts.selectors import accounts_visible_to


class AccountOutputSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(source="broker_account_id")

    class Meta:
        model = Account
        fields = ["id", "name", "balance", "can_trade", "simulated", "active"]
        read_only_fields = fields


class AccountListApi(APIView):
    @extend_schema(operation_id="accounts_list", responses=AccountOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        return Response(AccountOutputSerializer(accounts_visible_to(request.user), many=True).data)


class PositionOutputSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account.broker_account_id")
    average_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
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
        ]
        read_only_fields = fields


class PositionListApi(APIView):
    @extend_schema(operation_id="positions_list", responses=PositionOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        positions = (
            Position.objects.filter(account__in=accounts_visible_to(request.user))
            .select_related("account")
            .exclude(size=0)
        )
        return Response(PositionOutputSerializer(positions, many=True).data)
