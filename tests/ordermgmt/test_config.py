"""The tuning file and the environment: a bad value stops start-up and names the key."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ordermgmt.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "order_management.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_file_loads_with_the_documented_defaults() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    # should carry the values the issue names as defaults
    assert config.partial_fill_tracking.timeout_seconds == 60
    assert config.partial_fill_tracking.timeout_action == "alert"
    assert config.idempotency.key_ttl_seconds == 3600
    assert config.verification.direct_lookup_budget_ms == 500
    assert config.verification.search_budget_ms == 2000
    assert config.lifecycle.stuck_after_seconds.submitting == 10


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        (
            "orderManagement:\n  idempotency:\n    keyTtlSeconds: 5\n",
            "orderManagement.idempotency.keyTtlSeconds: Input should be greater than or equal",
        ),
        (
            "orderManagement:\n  idempotency:\n    keyTtlSeconds: '3600'\n",
            "orderManagement.idempotency.keyTtlSeconds: Input should be a valid integer",
        ),
        (
            "orderManagement:\n  partialFillTracking:\n    timeoutAction: cancel\n",
            "orderManagement.partialFillTracking.timeoutAction: Input should be 'alert'",
        ),
        (
            "orderManagement:\n  verification:\n    maxAttemps: 3\n",
            "orderManagement.verification.maxAttemps: unknown key",
        ),
        (
            "orderManagement:\n  lifecycel: {}\n",
            "orderManagement.lifecycel: unknown key",
        ),
        (
            "orderManagement:\n  lifecycle:\n    archive:\n      hotRetentionDays: 400\n",
            "orderManagement.lifecycle.archive: Value error, deleteRetentionDays must be greater",
        ),
        ("somethingElse: 1\n", "orderManagement: Field required"),
        ("- a list\n", "(top level): expected a mapping"),
        ("orderManagement: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_file_is_refused_with_the_key_path(
    tmp_path: Path, yaml_text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, yaml_text))
    # should name the key and say what is wrong with it
    assert expected in str(caught.value)


def test_omitted_keys_take_their_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "orderManagement: {}\n"))
    # should fill every section from the defaults
    assert config.concurrency_control.max_queue_depth_per_account == 100


def run_check(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "DATABASE"))}
    clean.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_start_up_stops_on_a_bad_config_file(tmp_path: Path) -> None:
    bad = write(tmp_path, "orderManagement:\n  concurrencyControl:\n    lockTimeoutMs: 1\n")
    result = run_check(ORDERMGMT_CONFIG=str(bad))
    # should refuse to start and name the key
    assert result.returncode != 0
    assert "orderManagement.concurrencyControl.lockTimeoutMs" in result.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DATABASE_URL": "mysql://x@localhost/db"}, "DATABASE_URL"),
        ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL"),
        ({"ALLOWED_HOSTS": "a,,b"}, "ALLOWED_HOSTS"),
        ({"ORDERMGMT_CONFIG": "/nonexistent/file.yaml"}, "ORDERMGMT_CONFIG"),
        ({"PROJECTX_API_URL": "https://api.example.invalid"}, "PROJECTX_USER_HUB_URL"),
        (
            {"PROJECTX_MARKET_HUB_URL": "ftp://rtc.example.invalid/hubs/market"},
            "PROJECTX_MARKET_HUB_URL",
        ),
        ({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/x"}, "DJANGO_SECRET_KEY"),
    ],
)
def test_start_up_stops_on_a_bad_environment_value(env: dict[str, str], named: str) -> None:
    result = run_check(**env)
    # should refuse to start with a message that names the variable
    assert result.returncode != 0
    assert named in result.stderr


def test_the_embedded_default_starts_with_nothing_set() -> None:
    result = run_check()
    # should start on SQLite with no environment at all
    assert result.returncode == 0, result.stderr


def test_the_market_hub_url_reaches_the_gateway_config(settings: Any) -> None:
    from accounts.gateway import gateway_config_from_settings

    settings.PROJECTX_USE_SIMULATOR = False
    settings.PROJECTX_API_URL = "https://api.example.invalid"
    settings.PROJECTX_USER_HUB_URL = "https://rtc.example.invalid/hubs/user"
    settings.PROJECTX_MARKET_HUB_URL = "https://market.example.invalid/hubs/market"
    # should carry the market hub's own URL, not a guess from the user hub's
    assert gateway_config_from_settings().market_hub_url == (
        "https://market.example.invalid/hubs/market"
    )
