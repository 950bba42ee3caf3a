from __future__ import annotations

import logging
from typing import Any

from django.contrib import admin, messages
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
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

# Numbers read down a column: right-aligned, in figures of one width.
_RIGHT = '<span style="display:block;text-align:right;font-variant-numeric:tabular-nums">{}</span>'

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
    # Fits a 1400 px screen beside the admin's sidebar and filters: an 8-character id (the
    # link; search takes the full one, the title shows it), the order's terms in one column,
    # numbers right-aligned, the contract without its common prefix, the bracket group and the
    # overfilled flag visible, times without their date (the date hierarchy has it).
    list_display = [
        "short_id",
        "status",
        "account_id_short",
        "terms",
        "filled",
        "average",
        "overfilled",
        "contract",
        "bracket",
        "age_in_state",
        "broker_id",
        "created",
    ]
    list_display_links = ["short_id"]
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

    @admin.display(description="Id", ordering="id")
    def short_id(self, order: Order) -> str:
        return format_html('<span title="{}">{}</span>', order.pk, str(order.pk)[:8])

    @admin.display(description="Acct", ordering="account__broker_account_id")
    def account_id_short(self, order: Order) -> str:
        return format_html(
            '<span title="{}">{}</span>', order.account.name, order.account.broker_account_id
        )

    @admin.display(description="Order")
    def terms(self, order: Order) -> str:
        price = order.limit_price or order.stop_price
        at = f" {format(price.normalize(), 'f')}" if price is not None else ""
        # Non-breaking spaces: one line per order, however narrow the column gets.
        return "\u00a0".join(f"{order.side} {order.size} {order.type}{at}".split())

    @admin.display(description="Filled", ordering="filled_size")
    def filled(self, order: Order) -> str:
        return format_html(_RIGHT, f"{order.filled_size} / {order.size}")

    @admin.display(description="Avg", ordering="avg_fill_price")
    def average(self, order: Order) -> str:
        value = order.avg_fill_price
        return format_html(_RIGHT, "-" if value is None else format(value.normalize(), "f"))

    @admin.display(description="Broker id", ordering="broker_order_id")
    def broker_id(self, order: Order) -> str:
        return format_html(_RIGHT, order.broker_order_id or "-")

    @admin.display(description="Created", ordering="created_at")
    def created(self, order: Order) -> str:
        if order.created_at is None:
            return "-"
        local = timezone.localtime(order.created_at)
        return format_html(
            '<span title="{}">{}</span>', local.isoformat(), local.strftime("%H:%M:%S")
        )

    @admin.display(description="Contract", ordering="contract_id")
    def contract(self, order: Order) -> str:
        short = order.contract_id.removeprefix("CON.F.US.")
        return format_html('<span title="{}">{}</span>', order.contract_id, short)

    @admin.display(description="Bracket")
    def bracket(self, order: Order) -> str:
        if not order.bracket_role:
            return ""
        group = str(order.bracket_parent_id or order.pk)[:8]
        flag = "\u00a0UNPROTECTED" if order.unprotected_at else ""
        role = {"stop_loss": "SL", "take_profit": "TP"}.get(order.bracket_role, "entry")
        return f"{role}\u00a0{group}{flag}"

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

    @admin.display(description="In state", ordering="state_entered_at")
    def age_in_state(self, order: Order) -> str:
        # The largest unit only ("3 minutes"), so the column stays one line.
        return timesince(order.state_entered_at, timezone.now(), depth=1)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # The widest list in the admin: without the navigation sidebar (the breadcrumbs still
        # lead everywhere) its columns fit a 1400 px screen beside the filters.
        context = {"is_nav_sidebar_enabled": False, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

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
