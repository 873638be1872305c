"""The operator (one per test module), a fresh namespace per test and nodes a test adds, for the tests against
the cluster."""

from collections.abc import Iterator

import pytest
import yaml

from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, operator_running, temporary_namespace
from tests.integration.waiting import wait_until


@pytest.fixture(scope="module")
def operator(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    with operator_running(cluster, tmp_path_factory.mktemp("operator")) as running:
        yield running


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    with temporary_namespace(cluster, "ftj") as name:
        cluster.kubectl_ok("create", "secret", "generic", "hf-token", "--from-literal=token=hf_test", "-n", name)
        yield name


class Nodes:
    """Nodes a test adds to the running cluster (kwok plays them), removed afterwards."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.added: list[str] = []

    def add(self, manifests: list[dict]) -> None:
        # As the cluster registers its profile's nodes (a List's items are validated more strictly).
        self.cluster.kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(manifests))
        names = {n["metadata"]["name"] for n in manifests}
        self.added.extend(names)
        wait_until(f"{len(names)} added node(s) Ready", lambda: names <= self.cluster.ready_nodes())


@pytest.fixture
def nodes(cluster: LocalCluster) -> Iterator[Nodes]:
    added = Nodes(cluster)
    try:
        yield added
    finally:
        if added.added:
            cluster.kubectl("delete", "node", *added.added, "--wait=false")
