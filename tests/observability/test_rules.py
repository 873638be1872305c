"""The chart's recording rules and alerts, as the chart renders them: promtool accepts them, and its unit tests
(alerts_test.yaml) show each alert firing when it should and silent when it should not."""

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.observability.rendering import render_rules

HERE = Path(__file__).parent


def test_rendered_rules_pass_promtool_check(tmp_path: Path) -> None:
    rules = render_rules(tmp_path / "rules.yaml")
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 10 rules found" in result.stdout


def test_every_alert_has_a_unit_test_that_fires_and_one_that_stays_silent(tmp_path: Path) -> None:
    rules = yaml.safe_load(render_rules(tmp_path / "rules.yaml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    cases = yaml.safe_load((HERE / "alerts_test.yaml").read_text())["tests"]
    fired = {t["alertname"] for c in cases for t in c.get("alert_rule_test", []) if t["exp_alerts"]}
    silent = {t["alertname"] for c in cases for t in c.get("alert_rule_test", []) if not t["exp_alerts"]}
    assert alerts == fired == silent


def test_alert_unit_tests_pass(tmp_path: Path) -> None:
    render_rules(tmp_path / "rules.yaml", namespace="kubetune")
    shutil.copy(HERE / "alerts_test.yaml", tmp_path)
    result = subprocess.run(["promtool", "test", "rules", "alerts_test.yaml"], cwd=tmp_path, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout + result.stderr
