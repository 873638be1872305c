"""The GPU catalog: lookups by the labels GPU Feature Discovery writes, and the GFD facts derived from it."""

import json

import pytest

from kubetune.catalog import gpus
from tests.conftest import ROOT


@pytest.mark.parametrize(
    ("product", "gpu_id"),
    [
        ("NVIDIA-H100-80GB-HBM3", "H100-SXM-80GB"),
        ("NVIDIA-A100-SXM4-80GB", "A100-SXM4-80GB"),
        ("A100-SXM4-40GB", "A100-SXM4-40GB"),  # drivers before R470 named it without "NVIDIA "
        ("NVIDIA-A10G-SHARED", "A10G-24GB"),  # time-sliced GPUs carry a -SHARED suffix
        ("Tesla-V100-SXM2-32GB", "V100-SXM2-32GB"),
        ("Tesla-T4", "T4-16GB"),
        ("NVIDIA-L4", "L4-24GB"),
    ],
)
def test_gfd_product_label_maps_to_catalog_entry(product: str, gpu_id: str) -> None:
    assert gpus.by_gfd_product(product).id == gpu_id


def test_unknown_product_error_lists_known_products() -> None:
    with pytest.raises(gpus.UnknownGpuError) as error:
        gpus.by_gfd_product("NVIDIA-GeForce-RTX-4090")
    assert "NVIDIA-GeForce-RTX-4090" in str(error.value)
    assert "NVIDIA-H100-80GB-HBM3" in str(error.value)


def test_unknown_id_error_lists_known_ids() -> None:
    with pytest.raises(gpus.UnknownGpuError, match="known types: .*H100-SXM-80GB"):
        gpus.by_id("H1000")


def test_lookup_by_id_ignores_case() -> None:
    assert gpus.by_id("h100-sxm-80gb").memory_mib == 81559


@pytest.mark.parametrize(
    ("gpu_id", "family"),
    [
        ("V100-SXM2-32GB", "volta"),
        ("T4-16GB", "turing"),
        ("A100-SXM4-80GB", "ampere"),
        ("A10G-24GB", "ampere"),
        ("L4-24GB", "ada-lovelace"),
        ("H100-SXM-80GB", "hopper"),
        ("B200-180GB", "blackwell"),
    ],
)
def test_family_follows_gfd_compute_capability_mapping(gpu_id: str, family: str) -> None:
    assert gpus.by_id(gpu_id).gfd_family == family


def test_every_product_label_is_unique_and_a_valid_label_value() -> None:
    products = [p for gpu in gpus.catalog() for p in gpu.gfd_products]
    assert len(products) == len(set(products))
    for product in products:
        assert len(product) <= 63 and product.replace("-", "").replace(".", "").replace("_", "").isalnum()


def test_the_charts_schema_lists_exactly_the_catalogs_gpu_ids() -> None:
    schema = json.loads((ROOT / "charts" / "kubetune" / "values.schema.json").read_text())
    operator = schema["properties"]["operator"]["properties"]
    ids = [gpu.id for gpu in gpus.catalog()]
    assert operator["gpuPrices"]["propertyNames"]["enum"] == ids
    assert operator["autoscaledGpuPools"]["items"]["properties"]["gpuType"]["enum"] == ids
