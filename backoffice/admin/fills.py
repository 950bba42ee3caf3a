from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from fills.models import Fill


@admin.register(Fill)
class FillAdmin(admin.ModelAdmin):
    list_display = [
        "broker_trade_id",
        "account",
        "order",
        "contract_id",
        "side",
        "size",
        "price",
        "fees",
        "voided",
        "broker_ts",
    ]
    list_filter = ["voided", "account", "contract_id"]
    search_fields = ["=broker_trade_id", "=broker_order_id", "=order__id"]
    list_select_related = ["account", "order"]
    raw_id_fields = ["order", "account"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
