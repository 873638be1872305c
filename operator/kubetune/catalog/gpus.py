"""The GPU catalog (gpus.yaml), looked up by kubetune id or by GFD's `nvidia.com/gpu.product` label."""

from functools import cache
from importlib import resources

import yaml
from pydantic import BaseModel, ConfigDict, Field

# GFD's mapping from compute capability major (and, for major 7 and 8, minor) to `nvidia.com/gpu.family`.
_FAMILY_BY_MAJOR = {7: "volta", 8: "ampere", 9: "hopper", 10: "blackwell", 12: "blackwell", 13: "rubin"}

# The extended resource the NVIDIA device plugin advertises.
GPU_RESOURCE = "nvidia.com/gpu"
# On a node whose GPUs are simulated (the local cluster's real node: its pods run on the CPU). Only jobs that
# name the node's GPU type in resources.gpuTypes are planned there.
SIMULATED_GPUS_LABEL = "kubetune.io/simulated-gpus"

# GFD appends this to the product when a GPU is shared (time-slicing or MPS); the hardware is the same.
SHARED_SUFFIX = "-SHARED"


class GpuType(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    gfd_products: tuple[str, ...] = Field(min_length=1)
    memory_mib: int = Field(gt=0)
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    bf16_tflops: float | None = Field(gt=0)
    fp16_tflops: float = Field(gt=0)
    fp32_tflops: float = Field(gt=0)
    memory_bandwidth_gb_per_second: float = Field(gt=0)
    intra_node_gb_per_second: float = Field(gt=0)
    inter_node_gb_per_second: float = Field(gt=0)
    host_link_gb_per_second: float = Field(gt=0)
    usd_per_hour: float = Field(gt=0)

    @property
    def compute_major(self) -> int:
        return int(self.compute_capability.split(".")[0])

    @property
    def compute_minor(self) -> int:
        return int(self.compute_capability.split(".")[1])

    @property
    def gfd_family(self) -> str:
        if (self.compute_major, self.compute_minor) == (7, 5):
            return "turing"
        if (self.compute_major, self.compute_minor) == (8, 9):
            return "ada-lovelace"
        return _FAMILY_BY_MAJOR.get(self.compute_major, "undefined")

    @property
    def mig_capable(self) -> bool:
        # MIG exists on the data-centre parts of Ampere (A100/A30) and on Hopper and Blackwell.
        return self.id.startswith(("A100", "H100", "H200", "B200"))

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024**2


class UnknownGpuError(LookupError):
    """Raised for a GPU id or product label that is not in the catalog; the message lists the known ones."""


@cache
def catalog() -> tuple[GpuType, ...]:
    raw = yaml.safe_load(resources.files("kubetune.catalog").joinpath("gpus.yaml").read_text())
    return tuple(GpuType.model_validate(entry) for entry in raw)


def by_id(gpu_id: str) -> GpuType:
    for gpu in catalog():
        if gpu.id.lower() == gpu_id.lower():
            return gpu
    known = ", ".join(gpu.id for gpu in catalog())
    raise UnknownGpuError(f"unknown GPU type '{gpu_id}'; known types: {known}")


def by_gfd_product(product: str) -> GpuType:
    name = product.removesuffix(SHARED_SUFFIX)
    for gpu in catalog():
        if name in gpu.gfd_products:
            return gpu
    known = ", ".join(p for gpu in catalog() for p in gpu.gfd_products)
    raise UnknownGpuError(f"unknown nvidia.com/gpu.product '{product}'; known products: {known}")


def from_labels(product: str, labels: dict[str, str]) -> tuple[GpuType, str] | None:
    """A GPU outside the catalog, from what GFD says of it (`nvidia.com/gpu.memory`, `gpu.compute.major` and
    `.minor`), with the speed, links and price of the slowest catalog GPU of its generation (or of the newest
    generation below it): a conservative guess, and why, for the plan's explanation. None when the labels do
    not say its memory and compute capability."""
    try:
        memory_mib = int(labels["nvidia.com/gpu.memory"])
        major, minor = int(labels["nvidia.com/gpu.compute.major"]), int(labels["nvidia.com/gpu.compute.minor"])
    except (KeyError, ValueError):
        return None
    older = [gpu for gpu in catalog() if (gpu.compute_major, gpu.compute_minor) <= (major, minor)]
    if memory_mib <= 0 or not older:
        return None
    generation = max(gpu.compute_major for gpu in older)
    base = min((gpu for gpu in older if gpu.compute_major == generation), key=lambda gpu: gpu.fp16_tflops)
    gpu = base.model_copy(update={"id": product, "gfd_products": (product,), "memory_mib": memory_mib,
                                  "compute_capability": f"{major}.{minor}"})
    return gpu, (f"{product} is not in kubetune's GPU catalog: planned from its GFD labels ({memory_mib} MiB, "
                 f"compute capability {major}.{minor}) with the speed and price of {base.id}, the slowest catalog GPU "
                 "of its generation, so its time and cost are rough")
