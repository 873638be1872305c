"""Children the real apiserver refuses: the job says so in status with the apiserver's own message, never a
silent retry loop. A quota may be lifted, so the job waits and then runs; an admission policy's denial is the
user's to fix, so the job fails naming it."""

import json
import time

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, events, example, get, in_phase
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.cluster


# A Job to try against admission (with --dry-run=server: never created).
PROBE = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
         "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}}}


def running_reason(cluster: LocalCluster, namespace: str, name: str, reason: str):
    def check() -> dict | None:
        ftj = get(cluster, namespace, "ftj", name)
        conditions = (ftj or {}).get("status", {}).get("conditions", [])
        return ftj if any(c["type"] == "Running" and c["reason"] == reason for c in conditions) else None
    return check


def over_quota(cluster: LocalCluster, namespace: str, quota: str, hard: dict[str, str], probe: dict) -> str:
    """Apply a ResourceQuota, create the example job once the quota refuses `probe`, and return the job's
    Running message once it says it is over quota. The quota admits everything until the apiserver's cache has
    it, and refuses as "status unknown for quota" until the quota controller has counted."""
    manifest = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": quota}, "spec": {"hard": hard}}
    cluster.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    wait_until("the quota to take effect", lambda: f"quota: {quota}" in cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(probe)).stderr)
    apply(cluster, namespace, example("minimal"))
    ftj = wait_until("the job to say it is over quota", running_reason(cluster, namespace, "minimal", "QuotaExceeded"))
    assert ftj["status"]["phase"] not in ("Failed", "Succeeded")
    assert any(e["type"] == "Warning" and e["reason"] == "QuotaExceeded" for e in events(cluster, namespace, "minimal"))
    return condition(ftj, "Running")["message"]


def test_a_job_over_its_namespaces_quota_waits_saying_so_and_runs_once_it_is_lifted(
        cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    message = over_quota(cluster, namespace, "no-jobs", {"count/jobs.batch": "0"}, PROBE)
    assert "Job minimal-train (403 Forbidden)" in message and "quota: no-jobs" in message, message
    cluster.kubectl_ok("delete", "resourcequota", "no-jobs", "-n", namespace)
    wait_until("the job to run once the quota is gone", in_phase(cluster, namespace, "minimal", "Succeeded"))


def test_a_config_map_over_quota_leaves_no_job_behind_and_runs_once_the_quota_is_lifted(
        cluster: LocalCluster, operator: Operator, namespace: str) -> None:
    """The Job is created beside its ConfigMap: when the ConfigMap is refused, the Job must go (its pods could
    never mount their configuration), and the retries must not make and remove a Job each time."""
    message = over_quota(cluster, namespace, "no-configmaps", {"configmaps": "0"},
                         {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "probe"}})
    assert "ConfigMap minimal-config-" in message and "quota: no-configmaps" in message, message
    wait_until("no Job to be left", lambda: get(cluster, namespace, "job", "minimal-train") is None)
    time.sleep(5)  # five periodic reconciles (the tests' KUBETUNE_RECONCILE_SECONDS=1), each trying again
    assert get(cluster, namespace, "job", "minimal-train") is None
    made = [e for e in events(cluster, namespace, "minimal") if e["reason"] == "Created" and "Job minimal-train" in e["message"]]
    assert len(made) == 1, made  # by the first try only: the retries create the ConfigMap before the Job
    cluster.kubectl_ok("delete", "resourcequota", "no-configmaps", "-n", namespace)
    wait_until("the job to run once the quota is gone", in_phase(cluster, namespace, "minimal", "Succeeded"))


@pytest.fixture
def jobs_denied(cluster: LocalCluster, namespace: str):
    """An admission policy (the apiserver's own CEL, Deny) that refuses every Job in the test's namespace."""
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
              "metadata": {"name": f"deny-jobs-{namespace}"},
              "spec": {"failurePolicy": "Fail",
                       "matchConstraints": {"resourceRules": [{"apiGroups": ["batch"], "apiVersions": ["v1"],
                                                               "resources": ["jobs"], "operations": ["CREATE"]}]},
                       "validations": [{"expression": "false", "message": "training Jobs are not allowed here"}]}}
    binding = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
               "metadata": {"name": f"deny-jobs-{namespace}"},
               "spec": {"policyName": f"deny-jobs-{namespace}", "validationActions": ["Deny"],
                        "matchResources": {"namespaceSelector": {"matchLabels": {
                            "kubernetes.io/metadata.name": namespace}}}}}
    cluster.kubectl_ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                             "items": [policy, binding]}))
    wait_until("the policy to take effect", lambda: "not allowed here" in cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-", stdin=json.dumps(PROBE)).stderr)
    yield
    cluster.kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", f"deny-jobs-{namespace}")


def test_a_child_an_admission_policy_denies_fails_the_job_with_the_policys_message(
        cluster: LocalCluster, operator: Operator, namespace: str, jobs_denied: None) -> None:
    apply(cluster, namespace, example("minimal"))
    ftj = wait_until("the job to fail", in_phase(cluster, namespace, "minimal", "Failed"))
    failed = condition(ftj, "Failed")
    assert failed["reason"] == "ChildRefused", failed
    assert "Job minimal-train (422 Invalid)" in failed["message"], failed
    assert "training Jobs are not allowed here" in failed["message"], failed
    assert get(cluster, namespace, "job", "minimal-train") is None
    # The ConfigMap and Service made beside it stay the job's (garbage-collected with it).
    configs = json.loads(cluster.kubectl_ok("get", "configmaps", "-n", namespace, "-l", "kubetune.io/finetunejob=minimal",
                                            "-o", "json"))["items"]
    assert [c["metadata"]["name"] for c in configs] and all(c["metadata"]["name"].startswith("minimal-config-")
                                                            for c in configs), configs
    assert "Traceback" not in operator.log.read_text()
