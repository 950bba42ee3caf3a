from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest

from accounts.models import (
    Account,
    AccountAudit,
    AccountFlatten,
    Position,
    PositionClose,
    RealizedPnl,
)
from accounts.services import account_halt, account_resume, account_risk_limits_update
from orders.exceptions import describe_error
from orders.models import TransitionTrigger

logger = logging.getLogger(__name__)

# The per-account overrides of orderManagement.risk: editable here, empty = the YAML's value.
RISK_OVERRIDES = [
    "max_order_size",
    "max_position_size",
    "max_working_orders",
    "max_orders_per_minute",
    "daily_loss_limit",
    "on_daily_loss_limit",
]
TRADING_STATE_FIELDS = [
    "trading_state",
    "trading_state_cause",
    "trading_state_reason",
    "trading_state_changed_at",
    "trading_state_changed_by",
    "loss_limit_day",
]


def _refusal(exc: Exception) -> str:
    described = describe_error(exc)
    if described is None:
        logger.exception("admin action failed unexpectedly")
        return f"failed unexpectedly ({type(exc).__name__}); see the log"
    return f"{described.message} ({described.code})"


@admin.action(description="Halt the selected accounts (refuse every new order)")
def halt_accounts(
    modeladmin: AccountAdmin, request: HttpRequest, queryset: QuerySet[Account]
) -> None:
    for account in queryset:
        account_halt(
            account=account, actor=request.user.get_username(), reason="halted in the admin"
        )
        modeladmin.message_user(request, f"{account}: halted", messages.SUCCESS)


@admin.action(description="Resume the selected accounts (back to active)")
def resume_accounts(
    modeladmin: AccountAdmin, request: HttpRequest, queryset: QuerySet[Account]
) -> None:
    for account in queryset:
        account_resume(
            account=account, actor=request.user.get_username(), reason="resumed in the admin"
        )
        modeladmin.message_user(request, f"{account}: active", messages.SUCCESS)


@admin.action(description="Flatten the selected accounts: halt, cancel every order, close all")
def flatten_accounts(
    modeladmin: AccountAdmin, request: HttpRequest, queryset: QuerySet[Account]
) -> None:
    from orders.flatten import account_flatten, flatten_status

    for account in queryset:
        try:
            run = account_flatten(
                account=account,
                actor=request.user.get_username(),
                trigger=TransitionTrigger.ADMIN,
            )
        except Exception as exc:
            modeladmin.message_user(request, f"{account}: {_refusal(exc)}", messages.ERROR)
            continue
        status = flatten_status(run)
        modeladmin.message_user(
            request,
            f"{account}: {status}; cancelled {len(run.cancelled)} orders, closed "
            f"{len(run.closed)} positions. {run.detail}",
            messages.SUCCESS if status == AccountFlatten.Status.FLAT else messages.WARNING,
        )


@admin.register(Account)
class AccountAdmin(admin.ModelAdmin):
    list_display = [
        "broker_account_id",
        "name",
        "balance",
        "can_trade",
        "simulated",
        "active",
        "trading_state",
    ]
    list_filter = ["active", "can_trade", "simulated", "trading_state"]
    search_fields = ["=broker_account_id", "name"]
    actions = [halt_accounts, resume_accounts, flatten_accounts]
    fieldsets = [
        (None, {"fields": ["broker_account_id", "name", "active", "balance", "can_trade"]}),
        (
            "Trading state (change it with the actions: halt, resume, flatten)",
            {"fields": tuple(TRADING_STATE_FIELDS)},
        ),
        (
            "Risk limits: overrides of orderManagement.risk (empty = the YAML's)",
            {"fields": tuple(RISK_OVERRIDES)},
        ),
        (None, {"fields": ["members", "simulated", "version", "created_at", "updated_at"]}),
    ]
    filter_horizontal = ["members"]
    # Balance and permissions are the broker's truth, mirrored; the trading state changes only
    # through its audited actions. `active` and the risk overrides are ours to set.
    readonly_fields = [
        "broker_account_id",
        "balance",
        "can_trade",
        "simulated",
        "version",
        "created_at",
        "updated_at",
        *TRADING_STATE_FIELDS,
    ]

    def save_model(
        self, request: HttpRequest, obj: Account, form: ModelForm[Any], change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        changed = {
            name: form.cleaned_data.get(name)
            for name in RISK_OVERRIDES
            if name in form.changed_data
        }
        account_risk_limits_update(account=obj, changes=changed, actor=request.user.get_username())


@admin.register(AccountAudit)
class AccountAuditAdmin(admin.ModelAdmin):
    list_display = ["created_at", "account", "action", "from_state", "to_state", "actor", "reason"]
    list_filter = ["action", "account"]
    list_select_related = ["account"]
    readonly_fields = [f.name for f in AccountAudit._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(RealizedPnl)
class RealizedPnlAdmin(admin.ModelAdmin):
    list_display = ["trading_day", "account", "contract_id", "profit_and_loss", "fees", "trades"]
    list_filter = ["trading_day", "account"]
    list_select_related = ["account"]
    readonly_fields = [f.name for f in RealizedPnl._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(AccountFlatten)
class AccountFlattenAdmin(admin.ModelAdmin):
    list_display = [
        "account",
        "state",
        "status",
        "step",
        "attempts",
        "requested_by",
        "started_at",
        "finished_at",
    ]
    list_filter = ["state", "status"]
    list_select_related = ["account"]
    readonly_fields = [f.name for f in AccountFlatten._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


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
