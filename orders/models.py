"""Orders and their lifecycle.

The lifecycle is one state machine with 11 states. Every allowed move is declared below with
`@transition`; the status field is protected, so nothing can assign a state directly. The
methods only change the in-memory state: `orders.services.order_transition` is the one place
that calls them, under a row lock, with the version check and the audit row.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django_fsm import FSMField, FSMModelMixin, transition

from accounts.models import PRICE_DIGITS, Account


class OrderStatus(models.TextChoices):
    CREATED = "created", "Created"  # stored, not yet sent
    SUBMITTING = "submitting", "Submitting"  # the placement request is in flight
    UNKNOWN = "unknown", "Unknown"  # the request failed on the network; outcome not known
    OPEN = "open", "Open"  # working at the broker
    PARTIALLY_FILLED = "partially_filled", "Partially filled"
    PENDING_CANCEL = "pending_cancel", "Pending cancel"
    FILLED = "filled", "Filled"
    CANCELLED = "cancelled", "Cancelled"
    REJECTED = "rejected", "Rejected"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"  # verified absent at the broker


S = OrderStatus
# The terminal set is needed here for the archival index; every other state set, and every
# decision about states, is in orders/lifecycle.py (which re-exports this one as TERMINAL).
TERMINAL_STATES = frozenset({S.FILLED, S.CANCELLED, S.REJECTED, S.EXPIRED, S.FAILED})

# Late broker evidence may correct a terminal state. These are the only edges out of one, and
# each is recorded as a correction (with its reason) and counted.
CORRECTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        (S.FAILED, S.OPEN),
        (S.FAILED, S.PARTIALLY_FILLED),
        (S.FAILED, S.FILLED),
        (S.FAILED, S.CANCELLED),
        (S.CANCELLED, S.FILLED),
    }
)


class OrderSide(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class OrderType(models.TextChoices):
    MARKET = "market", "Market"
    LIMIT = "limit", "Limit"
    STOP = "stop", "Stop"
    STOP_LIMIT = "stop_limit", "Stop limit"
    TRAILING_STOP = "trailing_stop", "Trailing stop"
    JOIN_BID = "join_bid", "Join bid"
    JOIN_ASK = "join_ask", "Join ask"


# Orders expected to complete on their own: a market or join order fills at once, so one still
# working after the fill timeout is overdue. A resting limit or stop order without fills is
# waiting for its price, not stalled. (The listener's fill timeout and stuck detection share it.)
FILL_AT_ONCE_TYPES = (OrderType.MARKET, OrderType.JOIN_BID, OrderType.JOIN_ASK)


class BracketRole(models.TextChoices):
    """An order's place in a native bracket group [reference 4.4]; "" for a plain order."""

    ENTRY = "entry", "Entry"
    STOP_LOSS = "stop_loss", "Stop loss"
    TAKE_PROFIT = "take_profit", "Take profit"


class Protection(models.TextChoices):
    """What the protection guard (orders/brackets.py) last concluded about a filled entry with a
    stop-loss bracket; "" until the entry has a fill to protect."""

    PROTECTED = "protected", "Protected"  # the broker showed a working stop covering it
    UNPROTECTED = "unprotected", "Unprotected"  # it did not within the window: acted on
    ENDED = "ended", "Ended"  # nothing left to protect (the group is flat): no longer checked


class TransitionTrigger(models.TextChoices):
    API = "api", "Bot API"
    ADMIN = "admin", "Admin"
    BROKER_STREAM = "broker-stream", "Broker stream"
    BROKER_REST = "broker-rest", "Broker REST"
    VERIFICATION = "verification", "Verification"
    SWEEPER = "sweeper", "Sweeper"


class OrderColumns(models.Model):
    """The columns every copy of an order has: the hot `Order`, the `ArchivedOrder` it moves
    to, and the `OrderIncludingArchived` view over both. Written once, here."""

    contract_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=OrderSide.choices)
    type = models.CharField(max_length=16, choices=OrderType.choices)
    size = models.PositiveIntegerField()
    limit_price = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    stop_price = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    trail_price = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)

    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    # What the broker holds as customTag: a short digest of the idempotency key. The broker
    # refuses a second order with the same tag on an account, and verification searches by it.
    custom_tag = models.CharField(max_length=64, null=True, blank=True)
    broker_order_id = models.BigIntegerField(null=True, blank=True)

    status_reason = models.TextField(blank=True, default="")
    version = models.PositiveIntegerField(default=1)
    state_entered_at = models.DateTimeField()

    filled_size = models.PositiveIntegerField(default=0)
    avg_fill_price = models.DecimalField(null=True, blank=True, **PRICE_DIGITS)
    # Sum of price x size over the non-voided fills, exact: the average is derived from it, so
    # an average kept up incrementally equals one recomputed from the fill history.
    fill_notional = models.DecimalField(max_digits=30, decimal_places=9, default=0)
    last_fill_at = models.DateTimeField(null=True, blank=True)
    # The broker's cumulative fillVolume from its newest order event; when it is ahead of the
    # fills we hold, the missing fills are fetched (Trade/search) rather than guessed.
    broker_fill_volume = models.PositiveIntegerField(default=0)
    overfilled = models.BooleanField(
        default=False, help_text="Fills exceed the order size: kept as the broker reported"
    )
    fill_timeout_handled_at = models.DateTimeField(null=True, blank=True)
    last_server_ts = models.DateTimeField(
        null=True, blank=True, help_text="The broker's timestamp of the newest event applied"
    )
    submitted_at = models.DateTimeField(
        null=True, blank=True, help_text="When the placement request was sent to the broker"
    )
    verification_attempts = models.PositiveIntegerField(default=0)
    created_by = models.CharField(max_length=150, blank=True, default="")
    # Acceptance order within the account (Account.last_order_seq); None for orders placed
    # outside this system.
    account_seq = models.PositiveBigIntegerField(null=True, blank=True)

    # Native brackets [reference 4.4]. The entry keeps the ticks it was placed with; the broker
    # creates its stop-loss and take-profit children, mirrored as orders of their own that
    # point at it. No foreign key: an entry and its children are archived independently.
    stop_loss_ticks = models.PositiveSmallIntegerField(null=True, blank=True)
    take_profit_ticks = models.PositiveSmallIntegerField(null=True, blank=True)
    bracket_role = models.CharField(
        max_length=12, choices=BracketRole.choices, blank=True, default=""
    )
    bracket_parent_id = models.UUIDField(
        null=True, blank=True, help_text="The entry of this bracket child"
    )
    # The protection guard's stored times, so that it survives restarts (orders/brackets.py).
    protection = models.CharField(max_length=12, choices=Protection.choices, blank=True, default="")
    protection_checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the broker last showed this entry protected"
    )
    unprotected_at = models.DateTimeField(
        null=True, blank=True, help_text="When the entry was found without a working stop loss"
    )
    # On a bracket child cancelled because its sibling filled: who cancelled it (OCO).
    oco_cancelled_by = models.CharField(max_length=12, blank=True, default="")

    class Meta:
        abstract = True

    @property
    def remaining_size(self) -> int:
        return max(self.size - self.filled_size, 0)


class Order(FSMModelMixin, OrderColumns):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="orders")
    status = FSMField(max_length=20, choices=OrderStatus.choices, default=S.CREATED, protected=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "idempotency_key"], name="order_unique_idempotency_key"
            ),
            models.UniqueConstraint(
                fields=["account", "broker_order_id"],
                condition=Q(broker_order_id__isnull=False),
                name="order_unique_broker_order_id",
            ),
            models.UniqueConstraint(
                fields=["account", "custom_tag"],
                condition=Q(custom_tag__isnull=False),
                name="order_unique_custom_tag",
            ),
            models.CheckConstraint(condition=Q(size__gte=1), name="order_size_positive"),
            models.UniqueConstraint(
                fields=["account", "account_seq"],
                condition=Q(account_seq__isnull=False),
                name="order_unique_account_seq",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "state_entered_at"], name="order_status_entered"),
            models.Index(fields=["account", "created_at"], name="order_account_created"),
            # The placement queue: an account's orders still waiting to be sent.
            models.Index(
                fields=["account", "account_seq"],
                condition=Q(status="created"),
                name="order_placement_queue",
            ),
            # A bracket entry's children (?parent=, the order output's `brackets`).
            models.Index(
                fields=["bracket_parent_id"],
                condition=Q(bracket_parent_id__isnull=False),
                name="order_bracket_children",
            ),
            # The protection guard's candidates: entries with a stop loss still guarded.
            models.Index(
                fields=["account", "last_fill_at"],
                condition=Q(bracket_role="entry", stop_loss_ticks__isnull=False)
                & ~Q(protection="ended"),
                name="order_bracket_guarded",
            ),
            # archive_orders walks terminal orders oldest first, (updated_at, id) as its cursor.
            models.Index(
                fields=["updated_at", "id"],
                condition=Q(status__in=sorted(state.value for state in TERMINAL_STATES)),
                name="order_archivable",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.size} {self.contract_id} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATES

    # --- The lifecycle. One method per target state; `source` lists every allowed origin. ---

    @transition(field=status, source=S.CREATED, target=S.SUBMITTING)
    def to_submitting(self) -> None: ...

    @transition(field=status, source=S.SUBMITTING, target=S.UNKNOWN)
    def to_unknown(self) -> None: ...

    @transition(
        field=status,
        source=[S.SUBMITTING, S.UNKNOWN, S.PENDING_CANCEL, S.FAILED],
        target=S.OPEN,
    )
    def to_open(self) -> None: ...

    @transition(
        field=status,
        source=[S.SUBMITTING, S.UNKNOWN, S.OPEN, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.FAILED],
        target=S.PARTIALLY_FILLED,
    )
    def to_partially_filled(self) -> None: ...

    @transition(
        field=status, source=[S.OPEN, S.PARTIALLY_FILLED, S.PENDING_CANCEL], target=S.PENDING_CANCEL
    )
    def to_pending_cancel(self) -> None: ...

    @transition(
        field=status,
        source=[
            S.SUBMITTING,
            S.UNKNOWN,
            S.OPEN,
            S.PARTIALLY_FILLED,
            S.PENDING_CANCEL,
            S.FAILED,
            S.CANCELLED,
        ],
        target=S.FILLED,
    )
    def to_filled(self) -> None: ...

    @transition(
        field=status,
        source=[
            S.CREATED,
            S.SUBMITTING,
            S.UNKNOWN,
            S.OPEN,
            S.PARTIALLY_FILLED,
            S.PENDING_CANCEL,
            S.FAILED,
        ],
        target=S.CANCELLED,
    )
    def to_cancelled(self) -> None: ...

    @transition(
        field=status, source=[S.CREATED, S.SUBMITTING, S.UNKNOWN, S.OPEN], target=S.REJECTED
    )
    def to_rejected(self) -> None: ...

    @transition(
        field=status,
        source=[S.SUBMITTING, S.UNKNOWN, S.OPEN, S.PARTIALLY_FILLED],
        target=S.EXPIRED,
    )
    def to_expired(self) -> None: ...

    # Known absent at the broker: verified absent (from unknown), or never sent (from
    # submitting: the request provably did not leave this process).
    @transition(field=status, source=[S.SUBMITTING, S.UNKNOWN], target=S.FAILED)
    def to_failed(self) -> None: ...


TRANSITION_METHODS: dict[str, str] = {
    state: f"to_{state}" for state in S.values if state != S.CREATED
}


class TransitionColumns(models.Model):
    """The columns of one change of an order's state, hot (`OrderTransition`) or archived."""

    from_state = models.CharField(max_length=20, choices=OrderStatus.choices)
    to_state = models.CharField(max_length=20, choices=OrderStatus.choices)
    at = models.DateTimeField()
    time_in_previous_state = models.DurationField()
    trigger = models.CharField(max_length=16, choices=TransitionTrigger.choices)
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    is_correction = models.BooleanField(default=False)
    # A write that changed fields but not the state (a modify, a fill that keeps the state)
    # still bumps the version, so it is recorded too, with from_state == to_state.
    changed_fields = models.JSONField(default=dict, blank=True)
    server_ts = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(help_text="The order's version after this change")

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.from_state} -> {self.to_state}"


class OrderTransition(TransitionColumns):
    """One change of an order's state, written in the same transaction as the change."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="transitions")

    class Meta:
        ordering = ["order", "version"]
        constraints = [
            models.UniqueConstraint(fields=["order", "version"], name="transition_one_per_version")
        ]


# What a reader is shown of an order and of its history, in this order: the bot API's output
# and the admin's pages both use these lists (one definition, never two that drift apart).
ORDER_FIELDS = (
    "id",
    "account",
    "contract_id",
    "side",
    "type",
    "size",
    "limit_price",
    "stop_price",
    "trail_price",
    "status",
    "status_reason",
    "broker_order_id",
    "idempotency_key",
    "custom_tag",
    "filled_size",
    "remaining_size",
    "avg_fill_price",
    "overfilled",
    "version",
    "state_entered_at",
    "created_at",
    "updated_at",
)
TRANSITION_FIELDS = (
    "version",
    "from_state",
    "to_state",
    "at",
    "time_in_previous_state",
    "trigger",
    "actor",
    "reason",
    "is_correction",
    "changed_fields",
    "server_ts",
)
# The list columns of the hot and the archived order in the admin.
ORDER_LIST_COLUMNS = (
    "id",
    "status",
    "account",
    "contract_id",
    "side",
    "type",
    "size",
    "filled_size",
    "avg_fill_price",
    "overfilled",
)


class IdempotencyRecord(models.Model):
    """What a request with an idempotency key did, so that a retry gets the same answer.

    The unique (account, key) constraint is what makes "never the same order twice" hold across
    processes: the first request inserts the row (state `processing`) in the same transaction
    that stores its order; any other request with the key finds the row instead. The cache in
    front of this table only saves a query; it is never the guard.
    """

    class State(models.TextChoices):
        PROCESSING = "processing", "Processing"
        COMPLETED = "completed", "Completed"

    account = models.ForeignKey(Account, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the payload")
    state = models.CharField(max_length=12, choices=State.choices, default=State.PROCESSING)
    order = models.ForeignKey(Order, on_delete=models.SET_NULL, null=True, related_name="+")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "key"], name="idempotency_unique_key")
        ]
        indexes = [models.Index(fields=["expires_at"], name="idempotency_expires")]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


# --- The archive (orders/archival.py moves rows here; nothing else writes them) --------------


class ArchivedOrder(OrderColumns):
    """A terminal order moved out of `Order` by `archive_orders`, column for column.

    The columns mirror `Order` exactly (a test holds them equal); the archive adds only
    `archived_at`. No uniqueness rules: they guard live orders, and an archived order's
    idempotency key has expired, so a new order may carry it again.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    status = models.CharField(max_length=20, choices=OrderStatus.choices)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    archived_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["account", "created_at"], name="archived_order_account_created"),
            # archive_orders deletes archived orders oldest first, (updated_at, id) as cursor.
            models.Index(fields=["updated_at", "id"], name="archived_order_deletable"),
            models.Index(fields=["broker_order_id"], name="archived_order_broker_id"),
            models.Index(fields=["idempotency_key"], name="archived_order_idem_key"),
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.size} {self.contract_id} ({self.status}, archived)"

    @property
    def is_terminal(self) -> bool:
        return True


class ArchivedOrderTransition(TransitionColumns):
    """An `OrderTransition` of an archived order, with its original id."""

    id = models.BigIntegerField(primary_key=True)
    order = models.ForeignKey(ArchivedOrder, on_delete=models.CASCADE, related_name="transitions")

    class Meta:
        ordering = ["order", "version"]


class OrderIncludingArchived(OrderColumns):
    """Read-only: every order, hot or archived, through the database view of that name.

    The view is `SELECT ..., false AS archived FROM orders_order UNION ALL SELECT ..., true
    FROM orders_archivedorder` (migration 0005), so the API can filter, order and paginate
    across both tables in one query; an order is always in exactly one of them, because
    archival moves it in one transaction. PostgreSQL refuses to change the type of a column a
    view uses: a migration that alters an `Order` column drops the view first and recreates it
    (and alters `ArchivedOrder` the same way).
    """

    id = models.UUIDField(primary_key=True)
    account = models.ForeignKey(
        Account, on_delete=models.DO_NOTHING, related_name="+", db_constraint=False
    )
    status = models.CharField(max_length=20, choices=OrderStatus.choices)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    archived = models.BooleanField()

    class Meta:
        managed = False
        db_table = "orders_order_including_archived"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.side} {self.size} {self.contract_id} ({self.status})"
