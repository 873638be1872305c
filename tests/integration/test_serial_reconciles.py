"""kopf runs a FineTuneJob's timer beside its change handlers; the operator reconciles one job once at a time
anyway, and stops reconciling it once it has finished. Forced here with a 50 ms timer and a burst of spec
changes against the real apiserver and kopf."""

import json
import time
import urllib.request
from pathlib import Path

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import apply, events, example, get, in_phase, operator_running, temporary_namespace
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = pytest.mark.cluster


def counter(port: int, name: str) -> float:
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    """The sum over a counter's series, labelled or not."""
    return sum(float(line.split()[-1]) for line in page.splitlines() if line.startswith((f"{name} ", f"{name}{{")))


def test_a_timer_meeting_a_burst_of_changes_reconciles_the_job_once_at_a_time(cluster: LocalCluster,
                                                                             tmp_path: Path) -> None:
    port = free_port()
    with temporary_namespace(cluster, "serial") as namespace, operator_running(
            cluster, tmp_path, "--metrics-port", str(port), "--namespace", namespace,
            env={"KUBETUNE_RECONCILE_SECONDS": "0.05"}):
        manifest = example("minimal")
        manifest["spec"]["suspend"] = True
        assert apply(cluster, namespace, manifest).returncode == 0
        for turn in range(10):  # each a change handler run, while the timer ticks every 50 ms
            patch = json.dumps({"spec": {"suspend": turn % 2 == 0}})
            cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p", patch)
        cluster.kubectl_ok("patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}')
        ftj = wait_until("the job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded"))
        assert counter(port, "kubetune_reconcile_waits_total") > 0  # they did meet
        reasons = [e["reason"] for e in events(cluster, namespace, "minimal")]
        # One plan, one creation of the children, one completion; no attempt recorded, no error, no retry.
        assert (reasons.count("Planned"), reasons.count("Created"), reasons.count("JobCompleted")) == (1, 1, 1), reasons
        assert not ftj["status"].get("attempts")
        assert counter(port, "kubetune_reconcile_errors_total") == counter(port, "kubetune_reconcile_retries_total") == 0
        # Finished: its timer is stopped, so the operator (watching this namespace only) reconciles nothing.
        time.sleep(1)
        before = counter(port, "kubetune_reconcile_duration_seconds_count")
        time.sleep(2)
        assert counter(port, "kubetune_reconcile_duration_seconds_count") == before
        assert get(cluster, namespace, "ftj", "minimal")["status"]["phase"] == "Succeeded"
