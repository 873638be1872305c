"""The operator's copy of the cluster's GPU capacity follows the cluster through its watches: a node added, a pod
that takes a node's GPUs and the pod's deletion are each seen without a new list, as a reconcile placing a job's
pods reads them."""

import asyncio
import json
from collections.abc import Callable

import pytest
import yaml

from kubetune.catalog.cluster_gpus import GpuNodeGroup
from kubetune.controller.kube import Kube
from kubetune.controller.snapshot import CapacitySnapshot
from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.conftest import Nodes

pytestmark = pytest.mark.cluster

PRODUCT = "NVIDIA-L4"
SECONDS = 20.0


def l4_groups(groups: list[GpuNodeGroup]) -> tuple[int, int]:
    """The L4 nodes, and how many of them have all their GPUs free."""
    found = [g for g in groups if g.product == PRODUCT]
    return sum(g.nodes for g in found), sum(g.free_nodes for g in found)


async def until(snapshot: CapacitySnapshot, what: str, seen: Callable[[tuple[int, int]], bool]) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SECONDS
    while True:
        counts = l4_groups(await snapshot.groups(fresh=True))
        if seen(counts):
            return counts
        assert loop.time() < deadline, f"{what}: still {counts} after {SECONDS} s"
        await asyncio.sleep(0.1)


def test_capacity_follows_nodes_and_pods_through_its_watches(cluster: LocalCluster, namespace: str,
                                                            nodes: Nodes) -> None:
    [node] = [n for n in profile.load("default").node_manifests() if n["metadata"]["name"] == "l4-0"]
    node = json.loads(json.dumps(node).replace('"l4-0"', '"l4-watched"'))
    gpus = node["status"]["allocatable"]["nvidia.com/gpu"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holds-gpus", "namespace": namespace},
           "spec": {"nodeName": "l4-watched", "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "main", "image": "kubetune.test/holds-gpus:1",
                                    "resources": {"limits": {"nvidia.com/gpu": gpus}}}]}}
    context = yaml.safe_load(cluster.kubeconfig.read_text())["current-context"]

    async def follow() -> None:
        kube = await Kube.from_kubeconfig(str(cluster.kubeconfig), context)
        snapshot = CapacitySnapshot(kube)
        try:
            nodes_before, free_before = l4_groups(await snapshot.groups(fresh=True))
            await asyncio.to_thread(nodes.add, [node])
            await until(snapshot, "the added node", lambda c: c == (nodes_before + 1, free_before + 1))
            await asyncio.to_thread(cluster.kubectl_ok, "apply", "-f", "-", stdin=json.dumps(pod))
            await until(snapshot, "the pod's GPUs taken", lambda c: c == (nodes_before + 1, free_before))
            await asyncio.to_thread(cluster.kubectl_ok, "delete", "pod", "holds-gpus", "-n", namespace,
                                    "--grace-period=0", "--force")
            await until(snapshot, "the pod's GPUs given back", lambda c: c == (nodes_before + 1, free_before + 1))
        finally:
            await snapshot.close()
            await kube.close()

    asyncio.run(follow())
