from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import Account
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
