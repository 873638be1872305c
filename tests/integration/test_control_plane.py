"""The local control plane is real: the real scheduler binds GPU pods, the real controller-manager runs Jobs,
the real apiserver enforces RBAC, and kwok simulates the nodes and the pods' lives."""

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.accounts import service_account_kubeconfig
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.cluster



@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl_ok("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> None:
    cluster.kubectl_ok("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl_ok("get", "-n", namespace, kind, name, "-o", "json"))


def gpu_pod(name: str, gpus: int, node_selector: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": node_selector or {},
            "containers": [
                {"name": "main", "image": "trainer:test", "resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}
            ],
        },
    }


def test_server_reports_a_real_stamped_version(cluster: LocalCluster) -> None:
    version = json.loads(cluster.kubectl_ok("version", "-o", "json"))["serverVersion"]
    assert re.fullmatch(r"v1\.\d+\.\d+", version["gitVersion"]), version
    assert version["gitVersion"] != "v0.0.0"


def test_every_component_listens_on_loopback_only(cluster: LocalCluster) -> None:
    pids = {int(p.read_text()) for p in cluster.cluster_dir.glob("pids/*.pid")}
    assert len(pids) >= 5, "etcd, apiserver, controller-manager, scheduler and kwok should all be running"
    listening = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    addresses = [
        line.split()[3]
        for line in listening.splitlines()
        if any(f"pid={pid}," in line for pid in pids)
    ]
    assert addresses, "no listening socket found for the cluster's processes"
    assert all(address.startswith(("127.0.0.1:", "[::1]:")) for address in addresses), addresses


def test_the_real_node_listens_only_on_loopback_and_its_own_bridge(cluster: LocalCluster) -> None:
    """The kubelet and CoreDNS serve the node's bridge address, which only this host and its pods reach;
    containerd its socket and a loopback streaming port."""
    node_ip = cluster.node.network(cluster.node.state()).node_ip
    pids = {int(p.read_text()) for p in cluster.node.paths.pids.glob("*.pid")}
    assert len(pids) == 3, "containerd, CoreDNS and the kubelet should be running"
    listening = subprocess.run(["ss", "-ltnupH"], capture_output=True, text=True, check=True).stdout
    addresses = [line.split()[4] for line in listening.splitlines() if any(f"pid={pid}," in line for pid in pids)]
    assert f"{node_ip}:10250" in addresses and f"{node_ip}:53" in addresses, addresses
    assert all(address.startswith(("127.0.0.1:", "[::1]:", f"{node_ip}:")) for address in addresses), addresses


def test_all_profile_nodes_are_ready_with_gpu_capacity(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl_ok("get", "nodes", "-o", "json"))["items"]
    assert {n["metadata"]["name"] for n in nodes} == cluster.ready_nodes()
    h100 = [n for n in nodes if n["metadata"]["labels"].get("nvidia.com/gpu.product") == "NVIDIA-H100-80GB-HBM3"]
    assert len(h100) == 2
    assert all(n["status"]["allocatable"]["nvidia.com/gpu"] == "8" for n in h100)


def test_scheduler_binds_an_8_gpu_pod_to_an_h100_node_and_it_runs(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, gpu_pod("h100-pod", 8, {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
    pod = wait_until(
        "the pod to run",
        lambda: (p := get(cluster, namespace, "pod", "h100-pod"))["status"].get("phase") == "Running" and p,
    )
    node = get(cluster, "default", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["labels"]["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    events = cluster.kubectl_ok("get", "events", "-n", namespace, "--field-selector", "reason=Scheduled", "-o", "json")
    assert any(e["source"].get("component") == "default-scheduler" or e.get("reportingComponent") == "default-scheduler"
               for e in json.loads(events)["items"])


def test_pod_asking_more_gpus_than_any_node_has_stays_pending(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, gpu_pod("too-big", 16))

    def unschedulable() -> dict[str, Any] | None:
        pod = get(cluster, namespace, "pod", "too-big")
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        scheduled = conditions.get("PodScheduled", {})
        return scheduled if scheduled.get("reason") == "Unschedulable" else None

    condition = wait_until("the scheduler to give up on the pod", unschedulable)
    assert "Insufficient nvidia.com/gpu" in condition["message"]
    assert get(cluster, namespace, "pod", "too-big")["status"]["phase"] == "Pending"


def test_indexed_job_with_3_completions_completes(cluster: LocalCluster, namespace: str) -> None:
    apply(cluster, namespace, {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "indexed"},
        "spec": {
            "completions": 3,
            "parallelism": 3,
            "completionMode": "Indexed",
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L4"},
                    "containers": [{"name": "main", "image": "trainer:test",
                                    "resources": {"limits": {"nvidia.com/gpu": "4"}}}],
                }
            },
        },
    })

    def complete() -> dict[str, Any] | None:
        job = get(cluster, namespace, "job", "indexed")
        conditions = {c["type"]: c["status"] for c in job["status"].get("conditions", [])}
        return job if conditions.get("Complete") == "True" else None

    job = wait_until("the Job to complete", complete)
    assert job["status"]["succeeded"] == 3
    assert job["status"]["completedIndexes"] == "0-2"


def test_labelled_pod_fails_with_the_chosen_exit_code_and_message(cluster: LocalCluster, namespace: str) -> None:
    prefix = "pod-container-running-failed.stage.kwok.x-k8s.io"
    pod = gpu_pod("doomed", 1, {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-40GB"})
    pod["metadata"]["labels"] = {prefix: "true"}
    pod["metadata"]["annotations"] = {
        f"{prefix}/exit-code": "137",
        f"{prefix}/reason": "OOMKilled",
        f"{prefix}/message": "CUDA out of memory",
    }
    apply(cluster, namespace, pod)
    failed = wait_until(
        "the pod to fail",
        lambda: (p := get(cluster, namespace, "pod", "doomed"))["status"].get("phase") == "Failed" and p,
    )
    terminated = failed["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 137
    assert terminated["reason"] == "OOMKilled"
    assert terminated["message"] == "CUDA out of memory"


def test_service_account_without_rbac_is_refused(cluster: LocalCluster, namespace: str, tmp_path: Path) -> None:
    cluster.kubectl_ok("create", "serviceaccount", "nobody", "-n", namespace)
    kubeconfig = service_account_kubeconfig(cluster, "nobody", namespace, tmp_path / "nobody.kubeconfig")
    as_nobody = [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), "get", "pods"]
    result = subprocess.run(
        as_nobody, capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode != 0
    assert f'User "system:serviceaccount:{namespace}:nobody" cannot list resource "pods"' in result.stderr

    # The same account may list pods once a Role grants it.
    cluster.kubectl_ok("create", "role", "pod-reader", "--verb=list", "--resource=pods", "-n", namespace)
    cluster.kubectl_ok("create", "rolebinding", "nobody-reads", "--role=pod-reader",
                       f"--serviceaccount={namespace}:nobody", "-n", namespace)
    wait_until("the RoleBinding to take effect", lambda: subprocess.run(
        as_nobody, capture_output=True, timeout=30, check=False,
    ).returncode == 0)


def test_helm_is_a_real_binary_that_installs_into_the_cluster(cluster: LocalCluster, namespace: str,
                                                              tmp_path: Path) -> None:
    helm = [str(binaries.built("helm")), "--kubeconfig", str(cluster.kubeconfig)]
    version = subprocess.run([*helm, "version", "--short"], capture_output=True, text=True, check=True).stdout
    assert re.match(r"v3\.\d+\.\d+", version), version
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\nkubeVersion: '>=1.30.0-0'\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\ndata: {server: '{{ .Capabilities.KubeVersion.Version }}'}\n"
    )
    subprocess.run([*helm, "install", "probe", str(chart), "-n", namespace, "--wait"], capture_output=True, text=True,
                   check=True, timeout=120)
    config_map = get(cluster, namespace, "configmap", "probe")
    # The chart's kubeVersion check and the rendered value both see the stamped server version.
    assert re.fullmatch(r"v1\.\d+\.\d+", config_map["data"]["server"])
