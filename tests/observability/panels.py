"""The chart's dashboards' queries, with Grafana's variables filled in as for a user looking at one job."""

import json
import re
from pathlib import Path
from typing import Any

DASHBOARDS = Path(__file__).resolve().parents[2] / "charts" / "kubetune" / "dashboards"


def boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def substitute(expr: str, namespace: str, job: str) -> str:
    """`namespace` is a value, or a regular expression for the fleet dashboard's multi-value variable."""
    for variable, value in {"$namespace": namespace, "$finetunejob": job, "$__rate_interval": "1m",
                            "$__range": "10m"}.items():
        expr = expr.replace(variable, value)
    # What is left are label_replace's $1, which are PromQL's, not Grafana variables.
    assert not re.search(r"\$[A-Za-z_]", expr), expr
    return expr


def job_panel_queries(title_contains: str, namespace: str, job: str) -> list[tuple[str, str, str]]:
    """(panel title, legend, query) of the job dashboard's panels whose title contains `title_contains`."""
    board = boards()["kubetune-job.json"]
    return [(panel["title"], target["legendFormat"], substitute(target["expr"], namespace, job))
            for panel in board["panels"] if title_contains in panel["title"] for target in panel["targets"]]
