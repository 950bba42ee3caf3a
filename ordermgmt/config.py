"""The YAML file the system is tuned with (`config/order_management.yaml`).

It is loaded once, at start-up, and every key is validated: its type, its range, and that it
is a key we know. A misspelt key is as dangerous as a wrong value (a typo in `timeoutAction`
would otherwise leave the default in force without anyone noticing), so unknown keys are
rejected. The error names the key path, e.g. `orderManagement.idempotency.keyTtlSeconds`.

The models are frozen: the running system reads its tuning, it never writes it.
"""

from __future__ import annotations

import functools
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parent.parent / "config" / "order_management.yaml"


class _Section(BaseModel):
    # strict: "60" is not 60 and 1 is not True; the YAML author must write what they mean.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, alias_generator=to_camel, populate_by_name=True
    )


class StuckThresholds(_Section):
    submitting: float = Field(10.0, gt=0)
    unknown: float = Field(60.0, gt=0)
    pending_cancel: float = Field(30.0, gt=0, alias="pending_cancel")
    created: float = Field(60.0, gt=0)


class ArchiveSettings(_Section):
    hot_retention_days: int = Field(30, ge=1)
    delete_retention_days: int = Field(365, ge=1)
    batch_size: int = Field(1000, ge=1, le=100_000)

    @model_validator(mode="after")
    def _deletion_after_archival(self) -> ArchiveSettings:
        if self.delete_retention_days <= self.hot_retention_days:
            raise ValueError("deleteRetentionDays must be greater than hotRetentionDays")
        return self


class StuckDetectionSettings(_Section):
    # The broker allows 200 requests per minute per user, shared by every process of the desk
    # (web workers, listener, cron): the sweep takes a small share of it by default.
    broker_reads_per_minute: int = Field(60, ge=1, le=200)
    max_orders_per_run: int = Field(500, ge=1, le=100_000)


class LifecycleSettings(_Section):
    stuck_after_seconds: StuckThresholds = StuckThresholds()
    stuck_detection: StuckDetectionSettings = StuckDetectionSettings()
    archive: ArchiveSettings = ArchiveSettings()


class IdempotencySettings(_Section):
    key_ttl_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600)
    derived_key_bucket_seconds: int = Field(60, ge=1, le=3600)
    in_flight_lock_seconds: int = Field(30, ge=1, le=600)


class VerificationSettings(_Section):
    direct_lookup_budget_ms: int = Field(500, ge=50, le=60_000)
    search_budget_ms: int = Field(2000, ge=100, le=120_000)
    search_window_seconds: int = Field(300, ge=10, le=86_400)
    match_time_tolerance_seconds: int = Field(30, ge=1, le=3600)
    max_attempts: int = Field(5, ge=1, le=100)
    backoff_initial_ms: int = Field(500, ge=10, le=600_000)
    backoff_max_ms: int = Field(30_000, ge=10, le=3_600_000)

    @model_validator(mode="after")
    def _backoff_bounds(self) -> VerificationSettings:
        if self.backoff_max_ms < self.backoff_initial_ms:
            raise ValueError("backoffMaxMs must be at least backoffInitialMs")
        return self


class PartialFillSettings(_Section):
    timeout_seconds: float = Field(60.0, gt=0, le=86_400)
    timeout_action: Literal["alert", "verify", "cancel_remaining"] = "alert"
    catch_up_margin_seconds: int = Field(300, ge=0, le=86_400)
    stale_feed_seconds: float = Field(45.0, gt=0, le=3600)
    listener_ready_within_seconds: float = Field(90.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _readiness_outlasts_a_reconnect(self) -> PartialFillSettings:
        # A stale feed forces a reconnect after staleFeedSeconds; readiness must not drop
        # during the normal recovery that follows.
        if self.listener_ready_within_seconds <= self.stale_feed_seconds:
            raise ValueError("listenerReadyWithinSeconds must be greater than staleFeedSeconds")
        return self


class ConcurrencySettings(_Section):
    max_queue_depth_per_account: int = Field(100, ge=1, le=100_000)
    lock_timeout_ms: int = Field(5000, ge=100, le=600_000)
    deadlock_max_retries: int = Field(3, ge=0, le=20)
    retry_backoff_initial_ms: int = Field(20, ge=1, le=10_000)
    retry_backoff_max_ms: int = Field(500, ge=1, le=60_000)
    position_close_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # A close's process renews its lease at every step; when it dies, another process may take
    # the close over this long after the last renewal. Longer than one broker call normally
    # takes, or a live but slow owner is taken over (safe: each step checks the lease first).
    position_close_lease_seconds: float = Field(15.0, ge=1, le=600)
    placement_turn_timeout_seconds: float = Field(30.0, gt=0, le=600)
    # Placements a web process runs at once; the others wait for a slot in one line per
    # account, served in turn (common/admission.py). 0: no limit.
    placement_slots_per_process: int = Field(8, ge=0, le=10_000)


# A limit is off when null (the default); an account's override in the admin wins over it.
_Limit = Annotated[int | None, Field(ge=1, le=1_000_000)]


class RiskSettings(_Section):
    max_order_size: _Limit = None
    max_position_size: _Limit = None
    max_working_orders: _Limit = None
    max_orders_per_minute: _Limit = None
    # Currency, as the broker counts P&L. Not strict: `1000`, `1000.50` and "1000.50" all read
    # as the exact decimal they spell (a float's binary noise is cut by str()).
    daily_loss_limit: Annotated[Decimal | None, Field(gt=0, strict=False)] = None
    on_daily_loss_limit: Literal["reduce_only", "halt"] = "reduce_only"
    trading_day_starts_at: str = "17:00 America/Chicago"
    # The kill switch (POST /accounts/{id}/flatten): how long one request waits for the broker
    # to confirm, and the lease of the process running it (taken over when it runs out).
    flatten_timeout_seconds: float = Field(30.0, gt=0, le=600)
    flatten_lease_seconds: float = Field(15.0, ge=1, le=600)

    @model_validator(mode="after")
    def _trading_day_start_parses(self) -> RiskSettings:
        self.trading_day_start()
        return self

    def trading_day_start(self) -> tuple[time, ZoneInfo]:
        """`tradingDayStartsAt` as (local time, zone): "HH:MM Area/City"."""
        return _trading_day_start(self.trading_day_starts_at)


@functools.lru_cache(maxsize=8)
def _trading_day_start(text: str) -> tuple[time, ZoneInfo]:
    # Parsed once per text: every stored fill asks for its trading day (the realized P&L).
    clock, _, zone = text.partition(" ")
    try:
        hours, minutes = (int(part) for part in clock.split(":"))
        start = time(hours, minutes)
    except ValueError:
        raise ValueError(
            'tradingDayStartsAt must read "HH:MM Area/City", e.g. "17:00 America/Chicago"'
        ) from None
    try:
        return start, ZoneInfo(zone.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"tradingDayStartsAt: unknown time zone {zone.strip()!r}") from None


class BracketSettings(_Section):
    """Native brackets [reference 4.4] and the protection guarantee (orders/brackets.py)."""

    # After one leg filled completely, the broker cancels the other (OCO); a sibling still
    # working this long after the fill is cancelled by us.
    oco_cancel_within_seconds: float = Field(3.0, gt=0, le=600)
    # An entry with a stop-loss bracket that has filled must show a working stop-loss child
    # covering the filled size at the broker within this long (after the fill, or after the
    # stop was lost); otherwise `on_unprotected` happens.
    protect_within_seconds: float = Field(5.0, gt=0, le=600)
    on_unprotected: Literal["flatten", "alert"] = "flatten"


class OrderManagementSettings(_Section):
    lifecycle: LifecycleSettings = LifecycleSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    verification: VerificationSettings = VerificationSettings()
    partial_fill_tracking: PartialFillSettings = PartialFillSettings()
    concurrency_control: ConcurrencySettings = ConcurrencySettings()
    risk: RiskSettings = RiskSettings()
    brackets: BracketSettings = BracketSettings()


class ConfigFile(_Section):
    order_management: OrderManagementSettings


class ConfigError(ImproperlyConfigured):
    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"invalid configuration in {path}:\n{listed}")


def _describe(error: ErrorDetails) -> str:
    key_path = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key_path}: unknown key"
    return f"{key_path}: {error['msg']}"


def load_config(path: Path = DEFAULT_CONFIG_PATH) -> OrderManagementSettings:
    """Read and validate the YAML file; raise ConfigError naming every bad key."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror}"]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(path, [f"not valid YAML: {exc}"]) from exc
    if not isinstance(raw, dict):
        raise ConfigError(path, ["(top level): expected a mapping with the key orderManagement"])
    try:
        return ConfigFile.model_validate(raw).order_management
    except ValidationError as exc:
        raise ConfigError(path, [_describe(error) for error in exc.errors()]) from exc
