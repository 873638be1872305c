"""A corpus of malformed and hostile FineTuneJobs (bad_input/corpus.yaml): each is refused at apply time with
a clear message or ends Failed with a clear reason; the operator never crashes, never retries in a loop, and
leaves objects it does not own exactly as they were."""

import copy
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import (
    Operator,
    apply,
    condition,
    events,
    example,
    get,
    in_phase,
    operator_running,
    temporary_namespace,
)
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = pytest.mark.cluster

CORPUS = yaml.safe_load((Path(__file__).parent / "bad_input" / "corpus.yaml").read_text())


def _expand(value: Any) -> Any:
    """`{{x300}}` is 300 x's, `{{d100}}` 100 ones: huge strings without a huge file."""
    if isinstance(value, str):
        return re.sub(r"\{\{([xd])(\d+)\}\}", lambda m: ("x" if m[1] == "x" else "1") * int(m[2]), value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def _merge(base: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def manifest(case: dict[str, Any]) -> dict[str, Any]:
    job = copy.deepcopy(example("minimal"))
    job["metadata"] = {"name": case["name"], **_expand(case.get("metadata", {}))}
    job["spec"] = _merge(job["spec"], _expand(case.get("spec", {})))
    for path in case.get("remove", []):
        *parents, leaf = path.split(".")
        node = job
        for part in parents:
            node = node[part]
        node.pop(leaf)
    return job


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Operator, int]]:
    port = free_port()
    with operator_running(cluster, tmp_path_factory.mktemp("bad-input"), f"--metrics-port={port}") as running:
        yield running, port


@pytest.fixture(scope="module")
def namespace(cluster: LocalCluster) -> Iterator[str]:
    with temporary_namespace(cluster, "bad") as name:
        yield name


def test_the_corpus_is_large_and_names_are_unique() -> None:
    names = [case["name"] for case in CORPUS]
    assert len(names) >= 50 and len(set(names)) == len(names)
    assert all(sum(outcome in case for outcome in ("refused", "failed", "waiting")) == 1 for case in CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_bad_input_is_refused_or_fails_with_a_clear_reason(cluster: LocalCluster, operator: tuple[Operator, int],
                                                           namespace: str, case: dict[str, Any]) -> None:
    for obj in case.get("precreate", []):
        cluster.kubectl_ok("create", "-n", namespace, "-f", "-", stdin=json.dumps(obj))
    result = apply(cluster, namespace, manifest(case))
    if "refused" in case:
        assert result.returncode != 0, f"accepted: {case['name']}"
        assert case["refused"] in result.stderr, result.stderr
        assert get(cluster, namespace, "ftj", manifest(case)["metadata"]["name"]) is None
        return
    assert result.returncode == 0, result.stderr
    if "waiting" in case:
        reason, text = case["waiting"]
        ftj = wait_until(f"{case['name']} to wait", lambda: (f := get(cluster, namespace, "ftj", case["name"])) and
                         any(c["type"] == "Running" and c["reason"] == reason for c in f.get("status", {})
                             .get("conditions", [])) and f, timeout=60)
        assert text in condition(ftj, "Running")["message"]
        assert get(cluster, namespace, "job", f"{case['name']}-train") is None  # nothing started that cannot run
        assert any(e["type"] == "Warning" and e["reason"] == reason for e in events(cluster, namespace, case["name"]))
        return
    reason, text = case["failed"]
    # Workers that cannot start are looked at once their Job is 20 s old (recovery.BLOCKED_AFTER_SECONDS).
    ftj = wait_until(f"{case['name']} to fail", in_phase(cluster, namespace, case["name"], "Failed", "Unschedulable",
                                                         "Succeeded"), timeout=90)
    failed = condition(ftj, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", reason), failed
    assert text in failed["message"], failed["message"]
    for obj in case.get("precreate", []):
        now = get(cluster, namespace, obj["kind"].lower(), obj["metadata"]["name"])
        assert not now["metadata"].get("ownerReferences"), now["metadata"]
        assert now.get("data") == obj.get("data")
        if obj["kind"] == "Job":
            assert now["spec"]["suspend"] is True and now["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox"
        else:  # the Job created beside the taken child goes: its pods could never start
            wait_until("the job's Job to go", lambda: get(cluster, namespace, "job", f"{case['name']}-train") is None)
    if "waiting.kubetune.io" in case.get("spec", {}).get("podMetadata", {}).get("labels", {}):
        # Workers that cannot start are stopped, not left retrying.
        assert get(cluster, namespace, "job", f"{case['name']}-train")["spec"]["suspend"] is True
    assert operator[0].process.poll() is None, "the operator died"


def test_the_operator_survived_the_corpus_without_errors_or_retry_loops(operator: tuple[Operator, int]) -> None:
    running, port = operator
    assert running.process.poll() is None
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    errors = [line for line in page.splitlines() if line.startswith("kubetune_reconcile_errors_total{")]
    assert not errors, errors
    assert "kubetune_reconcile_retries_total 0.0" in page
