"""The shipped Prometheus alert rules (vendor/prometheus) pass `promtool test rules` on their
recorded series, and name only metrics the broker exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from credbroker.observability import Metrics

RULES = Path(__file__).parents[2] / "vendor" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")


@needs_promtool
def test_the_rules_are_valid_and_their_recorded_series_fire_as_expected() -> None:
    assert PROMTOOL is not None
    for args in (
        ["check", "rules", "credbroker-alerts.yml"],
        ["test", "rules", "credbroker-alerts.test.yml"],
    ):
        done = subprocess.run(
            [PROMTOOL, *args], cwd=RULES, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_and_reads_exported_metrics() -> None:
    rules = yaml.safe_load((RULES / "credbroker-alerts.yml").read_text())
    alerts = {rule["alert"]: rule["expr"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((RULES / "credbroker-alerts.test.yml").read_text())
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert tested == set(alerts)

    metrics = Metrics()
    metrics.count_audit_failure("file")
    metrics.upstream_failures.labels("secret_store", "x").inc()
    exported = {
        sample.name for family in metrics.registry.collect() for sample in family.samples
    } | {family.name for family in metrics.registry.collect()}
    for name, expr in alerts.items():
        for metric in re.findall(r"credbroker_[a-z_]+", expr):
            assert metric in exported, (name, metric)
