"""What GPUs the cluster has, from Node objects labelled by GPU Feature Discovery, less what pods hold."""

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kubetune.catalog import gpus

PRODUCT_LABEL = "nvidia.com/gpu.product"
# Pods in these phases no longer hold their GPUs.
DONE_PHASES = ("Succeeded", "Failed")


@dataclass
class GpuNodeGroup:
    """Nodes with the same GPU product and GPU count."""

    gpu: gpus.GpuType
    product: str
    gpus_per_node: int
    free_nodes: int = 0  # nodes whose GPUs are all free
    nodes: int = 0
    simulated: bool = False  # gpus.SIMULATED_GPUS_LABEL: pods run on the CPU
    free_gpus: list[int] = field(default_factory=list)  # per node
    host_memory_bytes: int | None = None
    cpu_millis: int | None = None  # allocatable CPU per node (the smallest of the group)
    taints: list[dict[str, Any]] = field(default_factory=list)

    def pod_slots(self, gpus_per_pod: int) -> int:
        """How many pods of `gpus_per_pod` GPUs the group's free GPUs hold (pods may share a node)."""
        return sum(free // gpus_per_pod for free in self.free_gpus)


def _cpu_millis(value: str) -> int | None:
    try:
        return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)
    except ValueError:
        return None


def _quantity_bytes(value: str) -> int | None:
    """A memory Quantity in bytes; None for forms a node's allocatable memory does not use."""
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4, "k": 1000, "M": 1000**2, "G": 1000**3,
             "T": 1000**4}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            try:
                return int(float(value[: -len(suffix)]) * factor)
            except ValueError:
                return None
    return int(value) if value.isdigit() else None


def requested_gpus(pods: list[dict[str, Any]]) -> dict[str, int]:
    """GPUs requested per node by pods that still hold them."""
    held: dict[str, int] = defaultdict(int)
    for pod in pods:
        node = pod.get("spec", {}).get("nodeName")
        if not node or pod.get("status", {}).get("phase") in DONE_PHASES:
            continue
        for container in pod["spec"].get("containers", []):
            limits = container.get("resources", {}).get("limits", {})
            held[node] += int(limits.get(gpus.GPU_RESOURCE, 0))
    return held


def node_groups(nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> list[GpuNodeGroup]:
    """Schedulable GPU nodes grouped by product and GPU count, with how many are wholly free."""
    held = requested_gpus(pods)
    groups: dict[tuple[str, int, bool], GpuNodeGroup] = {}
    for node in nodes:
        labels = node["metadata"].get("labels", {})
        product = labels.get(PRODUCT_LABEL)
        allocatable = node.get("status", {}).get("allocatable", {})
        count = int(allocatable.get(gpus.GPU_RESOURCE, 0))
        if not product or count == 0 or node.get("spec", {}).get("unschedulable"):
            continue
        try:
            gpu = gpus.by_gfd_product(product)
        except gpus.UnknownGpuError:
            continue
        simulated = labels.get(gpus.SIMULATED_GPUS_LABEL) == "true"
        group = groups.setdefault((product, count, simulated), GpuNodeGroup(gpu=gpu, product=product,
                                                                             gpus_per_node=count, simulated=simulated))
        group.nodes += 1
        taken = held.get(node["metadata"]["name"], 0)
        if taken == 0:
            group.free_nodes += 1
        group.free_gpus.append(max(0, count - taken))
        cpu = _cpu_millis(allocatable.get("cpu", ""))
        if cpu is not None:
            group.cpu_millis = min(group.cpu_millis or cpu, cpu)
        host = _quantity_bytes(allocatable.get("memory", ""))
        if host is not None:
            group.host_memory_bytes = min(group.host_memory_bytes or host, host)
        for taint in node.get("spec", {}).get("taints", []) or []:
            if taint not in group.taints:
                group.taints.append(taint)
    return sorted(groups.values(), key=lambda g: (g.gpu.id, g.gpus_per_node))


def allowed(group: GpuNodeGroup, gpu_types: list[str] | None) -> bool:
    """Whether a job limited to `gpu_types` (None: any) may use the group. Simulated GPUs only when named: a job
    must never land on CPU-backed GPUs by chance."""
    if not gpu_types:
        return not group.simulated
    wanted = {t.lower() for t in gpu_types}
    return group.gpu.id.lower() in wanted or group.product.lower() in wanted
