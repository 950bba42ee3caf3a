"""The Prometheus metrics of the whole system, in one registry.

Metric names are part of the operators' contract (alert rules, dashboards): keep them.
Several worker processes export one view through prometheus-client's multiprocess mode when
`PROMETHEUS_MULTIPROC_DIR` is set (see ordermgmt/ops/views.py): each process writes its values
to files in that directory and /metrics adds them up. The variable must be set before the
process starts (prometheus-client reads it at import).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, values

from common.env import env_str

# In multiprocess mode every process writes files named after its pid, and every scrape reads
# all of them, dead processes' included: a command run each minute from cron would add a set
# per run (10,000 files make a scrape take half a second). A one-shot command started with
# ORDERMGMT_METRICS_PROCESS=<name> writes files named after <name> instead: each run reuses
# them and its counters carry on from the last run. Only for processes that never run two at
# a time under one name (deploy/bin/ordermgmt-manage takes a lock per command).
_PROCESS_NAME = env_str("ORDERMGMT_METRICS_PROCESS")
if _PROCESS_NAME and env_str("PROMETHEUS_MULTIPROC_DIR"):
    values.ValueClass = values.MultiProcessValue(process_identifier=lambda: _PROCESS_NAME)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

order_lifecycle_transitions_total = Counter(
    "order_lifecycle_transitions_total",
    "Order state changes, by origin state, target state and trigger",
    ["from", "to", "trigger"],
)
order_corrections_total = Counter(
    "order_corrections_total",
    "Terminal states corrected by late broker evidence",
    ["from", "to"],
)
order_verification_attempts_total = Counter(
    "order_verification_attempts_total",
    "Verification attempts of orders whose placement outcome was unknown",
    ["phase", "outcome"],
)
order_fill_events_total = Counter(
    "order_fill_events_total",
    "Fill events by outcome (applied, duplicate, stale, voided, orphan)",
    ["outcome"],
)
order_fill_timeouts_total = Counter(
    "order_fill_timeouts_total",
    "Orders that did not complete within the partial fill timeout, by action",
    ["action"],
)
idempotency_cache_hits = Counter(
    "idempotency_cache_hits", "Idempotency look-ups answered by the cache"
)
idempotency_cache_misses = Counter(
    "idempotency_cache_misses", "Idempotency look-ups the cache could not answer"
)
lock_acquisitions_total = Counter(
    "lock_acquisitions_total", "Row and advisory locks taken, by kind", ["kind"]
)
lock_wait_seconds = Histogram(
    "lock_wait_seconds",
    "Time spent waiting for locks, by kind",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
deadlocks_total = Counter(
    "deadlocks_total", "Transactions PostgreSQL aborted for a deadlock or serialization failure"
)
transaction_retries_total = Counter(
    "transaction_retries_total", "Transactions retried after a deadlock or serialization failure"
)
order_stuck_total = Counter(
    "order_stuck_total", "Orders found stuck in a state past its threshold", ["state"]
)
placement_queue_rejections_total = Counter(
    "placement_queue_rejections_total", "Placements refused because an account's queue was full"
)
placement_admission_waits_total = Counter(
    "placement_admission_waits_total",
    "Placements that waited for a free slot of their web process (common/admission.py)",
)
# Computed at scrape time from the database by ops.collectors (not kept in any
# process): the listener may run on another machine, and a gauge a dead process last wrote
# would lie. Their names are part of the contract like the rest.
LISTENER_CONNECTED = "listener_connected"  # 1 while a listener is connected and subscribed
LISTENER_LAST_EVENT_AGE_SECONDS = "listener_last_event_age_seconds"  # since it last heard
ORDERS_STUCK = "orders_stuck"  # orders past their state's stuck threshold now, by state

order_placement_seconds = Histogram(
    "order_placement_seconds",
    "Placement latency, request to broker answer",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
order_verification_seconds = Histogram(
    "order_verification_seconds",
    "Duration of one verification attempt",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
fill_processing_seconds = Histogram(
    "fill_processing_seconds",
    "Broker event to database commit, per fill",
    buckets=LATENCY_BUCKETS,
)
order_overfills_total = Counter(
    "order_overfills_total",
    "Orders the broker filled beyond their size (kept as reported), counted as they go over",
)
listener_task_restarts_total = Counter(
    "listener_task_restarts_total",
    "Long-running listener tasks (applier, sweeper, leadership, heartbeat, catch-up) restarted "
    "after a failure, by task",
    ["task"],
)
# Pre-trade risk (issue 15): refusals by the limit that refused, and the daily loss limit firing.
order_risk_refusals_total = Counter(
    "order_risk_refusals_total",
    "Orders refused by a pre-trade risk check before reaching the broker, by limit",
    ["limit"],
)
daily_loss_limit_reached_total = Counter(
    "order_daily_loss_limit_reached_total",
    "Accounts switched to onDailyLossLimit because the day's realized loss reached the limit",
)
# Computed at scrape time by ops.collectors, per account (broker account id):
ACCOUNT_TRADING_STATE = "order_account_trading_state"  # 1 for the state the account is in
ACCOUNT_DAILY_LOSS_LIMIT_REACHED = "order_account_daily_loss_limit_reached"  # 1 while reached
ACCOUNT_REALIZED_PNL_TODAY = "order_account_realized_pnl_today"  # net of fees, currency
order_unprotected_positions_total = Counter(
    "order_unprotected_positions_total",
    "Filled bracket entries found without a working stop-loss child covering them at the broker "
    "within brackets.protectWithinSeconds (then flattened, or alerted: brackets.onUnprotected)",
)
