from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TypedDict

from django.conf import settings
from django.db import models


class DecimalDigits(TypedDict):
    """The precision keywords of a DecimalField, typed so that `**PRICE_DIGITS` type-checks."""

    max_digits: int
    decimal_places: int


# Prices and money: up to 11 integer digits and the 9 fractional digits the broker prints.
PRICE_DIGITS: DecimalDigits = {"max_digits": 20, "decimal_places": 9}
MONEY_DIGITS: DecimalDigits = {"max_digits": 20, "decimal_places": 4}


class TradingState(models.TextChoices):
    """What an account may still do (checked at acceptance, under the account's row lock)."""

    ACTIVE = "active", "Active"
    REDUCE_ONLY = "reduce_only", "Reduce only"  # only orders that reduce a position
    HALTED = "halted", "Halted"  # no new orders at all


class TradingStateCause(models.TextChoices):
    MANUAL = "manual", "Set by a person"
    DAILY_LOSS_LIMIT = "daily_loss_limit", "Daily loss limit reached"
    FLATTEN = "flatten", "Account flattened"


class Account(models.Model):
    """A trading account at the broker, mirrored locally."""

    broker_account_id = models.IntegerField(unique=True, help_text="The broker's accountId")
    name = models.CharField(max_length=200)
    balance = models.DecimalField(default=Decimal("0"), **MONEY_DIGITS)
    can_trade = models.BooleanField(default=True)
    simulated = models.BooleanField(default=True)
    active = models.BooleanField(default=True, help_text="Listened to and traded through")
    # Who may see and act on this account through the API and the desk (staff see all).
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="trading_accounts", blank=True
    )
    # The broker's server time of the newest event applied for this account: after a reconnect
    # the REST catch-up starts from here minus a safety margin.
    stream_checkpoint = models.DateTimeField(null=True, blank=True)
    # The sequence number of the last order accepted for this account: orders reach the broker
    # in this order (per-account FIFO), whichever web process accepted them.
    last_order_seq = models.PositiveBigIntegerField(default=0)

    # --- Risk (orders/risk.py reads these under the account's row lock) ---
    trading_state = models.CharField(
        max_length=12, choices=TradingState.choices, default=TradingState.ACTIVE
    )
    trading_state_cause = models.CharField(
        max_length=20, choices=TradingStateCause.choices, blank=True, default=""
    )
    trading_state_reason = models.TextField(blank=True, default="")
    trading_state_changed_at = models.DateTimeField(null=True, blank=True)
    trading_state_changed_by = models.CharField(max_length=150, blank=True, default="")
    # The trading day on which the daily loss limit last fired: it fires once per day (a
    # person who resumes the account is not overruled on the same day), and a state it set
    # ends when the next trading day begins.
    loss_limit_day = models.DateField(null=True, blank=True)
    # Per-account overrides of `orderManagement.risk`; empty means the YAML's value.
    max_order_size = models.PositiveIntegerField(null=True, blank=True)
    max_position_size = models.PositiveIntegerField(null=True, blank=True)
    max_working_orders = models.PositiveIntegerField(null=True, blank=True)
    max_orders_per_minute = models.PositiveIntegerField(null=True, blank=True)
    daily_loss_limit = models.DecimalField(null=True, blank=True, **MONEY_DIGITS)
    on_daily_loss_limit = models.CharField(
        max_length=12,
        blank=True,
        default="",
        choices=[
            (TradingState.REDUCE_ONLY.value, "Reduce only"),
            (TradingState.HALTED.value, "Halt"),
        ],
    )

    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["broker_account_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(daily_loss_limit__isnull=True)
                | models.Q(daily_loss_limit__gt=0),
                name="account_daily_loss_limit_positive",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.broker_account_id})"


class PositionType(models.TextChoices):
    FLAT = "flat", "Flat"
    LONG = "long", "Long"
    SHORT = "short", "Short"


class Position(models.Model):
    """The net position of one account in one contract, as the broker reports it."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="positions")
    contract_id = models.CharField(max_length=64)
    type = models.CharField(max_length=8, choices=PositionType.choices, default=PositionType.FLAT)
    size = models.PositiveIntegerField(default=0)
    average_price = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    broker_position_id = models.IntegerField(null=True, blank=True)
    last_server_ts = models.DateTimeField(
        null=True, blank=True, help_text="The broker's timestamp of the newest event applied"
    )
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "contract_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "contract_id"], name="position_one_per_account_contract"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(type="flat", size=0) | (~models.Q(type="flat") & models.Q(size__gt=0))
                ),
                name="position_flat_iff_size_zero",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account.broker_account_id} {self.contract_id} {self.type} {self.size}"


class Contract(models.Model):
    """A futures contract as the broker describes it; orders' prices are checked against it."""

    contract_id = models.CharField(max_length=64, unique=True, help_text="e.g. CON.F.US.MNQ.Z26")
    name = models.CharField(max_length=64, blank=True, default="")
    description = models.CharField(max_length=200, blank=True, default="")
    tick_size = models.DecimalField(**PRICE_DIGITS)
    tick_value = models.DecimalField(**MONEY_DIGITS)
    symbol_id = models.CharField(max_length=64, blank=True, default="")
    active = models.BooleanField(default=True)
    refreshed_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["contract_id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(tick_size__gt=0), name="contract_tick_positive"
            )
        ]

    def __str__(self) -> str:
        return self.contract_id

    def is_on_tick(self, price: Decimal) -> bool:
        return price % self.tick_size == 0


class PositionCloseQuerySet(models.QuerySet["PositionClose"]):
    def lease_expired(self, *, now: datetime) -> PositionCloseQuerySet:
        """Closes in progress whose process stopped renewing its lease: anyone may take them
        over. A close from before leases existed has none, and counts as expired."""
        return self.filter(
            models.Q(lease_expires_at__isnull=True) | models.Q(lease_expires_at__lt=now),
            state=PositionClose.State.IN_PROGRESS,
        )

    def lease_held(self, *, now: datetime) -> PositionCloseQuerySet:
        """Closes in progress whose process is alive (it renewed its lease in time)."""
        return self.filter(state=PositionClose.State.IN_PROGRESS, lease_expires_at__gte=now)


class PositionClose(models.Model):
    """One close of one account's position in one contract.

    At most one is in progress per (account, contract): the partial unique constraint makes a
    second request find the first instead of starting another, across every process.

    The process working on a close holds a lease on it (`owner`, `lease_expires_at`) and renews
    it at every step. Each step is written before its side effect, so when the owner dies the
    lease runs out and another process takes the close over (a conditional UPDATE that only
    an expired lease passes) and finishes it from the broker's truth.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    class Step(models.TextChoices):
        SETTLING_ORDERS = "settling_orders", "Waiting for orders in flight to settle"
        CANCELLING_ORDERS = "cancelling_orders", "Cancelling working orders"
        CONFIRMING_CANCELS = "confirming_cancels", "Waiting for the broker to confirm cancels"
        CLOSING_POSITION = "closing_position", "Closing the position at market"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="closes")
    contract_id = models.CharField(max_length=64)
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    step = models.CharField(max_length=24, choices=Step.choices, default=Step.SETTLING_ORDERS)
    requested_by = models.CharField(max_length=150, blank=True, default="")
    # The process working on the close (host:pid:claim) and until when it holds it.
    owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # 1 for the process that started the close, +1 for each process that took it over.
    attempts = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    cancelled_orders = models.PositiveIntegerField(default=0)
    closed_size = models.PositiveIntegerField(default=0)
    closed_side = models.CharField(max_length=8, blank=True, default="")
    detail = models.TextField(blank=True, default="")

    objects = PositionCloseQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "contract_id"],
                condition=models.Q(state="in_progress"),
                name="position_close_one_in_progress",
            )
        ]

    def __str__(self) -> str:
        return f"close {self.contract_id} on {self.account_id} ({self.state})"


class BrokerSession(models.Model):
    """The broker token, shared by every process of the system (one login serves them all)."""

    username = models.CharField(max_length=150, unique=True)
    token = models.TextField(blank=True, default="")
    issued_at = models.DateTimeField(null=True, blank=True)
    # A lease: the one process refreshing the token until then (a conditional UPDATE claims it).
    refreshing_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"session of {self.username}"


class AccountAudit(models.Model):
    """Every change to an account's trading state and every step of a flatten, with who."""

    class Action(models.TextChoices):
        TRADING_STATE = "trading_state", "Trading state changed"
        FLATTEN_STEP = "flatten_step", "Flatten step"
        RISK_LIMITS = "risk_limits", "Risk limits changed"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="audit")
    action = models.CharField(max_length=16, choices=Action.choices)
    from_state = models.CharField(max_length=24, blank=True, default="")
    to_state = models.CharField(max_length=24, blank=True, default="")
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["account", "created_at"], name="account_audit_created")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.action} {self.from_state}->{self.to_state}"


class RealizedPnl(models.Model):
    """The realized P&L of one account in one contract on one trading day, from the broker's
    trades (`profitAndLoss` gross, `fees` apart), kept up by the fills code as it stores each
    trade or void (`accounts.services.realized_pnl_add`): the daily loss limit reads one row per
    contract, never the fills. `trading_day` is the local date on which the day began
    (`risk.tradingDayStartsAt`)."""

    # Derived from the fills (which protect the account themselves): goes with its account.
    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="realized_pnl")
    contract_id = models.CharField(max_length=64)
    trading_day = models.DateField()
    profit_and_loss = models.DecimalField(default=Decimal("0"), **MONEY_DIGITS)
    fees = models.DecimalField(default=Decimal("0"), **MONEY_DIGITS)
    trades = models.IntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["account", "-trading_day", "contract_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "trading_day", "contract_id"],
                name="realized_pnl_one_per_day_contract",
            )
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.contract_id} {self.trading_day}: {self.net}"

    @property
    def net(self) -> Decimal:
        return self.profit_and_loss - self.fees


class AccountFlatten(models.Model):
    """One run of the kill switch on one account (orders/flatten.py).

    At most one is in progress per account (the partial unique constraint): a second request
    joins it. The process running it holds a lease, renewed at every step and written before
    the step's side effect, so a run whose process died is taken over and finished from the
    broker's truth by the next request, as for `PositionClose`.
    """

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "In progress"
        DONE = "done", "Done"

    class Step(models.TextChoices):
        HALTING = "halting", "Halting the account"
        SETTLING_ORDERS = "settling_orders", "Waiting for orders in flight to settle"
        CANCELLING_ORDERS = "cancelling_orders", "Cancelling every working order"
        CONFIRMING_CANCELS = "confirming_cancels", "Waiting for the broker to confirm cancels"
        CLOSING_POSITIONS = "closing_positions", "Closing every position at market"
        CONFIRMING_FLAT = "confirming_flat", "Waiting for the broker to show the account flat"

    class Status(models.TextChoices):
        FLAT = "flat", "Flat"
        PENDING = "pending", "Pending"

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="flattens")
    state = models.CharField(max_length=12, choices=State.choices, default=State.IN_PROGRESS)
    step = models.CharField(max_length=24, choices=Step.choices, default=Step.HALTING)
    status = models.CharField(max_length=8, choices=Status.choices, blank=True, default="")
    requested_by = models.CharField(max_length=150, blank=True, default="")
    owner = models.CharField(max_length=200, blank=True, default="")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # What was done, across every attempt: [{"order", "broker_order_id", "contract_id"}] and
    # [{"contract_id", "side", "size"}].
    cancelled = models.JSONField(default=list, blank=True)
    closed = models.JSONField(default=list, blank=True)
    detail = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account"],
                condition=models.Q(state="in_progress"),
                name="account_flatten_one_in_progress",
            )
        ]

    def __str__(self) -> str:
        return f"flatten of {self.account_id} ({self.state} {self.status})"
