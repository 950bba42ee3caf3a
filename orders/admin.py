from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.timesince import timesince

from fills.models import Fill
from orders.models import Order, OrderTransition


class OrderTransitionInline(admin.TabularInline):
    model = OrderTransition
    extra = 0
    can_delete = False
    fields = [
        "version",
        "from_state",
        "to_state",
        "at",
        "time_in_previous_state",
        "trigger",
        "actor",
        "reason",
        "is_correction",
        "server_ts",
    ]
    readonly_fields = fields
    ordering = ["version"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class FillInline(admin.TabularInline):
    model = Fill
    extra = 0
    can_delete = False
    fields = [
        "broker_trade_id",
        "side",
        "size",
        "price",
        "fees",
        "profit_and_loss",
        "voided",
        "broker_ts",
        "received_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "status",
        "account",
        "contract_id",
        "side",
        "type",
        "size",
        "filled_size",
        "avg_fill_price",
        "age_in_state",
        "broker_order_id",
        "created_at",
    ]
    list_filter = ["status", "account", "contract_id", "created_at"]
    search_fields = ["=id", "=broker_order_id", "=idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    inlines = [OrderTransitionInline, FillInline]
    # The state only moves through the services; nobody edits it (or anything else the broker
    # owns) by hand here. Actions that act on orders call the services.
    readonly_fields = [
        "id",
        "account",
        "contract_id",
        "side",
        "type",
        "size",
        "limit_price",
        "stop_price",
        "trail_price",
        "idempotency_key",
        "broker_order_id",
        "status",
        "status_reason",
        "version",
        "state_entered_at",
        "filled_size",
        "avg_fill_price",
        "last_server_ts",
        "created_at",
        "updated_at",
    ]

    @admin.display(description="Age in state")
    def age_in_state(self, order: Order) -> str:
        return timesince(order.state_entered_at, timezone.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("account")
