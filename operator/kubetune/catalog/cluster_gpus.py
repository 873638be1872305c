"""What GPUs the cluster has, from Node objects labelled by GPU Feature Discovery, less what pods hold."""

import dataclasses
import re
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any

from kubetune.catalog import gpus
from kubetune.config import AutoscaledPool

PRODUCT_LABEL = "nvidia.com/gpu.product"
# The device plugin's time-slicing: each GPU is advertised this many times.
REPLICAS_LABEL = "nvidia.com/gpu.replicas"
# Under MIG's single strategy GFD names the product's slices, e.g. NVIDIA-A100-SXM4-80GB-MIG-1g.10gb, and the
# device plugin advertises each slice as a GPU. (Under the mixed strategy slices are resources of their own and
# nvidia.com/gpu counts the whole GPUs left.)
MIG_PRODUCT = re.compile(r"-MIG-(\d+g\.\d+gb)$")
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
    # Why training cannot use these nodes (their GPUs are shared or sliced); such groups are never planned on.
    unusable: str | None = None
    # Set for a product outside the catalog, planned from its labels: how its speed was assumed.
    estimated: str | None = None
    # Nodes a cluster autoscaler may still add to the group (the operator's autoscaled pools).
    autoscaled_nodes: int = 0

    def pod_slots(self, gpus_per_pod: int, whole: bool = False) -> int:
        """How many pods of `gpus_per_pod` GPUs the group's free GPUs hold (pods may share a node), or
        (`whole`) all of its GPUs, busy or not, with the nodes the autoscaler may add."""
        if whole:
            return (self.nodes + self.autoscaled_nodes) * (self.gpus_per_node // gpus_per_pod)
        return sum(free // gpus_per_pod for free in self.free_gpus)

    def autoscaled_slots(self, gpus_per_pod: int) -> int:
        """Pods the nodes the autoscaler may add would hold: their pods wait pending, not in kubetune."""
        return self.autoscaled_nodes * (self.gpus_per_node // gpus_per_pod)


# A Quantity as the API server accepts it (k8s.io/apimachinery resource.ParseQuantity): a signed decimal number
# and one suffix, binary (Ki..Ei), decimal SI (n, u, m, k..E) or a decimal exponent (e3, E-2). kubernetes_asyncio
# has no Quantity parser (its 36.x releases ship none) and the official `kubernetes` client, which has one, is a
# second client with its own transport stack; the grammar is this one expression.
_QUANTITY = re.compile(r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([KMGTPE]i)|([numkMGTPE])|[eE]([+-]?[0-9]+))?")
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# Node allocatable never comes near this; an exponent past it is a typo, not a size worth building an int for.
_MAX_EXPONENT = 30


def parse_quantity(value: str) -> Decimal | None:
    """A Quantity's exact value; None for a string the API server would not accept."""
    match = _QUANTITY.fullmatch(value)
    if match is None:
        return None
    number, binary, decimal, exponent = match.groups()
    if binary:
        return Decimal(number) * Decimal(2) ** _BINARY[binary]
    power = _DECIMAL[decimal] if decimal else int(exponent or 0)
    return Decimal(number).scaleb(power) if abs(power) <= _MAX_EXPONENT else None


def _rounded_up(value: str, scale: int = 0) -> int | None:
    """A Quantity times 10**scale as an int, rounded up as Kubernetes' Value() and MilliValue() round."""
    quantity = parse_quantity(value)
    return None if quantity is None else int(quantity.scaleb(scale).to_integral_value(rounding=ROUND_CEILING))


def _cpu_millis(value: str) -> int | None:
    """A CPU Quantity in millicores; None for a value that is not a Quantity."""
    return _rounded_up(value, 3)


def _quantity_bytes(value: str) -> int | None:
    """A memory Quantity in bytes; None for a value that is not a Quantity."""
    return _rounded_up(value)


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
        unusable, estimated = _unusable(product, labels, count), None
        try:
            gpu = gpus.by_gfd_product(MIG_PRODUCT.sub("", product))
        except gpus.UnknownGpuError:
            found = gpus.from_labels(product, labels)
            if found is None:  # GFD always writes the memory and compute capability; without them, nothing to plan
                continue
            gpu, estimated = found
        simulated = labels.get(gpus.SIMULATED_GPUS_LABEL) == "true"
        group = groups.setdefault((product, count, simulated), GpuNodeGroup(
            gpu=gpu, product=product, gpus_per_node=count, simulated=simulated, unusable=unusable,
            estimated=estimated))
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


def _unusable(product: str, labels: dict[str, str], advertised: int) -> str | None:
    """Why a node's advertised GPUs are not whole GPUs of its own: training needs those (a time-sliced replica
    shares its GPU's memory with other pods, a MIG slice is a fraction of one)."""
    raw = labels.get(REPLICAS_LABEL) or "1"
    replicas = int(raw) if raw.isdigit() else 1
    if replicas > 1:
        return (f"time-sliced: {advertised // replicas} GPUs per node advertised {replicas} times each, and training "
                "needs whole GPUs of its own")
    if product.endswith(gpus.SHARED_SUFFIX):
        return "shared (time-slicing or MPS), and training needs whole GPUs of its own"
    if (mig := MIG_PRODUCT.search(product)) is not None:
        return f"MIG slices ({mig.group(1)}), and training needs whole GPUs"
    return None


def allowed(group: GpuNodeGroup, gpu_types: list[str] | None) -> bool:
    """Whether a job limited to `gpu_types` (None: any) may use the group. Simulated GPUs only when named: a job
    must never land on CPU-backed GPUs by chance. Shared or sliced GPUs never."""
    if group.unusable is not None:
        return False
    if not gpu_types:
        return not group.simulated
    wanted = {t.lower() for t in gpu_types}
    return group.gpu.id.lower() in wanted or group.product.lower() in wanted


def check_pools(pools: tuple[AutoscaledPool, ...]) -> None:
    """Refuse, at start, a pool the planner could not plan on: an unknown GPU id, a Quantity that is none."""
    for pool in pools:
        gpus.by_id(pool.gpu_type)  # LookupError names the id
        if _cpu_millis(pool.cpu) is None or _rounded_up(pool.memory) is None:
            raise ValueError(f"autoscaled pool {pool.gpu_type}: cpu {pool.cpu!r} or memory {pool.memory!r} is "
                             "not a Quantity")


def with_autoscaled(groups: list[GpuNodeGroup], pools: tuple[AutoscaledPool, ...]) -> list[GpuNodeGroup]:
    """The groups with the nodes autoscaled pools may still add: to the pool's group when it has nodes now,
    as a group of no nodes yet when it is scaled to zero."""
    grown = list(groups)
    for pool in pools:
        gpu = gpus.by_id(pool.gpu_type)
        same = [i for i, g in enumerate(grown) if g.gpu.id == gpu.id and g.gpus_per_node == pool.gpus_per_node
                and g.unusable is None and not g.simulated]
        extra = max(0, pool.max_nodes - sum(grown[i].nodes for i in same))
        if same:
            largest = max(same, key=lambda i: grown[i].nodes)
            grown[largest] = dataclasses.replace(grown[largest],
                                                 autoscaled_nodes=grown[largest].autoscaled_nodes + extra)
        elif extra:
            grown.append(GpuNodeGroup(gpu=gpu, product=gpu.gfd_products[0], gpus_per_node=pool.gpus_per_node,
                                      host_memory_bytes=_rounded_up(pool.memory), cpu_millis=_cpu_millis(pool.cpu),
                                      autoscaled_nodes=extra))
    return grown
