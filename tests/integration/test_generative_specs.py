"""Valid FineTuneJobs mutated at random (a field set to a value of any type or size, removed, a name or a
reference changed) and applied to the real apiserver with the operator running. The invariant a user relies
on: each is refused at apply time with a message, or within seconds has a status that says what it is doing
or why it failed; and the operator never errs or retries on its input."""

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, example, get, operator_running, temporary_namespace
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = pytest.mark.cluster

PATHS = ["model.name", "model.config", "model.tokenizer", "dataset.source", "dataset.claimName", "dataset.format",
         "method.type", "method.loraRank", "method.loraTargets", "method.zeroStage", "method.offload",
         "method.microBatch", "method.attention", "training.seqLen", "training.globalBatch", "training.maxSteps",
         "training.learningRate", "training.epochs", "resources.gpus", "resources.nodes", "resources.gpuTypes",
         "resources.maxGPUs", "output.path", "output.claimName", "output.keepCheckpoints", "priorityClassName",
         "podMetadata.labels", "podMetadata.annotations", "hubTokenSecretRef", "images.trainer", "suspend",
         "checkpointIntervalSteps", "recovery.maxRestarts"]
values = st.one_of(
    st.none(), st.booleans(), st.integers(-2**40, 2**40), st.sampled_from([0, 1, -1, 3, 64, 4096, 10**9]),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=80),
    st.sampled_from(["", "Auto", "LoRA", "/output", "/etc", "../x", "2e-4", "0", "1e400", "q_proj", "a.b/c", "🦙",
                     "x" * 300, "A10G-24GB", "no-such-claim"]),
    st.lists(st.text(max_size=12), max_size=4), st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=3))
names = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True),
                  st.sampled_from(["a" * 54, "with.dot", "9lives", "UPPER", "end-"]))
mutation = st.tuples(st.sampled_from(PATHS), st.sampled_from(["set", "remove"]), values)

# A job that waits says so: a reason on its Running or Admitted condition, a plan, or an end.
SAYS_WHAT = ("Planned", "Running", "Succeeded", "Failed", "Unschedulable", "Queued", "Waiting", "Suspended",
             "Restarting")


def mutated(name: str, changes: list[tuple[str, str, Any]]) -> dict[str, Any]:
    job = example("minimal")
    job["metadata"] = {"name": name}
    for path, how, value in changes:
        *parents, leaf = path.split(".")
        node = job["spec"]
        for part in parents:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        if how == "remove":
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return job


@pytest.fixture(scope="module")
def running(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, int, str]]:
    port = free_port()
    with temporary_namespace(cluster, "fuzz") as namespace, operator_running(
            cluster, tmp_path_factory.mktemp("fuzz"), "--metrics-port", str(port), "--namespace", namespace) as op:
        yield op, port, namespace


def says_what_it_does(cluster: LocalCluster, namespace: str, name: str) -> dict | None:
    ftj = get(cluster, namespace, "ftj", name)
    status = (ftj or {}).get("status", {})
    if status.get("phase") not in SAYS_WHAT and not any(
            c["type"] == "Running" and c["status"] == "False" for c in status.get("conditions", [])):
        return None
    return ftj


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(name=names, changes=st.lists(mutation, min_size=1, max_size=3))
def test_every_mutated_job_is_refused_or_says_what_it_is_doing(cluster: LocalCluster, running: tuple[Operator, int, str],
                                                               name: str, changes: list) -> None:
    _, _, namespace = running
    manifest = mutated(name, changes)
    cluster.kubectl("delete", "ftj", name, "-n", namespace, "--wait=true", "--timeout=30s")
    result = apply(cluster, namespace, manifest)
    if result.returncode != 0:  # refused: the apiserver names the field
        assert "is invalid" in result.stderr or "Error from server" in result.stderr, result.stderr
        return
    ftj = wait_until(f"{name} to say what it does ({json.dumps(changes)[:300]})",
                     lambda: says_what_it_does(cluster, namespace, name), timeout=30)
    failed = [c for c in ftj["status"].get("conditions", []) if c["type"] == "Failed" and c["status"] == "True"]
    assert all(c["reason"] and c["message"] for c in failed), failed


def test_the_operator_never_erred_on_the_mutations(running: tuple[Operator, int, str]) -> None:
    operator, port, _ = running
    assert operator.process.poll() is None, "the operator died"
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert not [line for line in page.splitlines() if line.startswith("kubetune_reconcile_errors_total{")]
    assert "kubetune_reconcile_retries_total 0.0" in page
    assert "Traceback" not in operator.log.read_text()
