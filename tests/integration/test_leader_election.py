"""Two operator replicas with leader election: exactly one reconciles; when the leader is killed (kill -9) the
standby takes over once the Lease runs out, and a clean shutdown hands the Lease over at once. Each replica
is the real `kubetune run-operator --leader-election-namespace`, against the real control plane."""

import json
import signal
import socket
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from kubetune.controller.leader import LEASE_SECONDS, RENEW_SECONDS
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import Operator, apply, example, in_phase, install_crd, temporary_namespace
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = pytest.mark.cluster
LEASE_NAMESPACE = "kubetune-system"


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    install_crd(cluster)
    cluster.kubectl("create", "namespace", LEASE_NAMESPACE)
    with temporary_namespace(cluster, "le") as name:
        yield name


def holder(cluster: LocalCluster, lease: str) -> str | None:
    result = cluster.kubectl("get", "lease", lease, "-n", LEASE_NAMESPACE, "-o", "json")
    return json.loads(result.stdout)["spec"].get("holderIdentity") if result.returncode == 0 else None


def identity(operator: Operator) -> str:
    assert operator.process is not None
    return f"{socket.gethostname()}-{operator.process.pid}"  # as run-operator names itself outside a pod


def job(name: str) -> dict:
    manifest = example("minimal")
    manifest["metadata"]["name"] = name
    return manifest


def reconciled_by(port: int, name: str) -> bool:
    """Whether the replica serving metrics on `port` has reconciled the job (it keeps the job's series)."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return f'finetunejob="{name}"' in page


def test_one_leader_reconciles_and_a_standby_takes_over(cluster: LocalCluster, namespace: str,
                                                        tmp_path) -> None:
    lease = f"kubetune-{uuid.uuid4().hex[:6]}"
    args = (f"--leader-election-namespace={LEASE_NAMESPACE}", f"--lease-name={lease}")
    ports = free_port(), free_port()
    first = Operator(cluster.kubeconfig, tmp_path / "first.log", *args, f"--metrics-port={ports[0]}")
    second = Operator(cluster.kubeconfig, tmp_path / "second.log", *args, f"--metrics-port={ports[1]}")
    try:
        first.start()
        wait_until("the first replica to lead", lambda: holder(cluster, lease) == identity(first))
        second.start()
        time.sleep(RENEW_SECONDS)  # the second replica has looked at the Lease and stands by
        assert holder(cluster, lease) == identity(first)

        assert apply(cluster, namespace, job("led-by-first")).returncode == 0
        wait_until("the leader to plan it", in_phase(cluster, namespace, "led-by-first", "Succeeded", "Planned",
                                                     "Running"))
        assert reconciled_by(ports[0], "led-by-first") and not reconciled_by(ports[1], "led-by-first")
        assert "is a standby" in second.log.read_text()

        # kill -9: no release; the standby waits out the lease and then leads.
        killed_at = time.monotonic()
        first.kill()
        wait_until("the standby to lead", lambda: holder(cluster, lease) == identity(second),
                   timeout=LEASE_SECONDS + 3 * RENEW_SECONDS)
        assert time.monotonic() - killed_at >= LEASE_SECONDS - RENEW_SECONDS  # it did not grab a live lease
        assert apply(cluster, namespace, job("led-by-second")).returncode == 0
        wait_until("the new leader to plan it", in_phase(cluster, namespace, "led-by-second", "Succeeded",
                                                         "Planned", "Running"))

        # A clean shutdown (SIGTERM, as a rollout sends) hands the Lease over without waiting it out.
        first.start()
        time.sleep(RENEW_SECONDS)
        assert holder(cluster, lease) == identity(second)
        stopped_at = time.monotonic()
        assert second.process is not None
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=30) == 0
        wait_until("the handover", lambda: holder(cluster, lease) == identity(first), timeout=LEASE_SECONDS)
        assert time.monotonic() - stopped_at < LEASE_SECONDS - RENEW_SECONDS + 2
    finally:
        first.stop()
        second.stop()
