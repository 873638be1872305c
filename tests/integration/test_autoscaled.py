"""An autoscaled GPU pool (the operator's autoscaledGpuPools), against the real control plane: a job on a pool
scaled to zero is planned on it and its Job created at once, its pods pending, which is what a cluster
autoscaler scales up for; when the node appears (the test plays the autoscaler), the pods run on it."""

import json

from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.conftest import Nodes
from tests.integration.ftj import apply, example, get, in_phase, operator_running, trainer_pods
from tests.integration.waiting import wait_until

POOL = {"gpuType": "H100-PCIe-80GB", "gpusPerNode": 8, "maxNodes": 2, "cpu": "127", "memory": "1000Gi"}


def test_a_job_on_a_pool_scaled_to_zero_creates_pending_pods_and_runs_when_the_autoscaler_adds_a_node(
        cluster: LocalCluster, namespace: str, nodes: Nodes, tmp_path) -> None:
    env = {"KUBETUNE_AUTOSCALED_GPU_POOLS": json.dumps([POOL])}
    with operator_running(cluster, tmp_path, env=env):
        manifest = example("minimal")
        manifest["spec"]["resources"] = {"gpuTypes": ["H100-PCIe-80GB"]}
        assert apply(cluster, namespace, manifest).returncode == 0
        wait_until("the job's pods to wait for the autoscaler", lambda: (pods := trainer_pods(
            cluster, namespace, "minimal")) and all(p["status"].get("phase") == "Pending" for p in pods))
        ftj = wait_until("the plan in status", lambda: (f := get(cluster, namespace, "ftj", "minimal")) and
                         f.get("status", {}).get("plan") and f)
        assert ftj["status"]["plan"]["gpuType"] == "H100-PCIe-80GB", ftj["status"]
        assert any("autoscaled pool (0 node(s) now, up to 2)" in line for line in ftj["status"]["plan"]["explanation"])

        pool = profile.ClusterProfile.model_validate({
            "name": "autoscaled", "driver_version": "550.127.05", "cuda_version": "12.4", "pools": [{
                "name": "h100-pcie", "count": 1, "instance_type": "a3-pcie", "gpu": {"type": "H100-PCIe-80GB", "count": 8},
                "capacity": {"cpu": "128", "memory": "1048576Mi"}, "allocatable": {"cpu": "127", "memory": "1024000Mi"}}]})
        nodes.add(pool.node_manifests())
        ftj = wait_until("the job to run on the new node and succeed", in_phase(cluster, namespace, "minimal",
                                                                                 "Succeeded", "Failed"))
        assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
        assert {p["spec"]["nodeName"] for p in trainer_pods(cluster, namespace, "minimal")} == {"h100-pcie-0"}
