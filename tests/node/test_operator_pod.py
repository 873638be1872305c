"""The chart's operator in a real pod, in namespaced mode: on the real node, with the chart's ServiceAccount
token that the kubelet mounts and the Roles the chart grants in `watchNamespaces` only, it plans and runs a job
in a watched namespace and cannot touch another.

What the local cluster lacks, and the test supplies: the operator image (the trainer image, which holds the
kubetune package, runs `kubetune run-operator` instead) and a route to the apiserver from the pod network (no
kube-proxy; the apiserver listens on loopback), so the pod shares the host's network and is told the
apiserver's address, as in-cluster clients read it from KUBERNETES_SERVICE_HOST/PORT."""

import json
import re
import subprocess
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest
import yaml

from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.ftj import ROOT, apply, example, get, in_phase, install_crd, temporary_namespace
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = [pytest.mark.cluster, pytest.mark.node]

RELEASE, NAMESPACE = "kt-pod", "kubetune-pod"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}-kubetune"


def helm(cluster: LocalCluster, *args: str) -> None:
    result = subprocess.run([str(binaries.built("helm")), "--kubeconfig", str(cluster.kubeconfig), *args],
                            capture_output=True, text=True, timeout=180, check=False)
    assert result.returncode == 0, result.stderr


@pytest.fixture
def watched(cluster: LocalCluster) -> Iterator[str]:
    with temporary_namespace(cluster, "watched") as name:
        yield name


@pytest.fixture
def operator_pod(cluster: LocalCluster, image: str, watched: str) -> Iterator[dict]:
    install_crd(cluster)  # by kubectl, as another release's or an admin's: this release leaves it alone
    repository, tag = image.rsplit(":", 1)
    node = cluster.node.state().node
    health, metrics = free_port(), free_port()
    helm(cluster, "install", RELEASE, str(ROOT / "charts" / "kubetune"), "-n", NAMESPACE, "--create-namespace",
         "--wait=false", "--set", "crds.enabled=false", "--set", f"operator.watchNamespaces={{{watched}}}",
         "--set", f"operator.image.repository={repository}", "--set", f"operator.image.tag={tag}",
         "--set", f"operator.metricsPort={metrics}",
         "--set-json", f"operator.nodeSelector={json.dumps({'kubernetes.io/hostname': node})}")
    deployment = json.loads(cluster.kubectl_ok("get", "deployment", f"{RELEASE}-kubetune", "-n", NAMESPACE,
                                               "-o", "json"))
    server = urlparse(yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    pod = deployment["spec"]["template"]["spec"]
    pod["hostNetwork"], pod["dnsPolicy"] = True, "ClusterFirstWithHostNet"
    container = pod["containers"][0]
    container["command"] = ["kubetune"]  # the trainer image's entrypoint is the trainer
    container["args"] = [arg.replace(":8080/", f":{health}/") for arg in container["args"]]
    container["ports"] = [{**port, "containerPort": health} if port["name"] == "health" else port
                          for port in container["ports"]]
    container["env"] += [{"name": "KUBERNETES_SERVICE_HOST", "value": server.hostname},
                         {"name": "KUBERNETES_SERVICE_PORT", "value": str(server.port)}]
    # Unconditionally: the Deployment controller's status writes since the read would make a replace at the read's
    # resourceVersion a conflict.
    deployment["metadata"].pop("resourceVersion", None)
    cluster.kubectl_ok("replace", "-f", "-", stdin=json.dumps(deployment))

    def ready() -> dict | None:
        pods = json.loads(cluster.kubectl_ok("get", "pods", "-n", NAMESPACE, "-l",
                                             f"app.kubernetes.io/instance={RELEASE}", "-o", "json"))["items"]
        ready_pods = [p for p in pods if p["spec"].get("nodeName") == node and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
        return ready_pods[0] if len(ready_pods) == len(pods) == 1 else None

    try:
        running = wait_until("the operator pod Ready on the real node", ready, timeout=240)
    except AssertionError:
        selector = f"app.kubernetes.io/instance={RELEASE}"
        for args in (("describe", "pods"), ("logs", "--tail=80", "--all-containers")):
            print(cluster.kubectl(*args, "-n", NAMESPACE, "-l", selector).stdout)
        raise
    yield running
    print(cluster.kubectl("logs", "-n", NAMESPACE, running["metadata"]["name"], "--tail=80").stdout)
    cluster.kubectl("delete", "namespace", NAMESPACE, "--wait=false")
    for kind in ("clusterrole", "clusterrolebinding"):
        cluster.kubectl("delete", kind, "-l", f"app.kubernetes.io/instance={RELEASE}")


def test_the_pod_runs_jobs_in_its_watched_namespace_and_cannot_touch_others(cluster: LocalCluster,
                                                                            operator_pod: dict,
                                                                            watched: str) -> None:
    assert operator_pod["spec"]["serviceAccountName"] == f"{RELEASE}-kubetune"
    with temporary_namespace(cluster, "unwatched") as unwatched:
        assert apply(cluster, unwatched, example("minimal")).returncode == 0
        assert apply(cluster, watched, example("minimal")).returncode == 0
        wait_until("the watched job to succeed", in_phase(cluster, watched, "minimal", "Succeeded"), timeout=240)
        other = get(cluster, unwatched, "ftj", "minimal")
        assert other is not None and "status" not in other  # never seen, never planned
        for verb, resource in (("create", "jobs.batch"), ("patch", "finetunejobs.kubetune.io")):
            for namespace, answer in ((watched, "yes"), (unwatched, "no")):
                result = cluster.kubectl("auth", "can-i", verb, resource, "--as", ACCOUNT, "-n", namespace)
                assert result.stdout.strip() == answer, (verb, resource, namespace)
    log = cluster.kubectl_ok("logs", "-n", NAMESPACE, operator_pod["metadata"]["name"])
    assert not re.findall(r'forbidden: User "[^"]+" cannot [^\n]*', log)
