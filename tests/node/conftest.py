"""The real node's fixtures: the operator with the locally built trainer image, and a namespace whose claims
(on the node's local volumes) hold the tiny world to train on."""

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from kubetune.devcluster import seed
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, operator_running, temporary_namespace
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port


@pytest.fixture(scope="session")
def image(cluster: LocalCluster) -> str:
    """The trainer image the real node's runtime has: what its pods can run."""
    return cluster.node.state().trainer_image


@pytest.fixture(scope="module")
def node_operator(cluster: LocalCluster, image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    folder = tmp_path_factory.mktemp("operator")
    port = free_port()
    with operator_running(cluster, folder, "--metrics-port", str(port), env={"KUBETUNE_TRAINER_IMAGE": image}) as running:
        yield running


@dataclass(frozen=True)
class Claims:
    namespace: str
    data: str
    output: str


def claim_folder(cluster: LocalCluster, namespace: str, claim: str) -> Path:
    """Where a bound claim's files are on this machine: its local PersistentVolume's folder."""
    volume = json.loads(cluster.kubectl_ok("get", "pvc", claim, "-n", namespace, "-o", "json"))["spec"]["volumeName"]
    return Path(json.loads(cluster.kubectl_ok("get", "pv", volume, "-o", "json"))["spec"]["local"]["path"])


def train_log_once(cluster: LocalCluster, claims: Claims, steps: int) -> Path:
    """The run's train_log.jsonl on the output claim, once it holds `steps` steps."""
    def bound() -> Path | None:
        phase = cluster.kubectl("get", "pvc", claims.output, "-n", claims.namespace, "-o", "jsonpath={.status.phase}")
        return claim_folder(cluster, claims.namespace, claims.output) if phase.stdout == "Bound" else None
    log: Path = wait_until("the output claim bound", bound, timeout=180) / "train_log.jsonl"
    wait_until(f"{steps} steps logged", lambda: log.exists() and len(log.read_text().splitlines()) >= steps,
               timeout=300)
    return log


@pytest.fixture
def claims(cluster: LocalCluster, image: str, tmp_path: Path) -> Iterator[Claims]:
    cluster.node.recycle_volumes()  # the earlier tests' claims are gone: their volumes serve again
    with temporary_namespace(cluster, "node") as namespace:
        cluster.kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(
            [seed.claim("demo-data", namespace), seed.claim("demo-output", namespace)]))
        seed.put_on_claim(cluster.kubectl, namespace, "demo-data", seed.write_world(tmp_path / "world"), image)
        yield Claims(namespace, "demo-data", "demo-output")
