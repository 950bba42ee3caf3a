from __future__ import annotations

from decimal import Decimal

from django.db import models

from accounts.models import MONEY_DIGITS, PRICE_DIGITS, Account
from orders.models import ArchivedOrder, Order, OrderSide

# What a reader is shown of a fill, in this order (the bot API and the admin).
FILL_FIELDS = (
    "broker_trade_id",
    "broker_order_id",
    "contract_id",
    "side",
    "size",
    "price",
    "fees",
    "profit_and_loss",
    "voided",
    "broker_ts",
    "received_at",
)


class FillColumns(models.Model):
    """The columns of one execution, hot (`Fill`) or archived (`ArchivedFill`). Written once."""

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

    class Meta:
        abstract = True


class Fill(FillColumns):
    """One execution (a broker trade, a half-turn) against an order.

    The order is nullable: a fill can arrive before its order's acknowledgement, or for an order
    placed outside this system. It is kept with its broker order id and attached when the order
    appears.
    """

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="fills")
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="fills", null=True, blank=True
    )
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
            # The sweep's orphans (fills whose order we do not know yet, a handful among all
            # the fills ever stored), read every sweep. The foreign key's index serves that
            # query only once the planner has statistics: on a table not analyzed yet (a new
            # deployment's first minutes, every bench run) it read all the fills each sweep,
            # 84 ms a sweep at 200,000 fills against 1.1 ms with this index.
            models.Index(
                fields=["account", "broker_order_id"],
                condition=models.Q(order__isnull=True),
                name="fill_orphan",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.size} @ {self.price} (trade {self.broker_trade_id})"


class ArchivedFill(FillColumns):
    """A `Fill` of an archived order, with its original id (moved by `archive_orders`).

    No (account, broker_trade_id) uniqueness here: that rule deduplicates live broker events,
    and the catch-up never reaches back to orders old enough to be archived.
    """

    id = models.BigIntegerField(primary_key=True)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    order = models.ForeignKey(ArchivedOrder, on_delete=models.CASCADE, related_name="fills")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ["broker_ts", "broker_trade_id"]

    def __str__(self) -> str:
        return f"{self.side} {self.size} @ {self.price} (trade {self.broker_trade_id}, archived)"


class ListenerHeartbeat(models.Model):
    """What a running `listen_gateway` process last said about itself (for /readyz, metrics).

    Health comes from the live transport state, never from the process merely existing: the
    ProjectX SDK's users saw a hub closed while health still reported fine. Likewise a listener
    that hears the broker is only useful while it applies what it hears: `applied_at` moves
    only while events are being applied (or there is nothing to apply), so a listener whose
    applier is failing or stuck goes stale there even though the process and the hub are fine.
    """

    name = models.CharField(max_length=200, unique=True, help_text="host:pid of the process")
    connected = models.BooleanField(default=False)
    subscribed = models.BooleanField(default=False)
    leading_accounts = models.JSONField(default=list, blank=True)
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_event_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the listener last committed a batch of events or had nothing queued to "
        "apply; stale while its applier is failing or stuck",
    )
    failing_tasks = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of the listener's tasks that failed and have not yet run again "
        "successfully (they are restarted with backoff)",
    )
    events_applied = models.BigIntegerField(default=0)
    reconnects = models.IntegerField(default=0)
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return self.name
