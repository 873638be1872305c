"""The GPU inventory on the cluster, as GPU Feature Discovery labels it: the gpu-inventory profile's time-sliced,
MIG and off-catalog nodes added to the running cluster (kwok plays them), and a node added while a job waits
for capacity. Each node added here is removed afterwards."""

import json

from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.conftest import Nodes
from tests.integration.ftj import Operator, apply, condition, example, get, in_phase, trainer_pods
from tests.integration.test_waiting import hold_every
from tests.integration.waiting import wait_until

SPECIAL_POOLS = ("a100-shared", "a100-mig", "h100-nvl")


def job(name: str, gpu_type: str) -> dict:
    manifest = example("minimal")
    manifest["metadata"]["name"] = name
    manifest["spec"]["resources"] = {"gpuTypes": [gpu_type]}
    return manifest


def test_shared_sliced_and_off_catalog_gpus_are_read_as_gfd_labels_them(cluster: LocalCluster, operator: Operator,
                                                                        namespace: str, nodes: Nodes) -> None:
    nodes.add([n for n in profile.load("gpu-inventory").node_manifests()
               if n["metadata"]["name"].rsplit("-", 1)[0] in SPECIAL_POOLS])
    for name, product, why in [("shared", "NVIDIA-A100-SXM4-80GB-SHARED", "time-sliced"),
                               ("sliced", "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "MIG slices")]:
        assert apply(cluster, namespace, job(name, product)).returncode == 0
        ftj = wait_until(f"the {name} job to be refused", in_phase(cluster, namespace, name, "Unschedulable"))
        message = condition(ftj, "Failed")["message"]
        assert f"{product} (not for training: {why}" in message, message
        assert get(cluster, namespace, "job", f"{name}-train") is None

    assert apply(cluster, namespace, job("nvl", "NVIDIA-H100-NVL")).returncode == 0
    ftj = wait_until("the off-catalog job to succeed", in_phase(cluster, namespace, "nvl", "Succeeded", "Failed"))
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    plan = ftj["status"]["plan"]
    assert (plan["gpuType"], plan["gpuMemoryBytes"]) == ("NVIDIA-H100-NVL", 95830 * 1024**2)
    assert "not in kubetune's GPU catalog" in plan["explanation"][0]
    assert {p["spec"]["nodeName"].rsplit("-", 1)[0] for p in trainer_pods(cluster, namespace, "nvl")} == {"h100-nvl"}


def test_a_waiting_job_starts_on_a_node_added_later(cluster: LocalCluster, operator: Operator, namespace: str,
                                                    nodes: Nodes) -> None:
    hold_every(cluster, namespace, "NVIDIA-L4")
    assert apply(cluster, namespace, job("later", "L4-24GB")).returncode == 0
    wait_until("the job to wait for its GPUs", in_phase(cluster, namespace, "later", "Waiting"))

    # A node pool scaled up (the cluster autoscaler, a pool added): one more L4 node.
    [added] = [n for n in profile.load("default").node_manifests() if n["metadata"]["name"] == "l4-0"]
    added = json.loads(json.dumps(added).replace('"l4-0"', '"l4-added"'))
    nodes.add([added])
    ftj = wait_until("the job to start on the new node and succeed", in_phase(cluster, namespace, "later",
                                                                               "Succeeded", "Failed"))
    assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
    assert {p["spec"]["nodeName"] for p in trainer_pods(cluster, namespace, "later")} == {"l4-added"}
