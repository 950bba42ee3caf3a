"""The order ticket's fields, checked before anything is stored.

The desk is a person at a form, not a bot: empty optional fields arrive as "" and numbers as
text, which a Django form reads the way a browser sends them. The rules are the API's
(`api/serializers.py` OrderCreateInputSerializer): the same sizes, ticks and price precision,
so the ticket never accepts what the API would refuse; what the order's type needs and the
contract's tick size are checked by `orders.validation`, in `order_place`, for both.
"""

from __future__ import annotations

from typing import Any

from django import forms

from orders.models import OrderSide, OrderType
from orders.validation import MAX_BRACKET_TICKS

# The ticket offers the types its fields can express: a trailing stop needs a trail price,
# which the ticket does not ask for (bots place those through the API).
TICKET_TYPES = [(value, label) for value, label in OrderType.choices if value != "trailing_stop"]

# The ticket's labels are the fields' accessible names (issue 17); the template renders them.
LABELS = {
    "account": "Account",
    "contract_id": "Contract",
    "side": "Side",
    "type": "Type",
    "size": "Size",
    "limit_price": "Limit price",
    "stop_price": "Stop price",
    "stop_loss_ticks": "Stop loss (ticks)",
    "take_profit_ticks": "Take profit (ticks)",
}


def _price(label: str) -> forms.DecimalField:
    return forms.DecimalField(
        label=label, required=False, max_digits=20, decimal_places=9, min_value=0
    )


def _ticks(label: str) -> forms.IntegerField:
    return forms.IntegerField(label=label, required=False, min_value=1, max_value=MAX_BRACKET_TICKS)


class TicketForm(forms.Form):
    account = forms.TypedChoiceField(label=LABELS["account"], coerce=int)
    contract_id = forms.CharField(label=LABELS["contract_id"], max_length=64)
    side = forms.ChoiceField(label=LABELS["side"], choices=OrderSide.choices)
    type = forms.ChoiceField(label=LABELS["type"], choices=TICKET_TYPES)
    size = forms.IntegerField(label=LABELS["size"], min_value=1, max_value=100_000)
    limit_price = _price(LABELS["limit_price"])
    stop_price = _price(LABELS["stop_price"])
    stop_loss_ticks = _ticks(LABELS["stop_loss_ticks"])
    take_profit_ticks = _ticks(LABELS["take_profit_ticks"])
    # Made by the page once per ticket submission: a double click or a resend carries the same
    # key, and order_place answers it from the first request.
    idempotency_key = forms.CharField(max_length=255)

    def __init__(self, *args: Any, account_ids: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account_field = self.fields["account"]
        assert isinstance(account_field, forms.TypedChoiceField)
        account_field.choices = [(a, str(a)) for a in account_ids]

    def order_terms(self) -> dict[str, Any]:
        """The cleaned order, as `orders.validation.payload_from` takes it (empty ones omitted)."""
        data = dict(self.cleaned_data)
        data.pop("account")
        data.pop("idempotency_key")
        return {name: value for name, value in data.items() if value not in (None, "")}

    def error_fields(self) -> dict[str, list[str]]:
        return {name: [str(m) for m in messages] for name, messages in self.errors.items()}
