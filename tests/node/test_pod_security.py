"""Training pods meet the Pod Security Standards' restricted profile: in a namespace that enforces it, on the
real node, the tiny job trains to the end and writes to its root-owned claim through fsGroup."""

import json

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, example, get
from tests.integration.waiting import wait_until
from tests.node.conftest import Claims, claim_folder

pytestmark = [pytest.mark.cluster, pytest.mark.node]


def test_the_job_trains_in_a_namespace_that_enforces_the_restricted_profile(
        cluster: LocalCluster, node_operator: Operator, claims: Claims) -> None:
    namespace = claims.namespace
    cluster.kubectl_ok("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted",
                       "pod-security.kubernetes.io/enforce-version=latest")
    # Enforced: a pod that asks for more than the profile allows is refused.
    privileged = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged", "namespace": namespace},
                  "spec": {"containers": [{"name": "c", "image": "x", "securityContext": {"privileged": True}}]}}
    refused = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(privileged))
    assert refused.returncode != 0 and "violates PodSecurity" in refused.stderr, refused.stderr

    manifest = example("tiny-lora")
    manifest["spec"]["training"]["maxSteps"] = 20
    manifest["spec"]["checkpointIntervalSteps"] = 10
    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("the job to end", lambda: (f := get(cluster, namespace, "ftj", "tiny-lora")) and
                     f.get("status", {}).get("phase") in ("Succeeded", "Failed") and f, timeout=300)
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    output = claim_folder(cluster, namespace, claims.output)
    assert output.stat().st_uid == 0  # the claim's root stays root's; the trainer writes through its group
    assert (output / "final" / "adapter_model.safetensors").exists()
