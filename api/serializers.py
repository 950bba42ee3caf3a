from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from fills.models import FILL_FIELDS, Fill
from orders.models import (
    ORDER_FIELDS,
    TRANSITION_FIELDS,
    Order,
    OrderIncludingArchived,
    OrderSide,
    OrderStatus,
    OrderTransition,
    OrderType,
)

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


class OrderCreateInputSerializer(serializers.Serializer):
    account = serializers.IntegerField(help_text="The broker's account id")
    contract_id = serializers.CharField(max_length=64)
    side = serializers.ChoiceField(choices=OrderSide.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    size = serializers.IntegerField(min_value=1, max_value=100_000)
    limit_price = PriceField(required=False, allow_null=True)
    stop_price = PriceField(required=False, allow_null=True)
    trail_price = PriceField(required=False, allow_null=True)

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

    class Meta:
        model = Order
        fields = list(ORDER_FIELDS)
        read_only_fields = fields


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
