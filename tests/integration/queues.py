"""A queue admin's Kueue objects for the tests against a real Kueue: one ResourceFlavor per GPU type, selected
by GPU Feature Discovery's product label, and a ClusterQueue with an `nvidia.com/gpu` quota for each."""

import json
import uuid
from typing import Any

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import get
from tests.integration.waiting import wait_until

API = "kueue.x-k8s.io/v1beta2"


def flavor(name: str, product: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": name},
            "spec": {"nodeLabels": {"nvidia.com/gpu.product": product}}}


def cluster_queue(name: str, gpus: dict[str, int], preemption: dict[str, str] | None = None) -> dict[str, Any]:
    """`gpus`: the GPU quota of each flavor; CPU and memory are plentiful, so GPUs alone decide."""
    spec: dict[str, Any] = {"namespaceSelector": {}, "resourceGroups": [{
        "coveredResources": ["cpu", "memory", "nvidia.com/gpu"],
        "flavors": [{"name": flavor_name, "resources": [
            {"name": "cpu", "nominalQuota": "10k"}, {"name": "memory", "nominalQuota": "100Ti"},
            {"name": "nvidia.com/gpu", "nominalQuota": count}]} for flavor_name, count in gpus.items()]}]}
    if preemption:
        spec["preemption"] = preemption
    return {"apiVersion": API, "kind": "ClusterQueue", "metadata": {"name": name}, "spec": spec}


def local_queue(name: str, namespace: str, cluster_queue_name: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "LocalQueue", "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterQueue": cluster_queue_name}}


def priority_class(name: str, value: int) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "WorkloadPriorityClass", "metadata": {"name": name}, "value": value}


class Queue:
    """A queue admin's setup for one test: flavors, a ClusterQueue and LocalQueues, removed afterwards."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.suffix = uuid.uuid4().hex[:6]
        self.created: list[dict[str, Any]] = []
        self.name = f"gpus-{self.suffix}"

    def create(self, *objects: dict[str, Any]) -> None:
        self.cluster.kubectl_ok("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                      "items": list(objects)}))
        self.created.extend(objects)

    def setup(self, gpus: dict[str, tuple[str, int]], namespaces: list[str],
              preemption: dict[str, str] | None = None) -> None:
        """`gpus`: flavor name -> (GPU product, quota)."""
        self.create(*(flavor(f"{name}-{self.suffix}", product) for name, (product, _) in gpus.items()))
        self.create(cluster_queue(self.name, {f"{name}-{self.suffix}": quota
                                                     for name, (_, quota) in gpus.items()}, preemption))
        self.create(*(local_queue("team-a", namespace, self.name) for namespace in namespaces))
        wait_until("the ClusterQueue to be active", lambda: any(
            c["type"] == "Active" and c["status"] == "True"
            for c in (get(self.cluster, "", "clusterqueue", self.name) or {}).get("status", {}).get("conditions", [])))

    def remove(self) -> None:
        for item in reversed(self.created):
            namespace = ["-n", item["metadata"]["namespace"]] if "namespace" in item["metadata"] else []
            self.cluster.kubectl("delete", item["kind"].lower(), item["metadata"]["name"], *namespace,
                                 "--ignore-not-found", "--wait=false")
