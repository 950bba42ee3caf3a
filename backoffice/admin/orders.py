from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince

from accounts.models import Position, PositionClose
from backoffice.admin.accounts import PositionAdmin
from fills.models import FILL_FIELDS, ArchivedFill, Fill
from orders.exceptions import describe_error
from orders.models import (
    ORDER_FIELDS,
    ORDER_LIST_COLUMNS,
    TRANSITION_FIELDS,
    ArchivedOrder,
    ArchivedOrderTransition,
    Order,
    OrderTransition,
    TransitionTrigger,
)
from orders.position_close import position_close

logger = logging.getLogger(__name__)

# The bracket columns (orders/brackets.py writes them; nobody edits them here).
BRACKET_FIELDS = (
    "stop_loss_ticks",
    "take_profit_ticks",
    "bracket_role",
    "bracket_parent_id",
    "protection",
    "protection_checked_at",
    "unprotected_at",
    "oco_cancelled_by",
)


class OrderTransitionInline(admin.TabularInline):
    model = OrderTransition
    extra = 0
    can_delete = False
    fields = list(TRANSITION_FIELDS)
    readonly_fields = list(TRANSITION_FIELDS)
    ordering = ["version"]

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class FillInline(admin.TabularInline):
    model = Fill
    extra = 0
    can_delete = False
    fields = list(FILL_FIELDS)
    readonly_fields = list(FILL_FIELDS)

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# --- Actions: each calls the same service as the API, and records who did it. ---------------


@admin.action(description="Cancel the selected orders at the broker")
def cancel_orders(modeladmin: OrderAdmin, request: HttpRequest, queryset: QuerySet[Order]) -> None:
    from orders.amend import order_cancel

    done, failed = 0, []
    for order in queryset:
        try:
            # The version the person saw when they ticked the box: a changed order is refused.
            order_cancel(
                order_id=order.pk,
                expected_version=order.version,
                actor=request.user.get_username(),
                trigger=TransitionTrigger.ADMIN,
            )
            done += 1
        except Exception as exc:
            failed.append(f"{order.pk}: {_refusal(exc)}")
    _report(modeladmin, request, f"cancel requested for {done} order(s)", failed)


@admin.action(description="Verify the selected unknown orders with the broker now")
def verify_orders(modeladmin: OrderAdmin, request: HttpRequest, queryset: QuerySet[Order]) -> None:
    from orders.verification import order_verify

    outcomes, failed = [], []
    for order in queryset:
        try:
            result = order_verify(order_id=order.pk, actor=request.user.get_username())
            outcomes.append(f"{order.pk}: {result.outcome}")
        except Exception as exc:
            failed.append(f"{order.pk}: {_refusal(exc)}")
    _report(modeladmin, request, "; ".join(outcomes) or "nothing to verify", failed)


def _refusal(exc: Exception) -> str:
    """What to tell the person, from the one error mapping (the API and the desk say the same);
    anything else is a bug: logged with its traceback, and said as such."""
    described = describe_error(exc)
    if described is None:
        logger.exception("admin action failed unexpectedly")
        return f"failed unexpectedly ({type(exc).__name__}); see the log"
    return f"{described.message} ({described.code})"


def _report(
    modeladmin: admin.ModelAdmin, request: HttpRequest, summary: str, failed: list[str]
) -> None:
    modeladmin.message_user(request, summary, messages.SUCCESS if not failed else messages.WARNING)
    for line in failed:
        modeladmin.message_user(request, line, messages.ERROR)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = [
        *ORDER_LIST_COLUMNS,
        "bracket",
        "age_in_state",
        "broker_order_id",
        "created_at",
    ]
    list_filter = [
        "status",
        "overfilled",
        "bracket_role",
        "protection",
        "account",
        "contract_id",
        "created_at",
    ]
    # "=bracket_parent_id": an entry's id finds its children (with the entry itself by "=id").
    search_fields = ["=id", "=broker_order_id", "=idempotency_key", "=bracket_parent_id"]
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    raw_id_fields = ["account"]
    inlines = [OrderTransitionInline, FillInline]
    # The state only moves through the services; nobody edits it (or anything else the broker
    # owns) by hand here. Actions that act on orders call the services.
    readonly_fields = [*ORDER_FIELDS, "last_server_ts", *BRACKET_FIELDS, "bracket_group"]
    actions = [cancel_orders, verify_orders]

    @admin.display(description="Bracket")
    def bracket(self, order: Order) -> str:
        if not order.bracket_role:
            return ""
        group = str(order.bracket_parent_id or order.pk)[:8]
        flag = " UNPROTECTED" if order.unprotected_at else ""
        return f"{order.get_bracket_role_display()} {group}{flag}"

    @admin.display(description="Bracket group")
    def bracket_group(self, order: Order) -> str:
        """The entry and its children together, each a link to its own page."""
        entry_id = order.bracket_parent_id or (order.pk if order.bracket_role else None)
        if entry_id is None:
            return "-"
        group = list(
            Order.objects.filter(Q(pk=entry_id) | Q(bracket_parent_id=entry_id)).order_by(
                "created_at"
            )
        )
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">{}</a>: {} {}, {}{}{}</li>',
                (
                    (
                        reverse("admin:orders_order_change", args=[member.pk]),
                        member.get_bracket_role_display() or "order",
                        member.type,
                        member.size,
                        member.status,
                        f" @ {member.stop_price or member.limit_price}"
                        if (member.stop_price or member.limit_price)
                        else "",
                        " (this order)" if member.pk == order.pk else "",
                    )
                    for member in group
                ),
            ),
        )

    @admin.display(description="Age in state")
    def age_in_state(self, order: Order) -> str:
        return timesince(order.state_entered_at, timezone.now())

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).select_related("account")


@admin.action(description="Close the selected positions at market")
def close_positions(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Position]
) -> None:
    # The same coordination as POST /api/v1/positions/close. Registered here, on the accounts
    # app's Position admin, because orders depends on accounts and not the other way round.
    for position in queryset.select_related("account"):
        try:
            close = position_close(
                account=position.account,
                contract_id=position.contract_id,
                actor=request.user.get_username(),
                trigger=TransitionTrigger.ADMIN,
            )
        except Exception as exc:  # still in progress elsewhere, or could not be completed
            modeladmin.message_user(
                request, f"{position.contract_id}: {_refusal(exc)}", messages.ERROR
            )
            continue
        level = messages.SUCCESS if close.state == PositionClose.State.DONE else messages.ERROR
        modeladmin.message_user(
            request, f"{position.contract_id}: {close.state}. {close.detail}", level
        )


# django-stubs declares `actions` a generic instance variable (a ClassVar cannot hold a type
# variable), so setting it on the class is "ambiguous" to mypy; at runtime it is the class
# attribute Django reads. OrderAdmin sets its actions in its body; PositionAdmin lives in
# backoffice.admin.accounts, which this module imports, so its action is attached from here.
PositionAdmin.actions = [close_positions]  # type: ignore[misc]


# --- The archive: readable, never writable (archive_orders is the only writer). -------------


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ArchivedOrderTransitionInline(_ReadOnlyInline):
    model = ArchivedOrderTransition
    fields = list(TRANSITION_FIELDS)
    readonly_fields = list(TRANSITION_FIELDS)
    ordering = ["version"]


class ArchivedFillInline(_ReadOnlyInline):
    model = ArchivedFill
    fields = list(FILL_FIELDS)
    readonly_fields = list(FILL_FIELDS)


@admin.register(ArchivedOrder)
class ArchivedOrderAdmin(admin.ModelAdmin):
    list_display = [*ORDER_LIST_COLUMNS, "broker_order_id", "created_at", "archived_at"]
    list_filter = ["status", "overfilled", "account", "contract_id", "created_at"]
    search_fields = ["=id", "=broker_order_id", "=idempotency_key"]
    date_hierarchy = "created_at"
    list_select_related = ["account"]
    inlines = [ArchivedOrderTransitionInline, ArchivedFillInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False  # archived orders leave only by the deletion retention
