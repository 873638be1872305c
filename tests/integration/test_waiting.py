"""On a busy cluster a job that fits waits for its GPUs instead of failing, and starts when they free: against
the real control plane, with pods of another team holding every GPU of the type the job may use."""

import json

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, condition, events, example, get, in_phase
from tests.integration.waiting import wait_until


def holder(node: str, gpus: int) -> dict:
    """Another workload's pod holding a node's GPUs: a bare pod, which kwok keeps running until deleted."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"holds-{node}", "labels": {"holds": "gpus"}},
            "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "tolerations": [{"operator": "Exists"}],
                     "containers": [{"name": "work", "image": "work", "resources": {
                         "limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}}}]}}


def hold_every(cluster: LocalCluster, namespace: str, product: str) -> None:
    """Another workload's pods holding every GPU of the nodes of `product`, running."""
    held = [node for node in json.loads(cluster.kubectl_ok("get", "nodes", "-o", "json"))["items"]
            if node["metadata"]["labels"].get("nvidia.com/gpu.product") == product]
    for node in held:
        cluster.kubectl_ok("create", "-n", namespace, "-f", "-", stdin=json.dumps(
            holder(node["metadata"]["name"], int(node["status"]["allocatable"]["nvidia.com/gpu"]))))
    wait_until(f"the other workload to hold every {product}", lambda: all(
        (pod := get(cluster, namespace, "pod", f"holds-{node['metadata']['name']}")) and
        pod["status"].get("phase") == "Running" for node in held))


def test_a_job_whose_gpus_are_busy_waits_for_them_and_starts_when_they_free(cluster: LocalCluster, operator: Operator,
                                                                          namespace: str) -> None:
    hold_every(cluster, namespace, "NVIDIA-L4")
    manifest = example("minimal")
    manifest["spec"]["resources"] = {"gpuTypes": ["L4-24GB"]}
    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("the job to wait for its GPUs", in_phase(cluster, namespace, "minimal", "Waiting", "Failed",
                                                               "Unschedulable"))
    assert ftj["status"]["phase"] == "Waiting", ftj["status"]
    waiting = condition(ftj, "Running")
    assert waiting["reason"] == "WaitingForCapacity" and "hold 0 such pod(s) now" in waiting["message"], waiting
    assert condition(ftj, "Planned")["status"] == "True" and condition(ftj, "Failed")["status"] == "Unknown"
    assert get(cluster, namespace, "job", "minimal-train") is None  # no pod holds a GPU while its peers cannot
    assert any(e["reason"] == "WaitingForCapacity" for e in events(cluster, namespace, "minimal"))

    cluster.kubectl_ok("delete", "pods", "-n", namespace, "-l", "holds=gpus", "--wait=false")
    ftj = wait_until("the job to start and succeed once the GPUs free", in_phase(cluster, namespace, "minimal",
                                                                                 "Succeeded", "Failed"))
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert ftj["status"]["plan"]["gpuType"] == "L4-24GB"
