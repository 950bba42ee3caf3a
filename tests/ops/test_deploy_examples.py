"""deploy/: the crontab and systemd units run commands that exist with options they accept, the
units they name exist, and the Grafana dashboard only queries metrics /metrics exports."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
from django.core.management import get_commands, load_command_class
from django.test import Client

from tests.ops.scrape import exported_names, metric_names

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SYSTEMD = DEPLOY / "systemd"


def scheduled_invocations() -> list[list[str]]:
    """Every `manage.py <command> ...` the crontab and the units run, as argument lists."""
    invocations = []
    for line in (DEPLOY / "cron" / "ordermgmt.crontab").read_text().splitlines():
        if "$M " in line:
            invocations.append(shlex.split(line.split("$M ", 1)[1].split(">>")[0]))
    for unit in SYSTEMD.glob("*.service"):
        text = unit.read_text().replace("\\\n", " ")
        for command in re.findall(r"^ExecStart(?:Pre)?=\S+ manage\.py (.+)$", text, re.M):
            invocations.append(shlex.split(command))
    return invocations


def test_every_scheduled_command_exists_and_accepts_its_options() -> None:
    invocations = scheduled_invocations()
    commands = get_commands()
    # should schedule the operations commands, cron and systemd alike
    assert {args[0] for args in invocations} >= {
        "archive_orders",
        "detect_stuck_orders",
        "cleanup_idempotency",
        "verify_unknown_orders",
        "listen_gateway",
    }
    for name, *options in invocations:
        command = load_command_class(commands[name], name)
        # should parse: a misspelt option would fail every scheduled run
        command.create_parser("manage.py", name).parse_args(options)


def test_every_unit_the_units_name_exists() -> None:
    shipped = {unit.name for unit in SYSTEMD.iterdir()}
    named = set()
    for unit in SYSTEMD.iterdir():
        for key in ("Wants", "Requires", "Before", "PartOf"):
            for value in re.findall(rf"^{key}=(.+)$", unit.read_text(), re.M):
                named.update(v for v in value.split() if v.startswith("ordermgmt"))
    # should only refer to units shipped beside them
    assert named <= shipped
    # should pair every timer with the service it starts
    for timer in SYSTEMD.glob("*.timer"):
        assert timer.with_suffix(".service").name in shipped


def test_the_cron_wrapper_is_valid_shell() -> None:
    result = subprocess.run(
        ["sh", "-n", str(DEPLOY / "bin" / "ordermgmt-manage")], capture_output=True, text=True
    )
    # should parse, and be executable for cron
    assert result.returncode == 0, result.stderr
    assert (DEPLOY / "bin" / "ordermgmt-manage").stat().st_mode & 0o111


@pytest.mark.django_db
def test_the_dashboard_only_queries_exported_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "ordermgmt-dashboard.json").read_text())
    exposition = Client().get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    exported = exported_names(exposition)
    targets = [t for panel in dashboard["panels"] for t in panel.get("targets", [])]
    # should have panels, each querying series /metrics serves
    assert len(targets) >= 20
    for target in targets:
        assert metric_names(target["expr"]) <= exported, target["expr"]
