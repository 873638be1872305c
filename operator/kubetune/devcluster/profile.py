"""Cluster profiles (data files in profiles/) and the Node objects they describe."""

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from kubetune.catalog import gpus

GPU_RESOURCE = gpus.GPU_RESOURCE
# kwok manages the nodes annotated so (its --manage-nodes-with-annotation-selector); a real node is not.
FAKE_NODE_ANNOTATION = "kwok.x-k8s.io/node"
PODS_PER_NODE = "110"


class Resources(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cpu: str
    memory: str


class PoolGpus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    count: int = Field(gt=0)
    # How else GPU Feature Discovery may show a node's GPUs, so the tests meet what real clusters have.
    replicas: int = Field(default=1, ge=1, description="time-slicing: the device plugin advertises each GPU this "
                          "many times, and GFD appends -SHARED to the product")
    mig_profile: str | None = Field(default=None, pattern=r"^[1-7]g\.[0-9]+gb$", description="MIG, single "
                                    "strategy: every GPU cut into slices of this profile, each advertised as a GPU")
    product: str | None = Field(default=None, description="a product outside the catalog, which otherwise "
                                "has `type`'s properties (e.g. NVIDIA-H100-NVL on an H100-PCIe-80GB pool)")
    memory_mib: int | None = Field(default=None, gt=0, description="that product's memory")

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        gpus.by_id(value)
        return value

    @property
    def gpu_type(self) -> gpus.GpuType:
        return gpus.by_id(self.type)

    @property
    def advertised(self) -> int:
        """What the device plugin advertises as nvidia.com/gpu: A100 and H100 have 7 compute slices."""
        slices = 7 // int(self.mig_profile[0]) if self.mig_profile else 1
        return self.count * self.replicas * slices


class Pool(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    count: int = Field(gt=0)
    instance_type: str
    gpu: PoolGpus | None = None
    capacity: Resources
    allocatable: Resources


class RealNodeSpec(BaseModel):
    """A real kubelet node (devcluster/node.py) whose GPUs are simulated: its pods run on the CPU."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    instance_type: str
    gpu: PoolGpus
    volumes: int = Field(default=16, ge=0, le=64, description="static local PersistentVolumes on the node")
    volume_size: str = "20Gi"


class ClusterProfile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    driver_version: str = Field(pattern=r"^\d+\.\d+(\.\d+)?$")
    cuda_version: str = Field(pattern=r"^\d+\.\d+$")
    pools: tuple[Pool, ...] = Field(min_length=1)
    real_node: RealNodeSpec | None = None

    def node_manifests(self) -> list[dict[str, Any]]:
        return [self._node(pool, index) for pool in self.pools for index in range(pool.count)]

    def _node(self, pool: Pool, index: int) -> dict[str, Any]:
        name = f"{pool.name}-{index}"
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": pool.instance_type,
            "type": "kwok",
        }
        capacity: dict[str, str] = {**pool.capacity.model_dump(), "pods": PODS_PER_NODE}
        allocatable: dict[str, str] = {**pool.allocatable.model_dump(), "pods": PODS_PER_NODE}
        if pool.gpu is not None:
            labels |= gfd_labels(pool.instance_type, pool.gpu, self.driver_version, self.cuda_version)
            capacity[GPU_RESOURCE] = allocatable[GPU_RESOURCE] = str(pool.gpu.advertised)
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {FAKE_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            },
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": allocatable,
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "fake",
                    "kubeProxyVersion": "fake",
                },
            },
        }


def gfd_labels(instance_type: str, pool_gpus: PoolGpus, driver_version: str, cuda_version: str) -> dict[str, str]:
    """The labels GPU Feature Discovery and the GPU Operator put on a node with these GPUs."""
    gpu = pool_gpus.gpu_type
    driver = driver_version.split(".")
    cuda_major, cuda_minor = cuda_version.split(".")
    product, memory_mib = pool_gpus.product or gpu.gfd_products[0], pool_gpus.memory_mib or gpu.memory_mib
    if pool_gpus.replicas > 1:
        product += gpus.SHARED_SUFFIX
    if pool_gpus.mig_profile:
        product += f"-MIG-{pool_gpus.mig_profile}"
        memory_mib = int(pool_gpus.mig_profile.split(".")[1].removesuffix("gb")) * 1024
    return {
        # Set by the GPU Operator from NFD's PCI vendor label, not by GFD.
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": product,
        "nvidia.com/gpu.memory": str(memory_mib),
        "nvidia.com/gpu.count": str(pool_gpus.advertised if pool_gpus.mig_profile else pool_gpus.count),
        "nvidia.com/gpu.family": gpu.gfd_family,
        "nvidia.com/gpu.compute.major": str(gpu.compute_major),
        "nvidia.com/gpu.compute.minor": str(gpu.compute_minor),
        "nvidia.com/gpu.machine": instance_type,
        "nvidia.com/gpu.mode": "compute",
        "nvidia.com/gpu.replicas": str(pool_gpus.replicas),
        "nvidia.com/gpu.sharing-strategy": "time-slicing" if pool_gpus.replicas > 1 else "none",
        "nvidia.com/mig.capable": str(gpu.mig_capable).lower(),
        # The GPU Operator's default, so it appears even on GPUs without MIG.
        "nvidia.com/mig.strategy": "single",
        "nvidia.com/mps.capable": "false",
        "nvidia.com/vgpu.present": "false",
        "nvidia.com/cuda.driver-version.major": driver[0],
        "nvidia.com/cuda.driver-version.minor": driver[1],
        "nvidia.com/cuda.driver-version.revision": driver[2] if len(driver) > 2 else "",
        "nvidia.com/cuda.driver-version.full": driver_version,
        "nvidia.com/cuda.runtime-version.major": cuda_major,
        "nvidia.com/cuda.runtime-version.minor": cuda_minor,
        "nvidia.com/cuda.runtime-version.full": cuda_version,
    }


def builtin_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("kubetune.devcluster.profiles").iterdir()
                  if p.name.endswith(".yaml"))


def load(name_or_path: str) -> ClusterProfile:
    """A built-in profile by name, or a profile file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        text = path.read_text()
    elif name_or_path in builtin_names():
        text = resources.files("kubetune.devcluster.profiles").joinpath(f"{name_or_path}.yaml").read_text()
    else:
        raise FileNotFoundError(
            f"no cluster profile '{name_or_path}': give a .yaml path or one of {', '.join(builtin_names())}"
        )
    return ClusterProfile.model_validate(yaml.safe_load(text))
