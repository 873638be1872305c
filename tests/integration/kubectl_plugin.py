"""`kubectl kubetune` run by the real kubectl, for the cluster and node tests."""

import os
import subprocess
import sys
from pathlib import Path

from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster


def kubectl_kubetune(cluster: LocalCluster, *args: str, stdin: str | None = None,
                     kubeconfig: str | None = None) -> subprocess.CompletedProcess[str]:
    """`kubectl kubetune ...`: kubectl finds the installed kubectl-kubetune on PATH and passes it KUBECONFIG
    (the cluster's, unless another is given)."""
    # Wide enough that no table cell wraps.
    env = {**os.environ, "KUBECONFIG": kubeconfig or str(cluster.kubeconfig), "COLUMNS": "1000",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([str(binaries.kubectl()), "kubetune", *args], input=stdin, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
