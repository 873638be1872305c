"""`kubectl kubetune describe` while a job really trains on the real node: rank 0's measured peak, read
through the API server's pod proxy, beside the plan's prediction."""

import re

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, example, get, in_phase
from tests.integration.kubectl_plugin import kubectl_kubetune
from tests.integration.waiting import wait_until
from tests.node.conftest import Claims

pytestmark = [pytest.mark.cluster, pytest.mark.node]

JOB = "tiny-lora"
MEASURED = re.compile(r"measured peak, rank 0\s*│\s*([0-9.]+)")


def test_describe_shows_rank_zeros_measured_peak_beside_the_prediction(cluster: LocalCluster,
                                                                       node_operator: Operator,
                                                                       claims: Claims) -> None:
    namespace = claims.namespace
    assert apply(cluster, namespace, example(JOB)).returncode == 0

    def described() -> str | None:
        status = (get(cluster, namespace, "ftj", JOB) or {}).get("status", {})
        if status.get("phase") != "Running" or not status.get("progress", {}).get("step"):
            return None
        shown = kubectl_kubetune(cluster, "describe", JOB, "-n", namespace)
        assert shown.returncode == 0, shown.stderr
        return shown.stdout if MEASURED.search(shown.stdout) else None

    out = wait_until("describe to show rank 0's measured peak", described, timeout=300)
    measured = MEASURED.search(out)
    assert measured and float(measured.group(1)) > 0, out
    assert "predicted peak" in out and re.search(r"progress\s+step \d+/120", out), out
    ftj = wait_until("the job to end", in_phase(cluster, namespace, JOB, "Succeeded", "Failed"), timeout=600)
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
