"""deploy/prometheus/alerts.yml: valid for promtool, each alert fires (and stays quiet) when it
should, and every metric it names is one /metrics exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.test import Client

from tests.helpers import missing_service
from tests.ops.scrape import exported_names, metric_names

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


def _listener(connected: int, heard_seconds_ago: int) -> dict[str, str]:
    return {
        "listener_connected": f"{connected}x10",
        "listener_last_event_age_seconds": f"{heard_seconds_ago}x10",
    }


_ATTEMPTS = "order_verification_attempts_total"
_TIMEOUTS = 'order_fill_timeouts_total{action="alert"}'
_LOCK_WAIT = 'lock_wait_seconds_bucket{kind="account",le="%s"}'

# promtool unit tests: (alert, input series, minute to evaluate, labels expected; [] = quiet).
CASES: list[tuple[str, dict[str, str], int, list[dict[str, str]]]] = [
    (
        "HighVerificationFailureRate",
        {
            _ATTEMPTS + '{phase="search",outcome="error"}': "0+2x40",
            _ATTEMPTS + '{phase="search",outcome="found"}': "0+1x40",
        },
        30,
        [{}],
    ),
    (
        "HighVerificationFailureRate",  # 1 in 11 fails: normal noise
        {
            _ATTEMPTS + '{phase="search",outcome="error"}': "0+1x40",
            _ATTEMPTS + '{phase="search",outcome="found"}': "0+10x40",
        },
        30,
        [],
    ),
    (
        "HighVerificationFailureRate",  # all failed, but only 3 attempts: too few to judge
        {_ATTEMPTS + '{phase="direct",outcome="error"}': "0 1 2 3 3x40"},
        30,
        [],
    ),
    ("FrequentPartialFillTimeouts", {_TIMEOUTS: "0+1x60"}, 45, [{}]),
    ("FrequentPartialFillTimeouts", {_TIMEOUTS: "0+0.1x60"}, 45, []),
    (
        "HighLockContention",  # every wait between 0.5 and 1 s
        {_LOCK_WAIT % "0.5": "0x40", _LOCK_WAIT % "1.0": "0+10x40", _LOCK_WAIT % "+Inf": "0+10x40"},
        20,
        [{"kind": "account"}],
    ),
    (
        "HighLockContention",  # every wait under 10 ms
        {_LOCK_WAIT % "0.01": "0+10x40", _LOCK_WAIT % "+Inf": "0+10x40"},
        20,
        [],
    ),
    ("DeadlockDetected", {"deadlocks_total": "0 0 1x20"}, 5, [{}]),
    ("DeadlockDetected", {"deadlocks_total": "0x20"}, 5, []),
    ("UnprotectedPosition", {"order_unprotected_positions_total": "0 0 1x20"}, 5, [{}]),
    ("UnprotectedPosition", {"order_unprotected_positions_total": "0x20"}, 5, []),
    ("StuckOrdersDetected", {'orders_stuck{state="unknown"}': "1x10"}, 5, [{"state": "unknown"}]),
    ("StuckOrdersDetected", {'orders_stuck{state="unknown"}': "1 1 0x10"}, 5, []),
    ("ListenerDisconnectedOrStalled", _listener(0, 5), 5, [{}]),
    ("ListenerDisconnectedOrStalled", _listener(1, 300), 5, [{}]),
    ("ListenerDisconnectedOrStalled", _listener(1, 10), 5, []),
    (
        "AccountHalted",
        {
            'order_account_trading_state{account="1001",state="halted"}': "1x10",
            'order_account_trading_state{account="1002",state="halted"}': "0x10",
        },
        5,
        [{"account": "1001"}],
    ),
    (
        "AccountHalted",
        {'order_account_trading_state{account="1001",state="halted"}': "0x10"},
        5,
        [],
    ),
    (
        "DailyLossLimitReached",
        {'order_account_daily_loss_limit_reached{account="1001"}': "0 1x10"},
        5,
        [{"account": "1001"}],
    ),
    (
        "DailyLossLimitReached",
        {'order_account_daily_loss_limit_reached{account="1001"}': "0x10"},
        5,
        [],
    ),
    (
        "OrderManagementDown",
        {'up{job="ordermgmt",instance="web-1"}': "0x10"},
        5,
        [{"job": "ordermgmt", "instance": "web-1"}],
    ),
]


def rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing_service(
            "promtool", "install Debian's `prometheus` package (make test does, as root)"
        )
    assert path is not None
    return path


def _rendered(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations as Prometheus renders them for an alert with `labels`."""

    def render(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)

    return {name: render(text) for name, text in rule["annotations"].items()}


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True
    )
    # should parse and type-check every expression
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise(tmp_path: Path) -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    tests = []
    for alert, series, minute, expected in CASES:
        rule = by_name[alert]
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": f"{minute}m",
                        "alertname": alert,
                        "exp_alerts": [
                            {
                                "exp_labels": {**rule.get("labels", {}), **labels},
                                "exp_annotations": _rendered(rule, labels),
                            }
                            for labels in expected
                        ],
                    }
                ],
            }
        )
    cases = tmp_path / "alerts.test.yml"
    cases.write_text(yaml.safe_dump({"rule_files": [str(RULES)], "tests": tests}))
    result = subprocess.run(
        [promtool(), "test", "rules", str(cases)], capture_output=True, text=True
    )
    # should fire exactly in the cases that expect it, with the labels and text given
    assert result.returncode == 0, result.stdout + result.stderr
    # should cover every alert in the file
    assert {alert for alert, *_ in CASES} == set(by_name)


def test_every_rule_has_a_threshold_a_for_duration_and_instructions() -> None:
    for rule in rules():
        # should wait before firing and tell the operator what to do
        assert rule.get("for"), rule["alert"]
        assert re.search(r"[<>]=?|==", rule["expr"]), rule["alert"]
        assert len(rule["annotations"]["description"]) > 100, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}


@pytest.mark.django_db
def test_every_metric_the_rules_name_is_exported() -> None:
    exposition = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    exported = exported_names(exposition)
    for rule in rules():
        # should only alert on series /metrics actually serves
        assert metric_names(rule["expr"]) <= exported, rule["alert"]
