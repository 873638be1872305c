"""Acting as a ServiceAccount: a kubeconfig holding a token the apiserver issued for it."""

from pathlib import Path

import yaml

from kubetune.devcluster.cluster import LocalCluster


def service_account_kubeconfig(cluster: LocalCluster, account: str, namespace: str, path: Path) -> Path:
    """A kubeconfig for `account` in `namespace` (also its default namespace), with the cluster's server and CA."""
    token = cluster.kubectl_ok("create", "token", account, "-n", namespace, "--duration=1h").strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account, "namespace": namespace}}],
        "current-context": account,
    }))
    return path
