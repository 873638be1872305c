"""The chart's Prometheus rules rendered by Helm into a plain rules file, as a Prometheus Operator would
load them from the PrometheusRule."""

import subprocess
from pathlib import Path

import yaml

from kubetune.devcluster import binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubetune"
RELEASE = "kubetune"


def render_rules(path: Path, namespace: str = "default") -> Path:
    rendered = subprocess.run(
        [str(binaries.built("helm")), "template", RELEASE, str(CHART), "--namespace", namespace,
         "--set", "monitoring.prometheusRule.enabled=true", "--show-only", "templates/prometheusrule.yaml"],
        capture_output=True, text=True, check=True).stdout
    path.write_text(yaml.safe_dump(yaml.safe_load(rendered)["spec"], width=200))
    return path
