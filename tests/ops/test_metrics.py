"""GET /metrics: the Prometheus text format, only for allowed addresses or the token, and one
view of several processes in multiprocess mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from tests.ops.scrape import exported_names, sample_value

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.django_db


def scrape(remote_addr: str = "127.0.0.1", **extra: str):
    return Client().get("/metrics", REMOTE_ADDR=remote_addr, **extra)


def test_it_serves_every_contract_metric_in_the_prometheus_text_format() -> None:
    response = scrape()
    names = exported_names(response.content.decode())
    # should answer in the text format Prometheus scrapes
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    # should export the metrics operators build alerts and dashboards on, before any event
    assert {
        "order_lifecycle_transitions_total",
        "order_verification_attempts_total",
        "order_fill_events_total",
        "idempotency_cache_hits_total",
        "idempotency_cache_misses_total",
        "lock_acquisitions_total",
        "deadlocks_total",
        "order_stuck_total",
        "orders_stuck",
        "listener_connected",
        "listener_last_event_age_seconds",
        "order_placement_seconds_bucket",
        "order_verification_seconds_bucket",
        "fill_processing_seconds_bucket",
    } <= names


def test_it_refuses_other_addresses_without_a_token() -> None:
    response = scrape("203.0.113.9")
    # should refuse, saying how to get in
    assert response.status_code == 403
    assert b"metrics token" in response.content


def test_the_token_opens_it_from_anywhere(settings) -> None:
    settings.METRICS_TOKEN = "s3cret-token"
    bearer = scrape("203.0.113.9", HTTP_AUTHORIZATION="Bearer s3cret-token")
    query = Client().get("/metrics?token=s3cret-token", REMOTE_ADDR="203.0.113.9")
    wrong = scrape("203.0.113.9", HTTP_AUTHORIZATION="Bearer guess")
    # should accept the token as a Bearer header or a query parameter
    assert bearer.status_code == 200
    assert query.status_code == 200
    # should ask for the token when a wrong one is given
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'


def test_the_allowlist_takes_networks(settings) -> None:
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8"]
    # should admit an address in an allowed network, and no longer the loopback default
    assert scrape("10.20.30.40").status_code == 200
    assert scrape("::ffff:10.1.1.1").status_code == 200
    assert scrape("127.0.0.1").status_code == 403


def _in_a_process(directory: Path, code: str, **env: str) -> None:
    subprocess.run(
        [sys.executable, "-c", f"from common import metrics; {code}"],
        cwd=ROOT,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory), **env},
        check=True,
    )


def test_several_processes_are_added_up_in_multiprocess_mode(settings, tmp_path: Path) -> None:
    # Two workers, each counting its own events into the shared directory.
    for _ in range(2):
        _in_a_process(
            tmp_path,
            "metrics.order_fill_events_total.labels('applied').inc(3);"
            "metrics.order_placement_seconds.labels('open').observe(0.2)",
        )
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    text = scrape().content.decode()
    # should add up every process's counters and histograms
    assert sample_value(text, "order_fill_events_total", {"outcome": "applied"}) == 6
    assert sample_value(text, "order_placement_seconds_count", {"outcome": "open"}) == 2
    # should still serve what is read from the database
    assert "listener_connected" in exported_names(text)


def test_a_named_command_reuses_its_files_run_after_run(settings, tmp_path: Path) -> None:
    for _ in range(3):
        _in_a_process(
            tmp_path,
            "metrics.order_stuck_total.labels('unknown').inc()",
            ORDERMGMT_METRICS_PROCESS="detect_stuck_orders",
        )
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    text = scrape().content.decode()
    # should keep one file per kind for the command, its counter carrying on across runs
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "counter_detect_stuck_orders.db",
        "histogram_detect_stuck_orders.db",
    ]
    assert sample_value(text, "order_stuck_total", {"state": "unknown"}) == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [("METRICS_ALLOWED_IPS", "127.0.0.1,localhost"), ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent")],
)
def test_a_bad_setting_stops_startup_naming_it(variable: str, value: str) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ordermgmt.settings", variable: value}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    # should refuse to start and name the variable
    assert result.returncode != 0
    assert f"{variable}={value!r} is not valid" in result.stderr
