from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

from rest_framework import serializers

from fills.models import FILL_FIELDS, Fill
from orders.brackets import bracket_children, brackets_refusal
from orders.exceptions import BracketsNotEnabled, error_body
from orders.models import (
    ORDER_FIELDS,
    TRANSITION_FIELDS,
    BracketRole,
    Order,
    OrderIncludingArchived,
    OrderSide,
    OrderStatus,
    OrderTransition,
    OrderType,
)
from orders.validation import MAX_BRACKET_TICKS

INCLUDE_ARCHIVED_HELP = (
    "Also return orders moved to the archive (terminal and older than "
    "lifecycle.archive.hotRetentionDays); each order then carries `archived`."
)


class PriceField(serializers.DecimalField):
    """A price as a decimal string. JSON floats are refused: they cannot carry an exact price."""

    default_error_messages = {
        "float": 'Send prices as decimal strings (e.g. "21000.25"), not JSON numbers with a '
        "fraction.",
    }

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_digits=20, decimal_places=9, **kwargs)

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, float):
            self.fail("float")
        return super().to_internal_value(data)


class TicksField(serializers.IntegerField):
    """A whole number of ticks as a JSON integer: "5", 5.0 and true are refused, not read."""

    default_error_messages = {"not_integer": "Send a whole number of ticks as a JSON integer."}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(min_value=1, max_value=MAX_BRACKET_TICKS, **kwargs)

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, int) or isinstance(data, bool):
            self.fail("not_integer")
        return int(super().to_internal_value(data))


class OrderCreateInputSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="The broker's account id")
    contract_id = serializers.CharField(max_length=64)
    side = serializers.ChoiceField(choices=OrderSide.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    size = serializers.IntegerField(min_value=1, max_value=100_000)
    limit_price = PriceField(required=False, allow_null=True)
    stop_price = PriceField(required=False, allow_null=True)
    trail_price = PriceField(required=False, allow_null=True)
    stop_loss_ticks = TicksField(
        required=False,
        allow_null=True,
        help_text="A native stop-loss bracket this many ticks from the fill (1..1000), on "
        "market, limit, stop and join orders",
    )
    take_profit_ticks = TicksField(
        required=False,
        allow_null=True,
        help_text="A native take-profit bracket this many ticks from the fill (1..1000)",
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        # DRF deep-copies the declared fields for every instance (rebuilding each field and
        # copying its arguments), about half of this serializer's cost per placement. A field
        # keeps no state of a validation, and binding sets only the copy's own attributes, so
        # a shallow copy of each declared field is enough.
        return {name: copy.copy(field) for name, field in self._declared_fields.items()}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = (
            set(self.initial_data) - set(self.fields)
            if isinstance(self.initial_data, dict)
            else set()
        )
        if unknown:
            raise serializers.ValidationError({name: ["unknown field"] for name in sorted(unknown)})
        return attrs


class OrderModifyInputSerializer(serializers.Serializer):
    size = serializers.IntegerField(min_value=1, max_value=100_000, required=False)
    limit_price = PriceField(required=False)
    stop_price = PriceField(required=False)
    trail_price = PriceField(required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = (
            set(self.initial_data) - set(self.fields)
            if isinstance(self.initial_data, dict)
            else set()
        )
        if unknown:
            raise serializers.ValidationError(
                {name: ["not modifiable"] for name in sorted(unknown)}
            )
        if not attrs:
            raise serializers.ValidationError(
                "give at least one of size, limit_price, stop_price, trail_price"
            )
        return attrs


class OrderListFilterSerializer(serializers.Serializer):
    status = serializers.MultipleChoiceField(choices=OrderStatus.choices, required=False)
    account = serializers.IntegerField(required=False)
    contract_id = serializers.CharField(required=False, max_length=64)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    # allow_null: without it DRF reads a boolean missing from a query string as false, and the
    # list would hide every overfilled order unless asked for them.
    overfilled = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Only orders the broker filled beyond their size (true), or only the others",
    )
    include_archived = serializers.BooleanField(
        required=False, default=False, help_text=INCLUDE_ARCHIVED_HELP
    )
    # DRF's metaclass takes declared fields off the class, so `parent` does not shadow
    # Field.parent at runtime; django-stubs cannot know that.
    parent = serializers.UUIDField(  # type: ignore[assignment]
        required=False, help_text="Only the bracket children of this entry order"
    )


class OrderOutputSerializer(serializers.ModelSerializer):
    account = serializers.IntegerField(source="account.broker_account_id")
    limit_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
    )
    stop_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
    )
    trail_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
    )
    avg_fill_price = serializers.DecimalField(
        max_digits=20, decimal_places=9, allow_null=True, normalize_output=True
    )
    remaining_size = serializers.IntegerField()
    parent = serializers.SerializerMethodField(  # type: ignore[assignment]  # as above
        help_text="The entry of a bracket child, else null"
    )
    role = serializers.SerializerMethodField(
        help_text="entry, stop_loss or take_profit in a bracket group; null for a plain order"
    )
    brackets = serializers.SerializerMethodField(
        help_text="On an entry: its bracket children (id, role, status, prices); else null"
    )

    class Meta:
        model = Order
        fields = [
            *ORDER_FIELDS,
            "stop_loss_ticks",
            "take_profit_ticks",
            "parent",
            "role",
            "brackets",
            "protection",
            "unprotected_at",
        ]
        read_only_fields = fields

    def get_parent(self, order: Order) -> str | None:
        return None if order.bracket_parent_id is None else str(order.bracket_parent_id)

    def get_role(self, order: Order) -> str | None:
        return order.bracket_role or None

    def get_brackets(self, order: Order) -> list[dict[str, Any]] | None:
        if order.bracket_role != BracketRole.ENTRY:
            return None
        # A list passes every entry's children in its context (one query for the page).
        known = self.context.get("bracket_children")
        children = (known if known is not None else bracket_children([order.pk])).get(
            str(order.pk), []
        )
        return [_child(child) for child in children]


def _price(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


def _child(child: Order) -> dict[str, Any]:
    return {
        "id": str(child.pk),
        "role": child.bracket_role or None,
        "status": child.status,
        "size": child.size,
        "stop_price": _price(child.stop_price),
        "limit_price": _price(child.limit_price),
        "filled_size": child.filled_size,
        "avg_fill_price": _price(child.avg_fill_price),
        "broker_order_id": child.broker_order_id,
        "oco_cancelled_by": child.oco_cancelled_by or None,
    }


# One OrderOutputSerializer for every placement answer in the process: a ModelSerializer
# builds its fields from the model's metadata on each instance (about 0.7 ms here), the same
# every time. Its representation keeps no state, so threads can share it; it has no context
# (an entry's children are read for that order, as for any single order).
_placement_output = OrderOutputSerializer()


def order_placement_body(order: Order) -> dict[str, Any]:
    """What a placement answers (and its key replays): the order; for an entry the broker
    refused because the account is not in "Auto OCO Brackets" mode, the one error shape
    `brackets_not_enabled` with the broker's message, and the order beside it."""
    data = dict(_placement_output.to_representation(order))
    message = brackets_refusal(order)
    if message is None:
        return data
    return {**error_body(BracketsNotEnabled.code, message), "order": data}


class OrderIncludingArchivedOutputSerializer(OrderOutputSerializer):
    """The order as above, from either table, saying which (`?include_archived=1`)."""

    class Meta:
        model = OrderIncludingArchived
        fields = [*OrderOutputSerializer.Meta.fields, "archived"]
        read_only_fields = fields


class OrderTransitionOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = OrderTransition
        fields = list(TRANSITION_FIELDS)
        read_only_fields = fields


class FillOutputSerializer(serializers.ModelSerializer):
    price = serializers.DecimalField(max_digits=20, decimal_places=9, normalize_output=True)

    class Meta:
        model = Fill
        fields = list(FILL_FIELDS)
        read_only_fields = fields
