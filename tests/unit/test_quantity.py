"""Kubernetes Quantities in node allocatable: every suffix, exponents and milli, as the API server accepts them."""

import pytest

from kubetune.catalog.cluster_gpus import _cpu_millis, _quantity_bytes, node_groups, parse_quantity
from kubetune.devcluster import profile


@pytest.mark.parametrize(("quantity", "expected"), [
    ("1Ki", 1024), ("1Mi", 1024**2), ("1Gi", 1024**3), ("1Ti", 1024**4), ("1Pi", 1024**5), ("1Ei", 1024**6),
    ("1k", 10**3), ("1M", 10**6), ("1G", 10**9), ("1T", 10**12), ("1P", 10**15), ("1E", 10**18),
    ("129e6", 129_000_000), ("1E9", 10**9), ("5e+3", 5000), ("2.5e3", 2500), ("1.5Gi", 1536 * 1024**2),
    ("189000Mi", 189000 * 1024**2), (".5Ki", 512), ("5.", 5), ("+7", 7), ("196608", 196608), ("0", 0),
    # Bytes are whole: a fraction rounds up, as the API server's Value() does.
    ("1500m", 2), ("1m", 1), ("0.1", 1),
])
def test_memory_quantities_in_every_form_the_api_server_accepts(quantity: str, expected: int) -> None:
    assert _quantity_bytes(quantity) == expected


@pytest.mark.parametrize(("quantity", "expected"), [
    ("47810m", 47810), ("48", 48000), ("0.5", 500), ("1.5m", 2), ("250000u", 250), ("1k", 1_000_000),
    ("2e0", 2000), ("4E-1", 400),
])
def test_cpu_quantities_in_millicores(quantity: str, expected: int) -> None:
    assert _cpu_millis(quantity) == expected


@pytest.mark.parametrize("bad", ["", "Gi", "1K", "1e", "1.2.3", "1 Gi", " 1", "1_000", "inf", "NaN", "0x10",
                                 "1Gi ", "1GiB", "1e9999999"])
def test_a_value_that_is_not_a_quantity_gives_none(bad: str) -> None:
    assert parse_quantity(bad) is None and _quantity_bytes(bad) is None and _cpu_millis(bad) is None


def test_a_node_whose_allocatable_is_in_exponent_form_still_counts_its_memory_and_cpu() -> None:
    nodes = profile.load("default").node_manifests()
    for node in nodes:
        node["status"]["allocatable"].update({"memory": "2e12", "cpu": "1.92e2"})
    group = node_groups(nodes, [])[0]
    assert (group.host_memory_bytes, group.cpu_millis) == (2 * 10**12, 192_000)
    for node in nodes:
        node["status"]["allocatable"]["memory"] = "lots"
    assert node_groups(nodes, [])[0].host_memory_bytes is None  # an unreadable value is unknown, not zero
