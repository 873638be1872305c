"""Cluster profiles render Node objects that look like real GPU nodes labelled by GFD and the GPU Operator."""

import re
from collections import Counter

import pytest

from kubetune.catalog import gpus
from kubetune.devcluster import profile

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
GFD_KEYS = {
    "nvidia.com/gpu.present",
    "nvidia.com/gpu.product",
    "nvidia.com/gpu.memory",
    "nvidia.com/gpu.count",
    "nvidia.com/gpu.family",
    "nvidia.com/gpu.compute.major",
    "nvidia.com/gpu.compute.minor",
}


@pytest.fixture(scope="module")
def nodes() -> list[dict]:
    return profile.load("default").node_manifests()


def test_default_profile_has_mixed_gpu_pools_and_cpu_nodes(nodes: list[dict]) -> None:
    pools = Counter(
        (n["metadata"]["labels"].get("nvidia.com/gpu.product"), n["status"]["capacity"].get("nvidia.com/gpu"))
        for n in nodes
    )
    assert pools == {
        ("NVIDIA-H100-80GB-HBM3", "8"): 2,
        ("NVIDIA-A100-SXM4-80GB", "8"): 4,
        ("NVIDIA-A100-SXM4-40GB", "8"): 2,
        ("NVIDIA-L4", "4"): 4,
        ("Tesla-V100-SXM2-32GB", "8"): 2,
        (None, None): 3,
    }


def test_gpu_nodes_carry_gfd_labels_consistent_with_the_catalog(nodes: list[dict]) -> None:
    for node in nodes:
        labels = node["metadata"]["labels"]
        if "nvidia.com/gpu.product" not in labels:
            continue
        assert GFD_KEYS <= labels.keys()
        gpu = gpus.by_gfd_product(labels["nvidia.com/gpu.product"])
        assert labels["nvidia.com/gpu.memory"] == str(gpu.memory_mib)
        assert labels["nvidia.com/gpu.count"] == node["status"]["allocatable"]["nvidia.com/gpu"]
        assert labels["nvidia.com/gpu.compute.major"] == str(gpu.compute_major)
        assert labels["nvidia.com/gpu.present"] == "true"


def test_v100_nodes_report_volta_compute_capability_7(nodes: list[dict]) -> None:
    v100 = [n["metadata"]["labels"] for n in nodes if n["metadata"]["name"].startswith("v100-")]
    assert v100 and all(
        labels["nvidia.com/gpu.family"] == "volta" and labels["nvidia.com/gpu.compute.major"] == "7" for labels in v100
    )


def test_cpu_nodes_have_no_gpu_labels_or_capacity(nodes: list[dict]) -> None:
    cpu = [n for n in nodes if n["metadata"]["name"].startswith("cpu-")]
    assert len(cpu) == 3
    for node in cpu:
        assert not any(key.startswith("nvidia.com/") for key in node["metadata"]["labels"])
        assert "nvidia.com/gpu" not in node["status"]["capacity"]


def test_every_label_value_is_valid_for_kubernetes(nodes: list[dict]) -> None:
    for node in nodes:
        for key, value in node["metadata"]["labels"].items():
            assert len(value) <= 63 and LABEL_VALUE.match(value), (key, value)


def test_unknown_profile_names_the_builtin_ones() -> None:
    with pytest.raises(FileNotFoundError, match="default"):
        profile.load("no-such-profile")


def test_profile_with_unknown_gpu_type_is_refused(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\ndriver_version: 550.1.2\ncuda_version: '12.4'\npools:\n"
        "- {name: x, count: 1, instance_type: t, gpu: {type: H1000, count: 8},"
        " capacity: {cpu: '8', memory: 8Gi}, allocatable: {cpu: '8', memory: 8Gi}}\n"
    )
    with pytest.raises(gpus.UnknownGpuError, match="H1000"):
        profile.load(str(path))
