"""The README's front door: `hack/demo.sh` itself, on a cluster of its own, ends with the tiny job really
trained and says so (plan, progress, loss, where the adapter went); then `kubetune dev-cluster down` leaves
no process, mount, network device or cgroup of the real node behind."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.devcluster import host
from kubetune.devcluster.cluster import LocalCluster
from kubetune.devcluster.node import RealNode

pytestmark = [pytest.mark.cluster, pytest.mark.node, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
KUBETUNE = str(Path(sys.executable).parent / "kubetune")


def leftovers(state: Path, node: RealNode) -> dict[str, list]:
    """What of the cluster and its real node is still on the host: processes naming their folders, mounts
    under them, the node's cgroups, bridge and folder."""
    return {
        "processes": host.processes_naming(str(state)) + host.processes_naming(str(node.paths.state)),
        "mounts": [str(p) for p in host.mounts_under([state, node.paths.state])],
        "cgroups": [str(h / node.cgroup_root) for h in host.cgroup_hierarchies() if (h / node.cgroup_root).exists()],
        "bridges": [node.bridge] if host.link_exists(node.bridge) else [],
        "folders": [str(node.paths.state)] if node.paths.state.exists() else [],
    }


def test_the_demo_really_trains_and_down_leaves_nothing_behind(tmp_path: Path) -> None:
    state = tmp_path / "state"
    env = dict(os.environ, KUBETUNE_STATE=str(state))
    cluster = LocalCluster("kubetune-dev", state / "kubetune-dev")
    try:
        result = subprocess.run([str(ROOT / "hack" / "demo.sh")], cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=1800)
        output = result.stdout
        assert result.returncode == 0, output[-4000:] + result.stderr[-4000:]
        assert re.search(r"^tiny-lora\s+Succeeded\s", output, re.MULTILINE), output[-4000:]
        assert re.search(r"tiny-lora\s+Running\s.*\s\d+/120\s", output), "no progress while running:\n" + output
        assert "Chose A10G-24GB x 2" in output
        losses = [float(m) for m in re.findall(r"^  step \d+/120 loss ([0-9.]+)", output, re.MULTILINE)]
        assert len(losses) >= 5 and losses[-1] < 0.8 * losses[0], losses
        assert "the adapter was saved to /output/final on claim demo-output" in output
        pods = cluster.kubectl_ok("get", "pods", "-l", "kubetune.io/finetunejob=tiny-lora", "-o",
                                  "jsonpath={.items[*].spec.nodeName}").split()
        assert pods == ["real-0", "real-0"]
    finally:
        down = subprocess.run([KUBETUNE, "dev-cluster", "down"], env=env, capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stderr
    assert leftovers(state, cluster.node) == {"processes": [], "mounts": [], "cgroups": [], "bridges": [],
                                              "folders": []}
