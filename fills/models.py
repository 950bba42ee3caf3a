from __future__ import annotations

from decimal import Decimal

from django.db import models

from accounts.models import MONEY_DIGITS, PRICE_DIGITS, Account
from orders.models import Order, OrderSide


class Fill(models.Model):
    """One execution (a broker trade, a half-turn) against an order.

    The order is nullable: a fill can arrive before its order's acknowledgement, or for an order
    placed outside this system. It is kept with its broker order id and attached when the order
    appears.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="fills")
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="fills", null=True, blank=True
    )
    broker_trade_id = models.BigIntegerField()
    broker_order_id = models.BigIntegerField()
    contract_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    size = models.PositiveIntegerField()
    price = models.DecimalField(**PRICE_DIGITS)
    fees = models.DecimalField(default=Decimal("0"), **MONEY_DIGITS)
    profit_and_loss = models.DecimalField(null=True, blank=True, **MONEY_DIGITS)
    voided = models.BooleanField(default=False)
    broker_ts = models.DateTimeField(help_text="The broker's creationTimestamp of the trade")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["broker_ts", "broker_trade_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "broker_trade_id"], name="fill_unique_broker_trade"
            ),
            models.CheckConstraint(condition=models.Q(size__gte=1), name="fill_size_positive"),
        ]
        indexes = [
            models.Index(fields=["account", "broker_order_id"], name="fill_account_broker_order"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.size} @ {self.price} (trade {self.broker_trade_id})"
