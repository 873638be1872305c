"""The GPU inventory read as GPU Feature Discovery shows it (catalog/cluster_gpus.py), on the gpu-inventory
profile's nodes (what kwok would be given): time-sliced replicas and MIG slices are not whole GPUs and are
never planned on, and a product outside the catalog is planned from its labels, conservatively, saying so."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.catalog import gpus
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.devcluster import profile
from kubetune.planner.decision import decide

NODES = profile.load("gpu-inventory").node_manifests()


def spec(**resources: object) -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen2.5-7B"}, "dataset": {"source": "a/b"},
                                               "training": {"seqLen": 2048}, "resources": resources})


def by_product() -> dict[str, object]:
    return {group.product: group for group in node_groups(NODES, [])}


def test_the_profile_shows_what_gfd_writes_for_each_kind() -> None:
    labels = {n["metadata"]["name"]: (n["metadata"]["labels"], n["status"]["allocatable"]["nvidia.com/gpu"])
              for n in NODES}
    shared, advertised = labels["a100-shared-0"]
    assert (shared["nvidia.com/gpu.product"], shared["nvidia.com/gpu.replicas"], advertised) == \
        ("NVIDIA-A100-SXM4-80GB-SHARED", "4", "32")
    mig, advertised = labels["a100-mig-0"]
    assert (mig["nvidia.com/gpu.product"], advertised) == ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "56")
    nvl, advertised = labels["h100-nvl-0"]
    assert (nvl["nvidia.com/gpu.product"], nvl["nvidia.com/gpu.memory"], advertised) == ("NVIDIA-H100-NVL", "95830", "2")


@pytest.mark.parametrize(("product", "why"), [
    ("NVIDIA-A100-SXM4-80GB-SHARED", "time-sliced: 8 GPUs per node advertised 4 times each"),
    ("NVIDIA-A100-SXM4-80GB-MIG-1g.10gb", "MIG slices (1g.10gb)"),
])
def test_replicas_and_slices_are_not_counted_as_gpus(product: str, why: str) -> None:
    group = by_product()[product]
    assert group.unusable is not None and why in group.unusable
    only_there = decide(spec(gpuTypes=[product]), node_groups(NODES, []))
    assert only_there.plan is None and only_there.reason == "Unschedulable"
    assert f"{product} (not for training: {why}" in only_there.message


def test_a_product_outside_the_catalog_is_planned_from_its_labels_and_says_so() -> None:
    group = by_product()["NVIDIA-H100-NVL"]
    assert group.unusable is None and group.gpu.memory_mib == 95830 and group.gpu.compute_capability == "9.0"
    hopper = [gpu for gpu in gpus.catalog() if gpu.compute_major == 9]
    assert group.gpu.fp16_tflops == min(gpu.fp16_tflops for gpu in hopper)  # the slowest of its generation
    decision = decide(spec(gpuTypes=["NVIDIA-H100-NVL"]), node_groups(NODES, []))
    assert decision.plan is not None and decision.plan.gpu_type == "NVIDIA-H100-NVL"
    assert decision.plan.gpu_memory_bytes == 95830 * 1024**2
    assert "not in kubetune's GPU catalog" in decision.plan.explanation[0]


def test_a_product_without_memory_or_compute_labels_is_left_out() -> None:
    unlabelled = [{**n, "metadata": {**n["metadata"], "labels": {
        k: v for k, v in n["metadata"]["labels"].items() if k != "nvidia.com/gpu.memory"}}}
        for n in NODES if n["metadata"]["name"].startswith("h100-nvl")]
    assert node_groups(unlabelled, []) == []


def test_a_job_open_to_any_gpu_never_lands_on_shared_or_sliced_gpus() -> None:
    decision = decide(spec(), node_groups(NODES, []))
    assert decision.plan is not None and decision.plan.gpu_product in ("NVIDIA-H100-NVL", "NVIDIA-L4")
