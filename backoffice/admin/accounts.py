from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from accounts.models import Account, Position, PositionClose


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = ["broker_account_id", "name", "balance", "can_trade", "simulated", "active"]
    list_filter = ["active", "can_trade", "simulated"]
    search_fields = ["=broker_account_id", "name"]
    # Balance and permissions are the broker's truth, mirrored; only `active` is ours to set.
    readonly_fields = [
        "broker_account_id",
        "balance",
        "can_trade",
        "simulated",
        "version",
        "created_at",
        "updated_at",
    ]


@admin.register(Position)
class PositionAdmin(admin.ModelAdmin):
    list_display = ["account", "contract_id", "type", "size", "average_price", "last_server_ts"]
    list_filter = ["type", "account"]
    search_fields = ["contract_id", "=account__broker_account_id"]
    list_select_related = ["account"]
    readonly_fields = [
        "account",
        "contract_id",
        "type",
        "size",
        "average_price",
        "broker_position_id",
        "last_server_ts",
        "version",
        "created_at",
        "updated_at",
    ]

    def has_add_permission(self, request: object) -> bool:
        return False


@admin.register(PositionClose)
class PositionCloseAdmin(admin.ModelAdmin):
    list_display = [
        "contract_id",
        "account",
        "state",
        "requested_by",
        "closed_size",
        "closed_side",
        "cancelled_orders",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state"]
    readonly_fields = [f.name for f in PositionClose._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
