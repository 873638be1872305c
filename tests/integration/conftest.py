"""The operator (one per test module) and a fresh namespace per test, for the tests against the cluster."""

from collections.abc import Iterator

import pytest

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, operator_running, temporary_namespace


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_running(cluster, tmp_path_factory.mktemp("operator")) as running:
        yield running


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    with temporary_namespace(cluster, "ftj") as name:
        cluster.kubectl_ok("create", "secret", "generic", "hf-token", "--from-literal=token=hf_test", "-n", name)
        yield name
