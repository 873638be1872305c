"""`kubectl kubetune` against the local cluster, run by the real kubectl: `plan` answers what the operator then
puts in status.plan for the same spec and cluster (with the operator's prices read from its Deployment), and
`describe` shows a replanned job's plan, attempts, conditions and Events; missing jobs and invalid files are
refused with the cluster's own messages."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, example, failing, get, operator_running, temporary_namespace
from tests.integration.kubectl_plugin import kubectl_kubetune
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.cluster

# What the chart's gpuPrices value would hold: V100s far cheaper than their list price, so the cheapest plan
# moves to them only when the operator's configuration is read.
PRICES = {"V100-SXM2-32GB": 0.01}
OOM = "kubetune-oom peak_allocated_bytes=23000000000 device_total_bytes=23580639232"


@pytest.fixture(scope="module")
def priced_operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator with PRICES, and a Deployment as the chart makes it (no replicas) that says so."""
    env = {"KUBETUNE_GPU_PRICES": json.dumps(PRICES)}
    with temporary_namespace(cluster, "kubetune-system") as system:
        labels = {"app.kubernetes.io/name": "kubetune", "app.kubernetes.io/instance": "kubetune",
                  "app.kubernetes.io/component": "operator"}
        cluster.kubectl_ok("apply", "-n", system, "-f", "-", stdin=json.dumps({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kubetune", "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "operator", "image": "kubetune/operator:0.1.0",
                                         "env": [{"name": k, "value": v} for k, v in env.items()]}]}}}}))
        with operator_running(cluster, tmp_path_factory.mktemp("operator"), env=env) as running:
            yield running


def job(name: str) -> dict[str, Any]:
    manifest = example("minimal")
    manifest["metadata"]["name"] = name
    return manifest


def test_plan_is_what_the_operator_puts_in_status(cluster: LocalCluster, priced_operator: Operator,
                                                  namespace: str) -> None:
    name = f"planned-{uuid.uuid4().hex[:6]}"
    manifest = job(name)
    text = yaml.safe_dump(manifest)
    as_json = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, "-o", "json", stdin=text)
    assert as_json.returncode == 0, as_json.stderr
    planned = json.loads(as_json.stdout)
    as_yaml = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, "-o", "yaml", stdin=text)
    assert yaml.safe_load(as_yaml.stdout) == planned
    assert planned["gpuType"] == "V100-SXM2-32GB", planned  # the Deployment's prices were read
    assert planned["runnersUp"] and all(r["whyNotChosen"] for r in planned["runnersUp"])

    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("the operator's plan", lambda: (get(cluster, namespace, "ftj", name) or {}).get("status", {})
                     .get("plan"))
    assert ftj == planned

    table = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, stdin=text)
    assert table.returncode == 0, table.stderr
    out = table.stdout
    assert "V100-SXM2-32GB" in out and "why not chosen" in out and planned["runnersUp"][0]["gpuType"] in out
    assert "optimizer states" in out and "GPU capacity" in out and "█" in out
    assert "Deployment kubetune-system-" in out


def test_describe_shows_the_plan_the_attempts_and_why(cluster: LocalCluster, priced_operator: Operator,
                                                      namespace: str) -> None:
    manifest = failing("oom", 86, message=OOM)
    manifest["spec"]["recovery"] = {"maxOutOfMemoryReplans": 1}
    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("the replans to run out", lambda: (get(cluster, namespace, "ftj", "oom") or {})
                     .get("status", {}).get("phase") == "Failed" or None, timeout=120)
    assert ftj
    shown = kubectl_kubetune(cluster, "describe", "oom", "-n", namespace)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"{namespace}/oom" in out and "Failed" in out
    assert "attempts that ended" in out and "GPUOutOfMemory" in out and "21.4 GiB" in out  # 23e9 bytes measured
    assert "gave up after 2 attempts" in out
    assert "Replanned" in out  # an Event
    assert "GPU capacity" in out and "█" in out
    status = get(cluster, namespace, "ftj", "oom")["status"]
    assert status["plan"]["peakSummary"] in out


def test_a_missing_job_and_an_invalid_file_are_refused_with_the_clusters_reasons(
        cluster: LocalCluster, priced_operator: Operator, namespace: str) -> None:
    missing = kubectl_kubetune(cluster, "describe", "nope", "-n", namespace)
    assert missing.returncode == 1
    assert f'finetunejob "nope" not found in namespace "{namespace}"' in missing.stderr

    invalid = job("bad")
    invalid["spec"]["training"] = {"seqLen": 8}
    refused = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, stdin=yaml.safe_dump(invalid))
    assert refused.returncode == 2
    # The CRD's OpenAPI minimum, as the API server words it.
    assert "spec.training.seqLen" in refused.stderr and "greater than or equal to 16" in refused.stderr, \
        refused.stderr
    assert "Traceback" not in refused.stderr
    assert get(cluster, namespace, "ftj", "bad") is None  # a dry run stores nothing

    nowhere = job("nowhere")
    nowhere["spec"]["resources"] = {"gpuTypes": ["NVIDIA-B200"]}
    unplanned = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, stdin=yaml.safe_dump(nowhere))
    assert unplanned.returncode == 1
    assert "no plan (Unschedulable): no GPU nodes of the allowed types (NVIDIA-B200)" in unplanned.stderr, \
        unplanned.stderr


def test_the_kubeconfig_and_context_flags_choose_the_cluster_and_namespace(
        cluster: LocalCluster, priced_operator: Operator, namespace: str, tmp_path: Path) -> None:
    # A kubeconfig of its own whose current context points nowhere, and a context of the cluster whose
    # namespace is the test's.
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    config["contexts"].append({"name": "team", "context": {**config["contexts"][0]["context"], "namespace": namespace}})
    config["clusters"].append({"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1"}})
    config["contexts"].append({"name": "nowhere", "context": {"cluster": "nowhere", "user": config["users"][0]["name"]}})
    config["current-context"] = "nowhere"
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    assert apply(cluster, namespace, job("flags")).returncode == 0

    shown = kubectl_kubetune(cluster, "describe", "flags", "--kubeconfig", str(path), "--context", "team",
                             kubeconfig="/nonexistent")
    assert shown.returncode == 0, shown.stderr
    assert f"{namespace}/flags" in shown.stdout
    # KUBECONFIG alone: its current context, which reaches nothing.
    unreachable = kubectl_kubetune(cluster, "describe", "flags", "-n", namespace, kubeconfig=str(path))
    assert unreachable.returncode == 1 and "cannot reach the cluster at https://127.0.0.1:1" in unreachable.stderr


def test_admission_warnings_are_printed_as_kubectl_prints_them(cluster: LocalCluster, priced_operator: Operator,
                                                              namespace: str) -> None:
    # A warn-only policy like the chart's admission warnings, for this test's namespace alone.
    name = f"plugin-warnings-{namespace}"
    cluster.kubectl_ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [
             {"apiGroups": ["kubetune.io"], "apiVersions": ["*"], "resources": ["finetunejobs"],
              "operations": ["CREATE"]}]},
                  "validations": [{"expression": "has(object.spec.output) && has(object.spec.output.claimName)",
                                   "message": "spec.output.claimName is not set: checkpoints are lost"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Warn"], "matchResources": {"namespaceSelector": {
             "matchLabels": {"kubernetes.io/metadata.name": namespace}}}}}]}))
    try:
        def warned() -> str | None:
            planned = kubectl_kubetune(cluster, "plan", "-f", "-", "-n", namespace, "-o", "json",
                                       stdin=yaml.safe_dump(job("warned")))
            assert planned.returncode == 0, planned.stderr
            return planned.stderr if "Warning:" in planned.stderr else None

        # The API server picks a new policy up within seconds.
        stderr = wait_until("the policy's warning", warned, timeout=60)
        assert f"Warning: Validation failed for ValidatingAdmissionPolicy '{name}'" in stderr, stderr
        assert "spec.output.claimName is not set: checkpoints are lost" in stderr
    finally:
        cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name)
