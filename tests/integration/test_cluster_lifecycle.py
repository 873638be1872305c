"""`up` and `down` are idempotent, and `down` stops every process a cluster started even when kwokctl's own
state is broken (as after a crash), finding them by their pid files."""

from pathlib import Path

import pytest

from kubetune.devcluster import profile
from kubetune.devcluster.cluster import LocalCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
ONE_NODE_PROFILE = """
name: one-node
driver_version: 550.127.05
cuda_version: "12.4"
pools:
  - name: l4
    count: 1
    instance_type: g6.12xlarge
    gpu: {type: L4-24GB, count: 4}
    capacity: {cpu: "48", memory: 196608Mi}
    allocatable: {cpu: 47810m, memory: 189000Mi}
"""


def processes_of(cluster: LocalCluster) -> set[int]:
    """Live processes whose command line names the cluster's folder, found by scanning /proc."""
    pids = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(cluster.cluster_dir).encode() in cmdline.read_bytes():
                pids.add(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture
def small_cluster(tmp_path: Path) -> LocalCluster:
    (tmp_path / "profile.yaml").write_text(ONE_NODE_PROFILE)
    cluster = LocalCluster("kubetune-lifecycle", ROOT / ".kubetune" / "lifecycle-cluster")
    cluster.up(profile.load(str(tmp_path / "profile.yaml")))
    yield cluster
    cluster.down()


def test_second_up_replaces_the_first_cluster(small_cluster: LocalCluster, tmp_path: Path) -> None:
    first = processes_of(small_cluster)
    assert len(first) >= 5
    small_cluster.up(profile.load(str(tmp_path / "profile.yaml")))
    second = processes_of(small_cluster)
    assert len(second) >= 5 and not first & second
    assert small_cluster.ready_nodes() == {"l4-0"}


def test_down_stops_every_process_even_with_broken_kwokctl_state(small_cluster: LocalCluster) -> None:
    assert processes_of(small_cluster)
    (small_cluster.cluster_dir / "kwok.yaml").write_text("not a kwokctl config\n")
    small_cluster.down()
    assert not processes_of(small_cluster)
    assert not small_cluster.is_running()
    small_cluster.down()  # a second down is a no-op
