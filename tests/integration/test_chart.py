"""The Helm chart installed for real: CRDs established, the operator pod scheduled on a CPU node, and the
chart's RBAC both sufficient (the operator, running with the chart's ServiceAccount token, plans and runs a
job and reports a failure) and no more than needed (`kubectl auth can-i`). Uninstalling leaves nothing."""

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster
from tests.integration.accounts import service_account_kubeconfig
from tests.integration.ftj import ROOT, Operator, apply, condition, example, failing, in_phase
from tests.integration.waiting import wait_until

pytestmark = pytest.mark.cluster

RELEASE, NAMESPACE = "kubetune", "kubetune-system"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"


def helm(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.built("helm")), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster) -> Iterator[None]:
    result = helm(cluster, "install", RELEASE, str(ROOT / "charts" / "kubetune"), "-n", NAMESPACE,
                  "--create-namespace", "--wait=false")
    assert result.returncode == 0, result.stderr
    yield
    helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE)


def test_install_establishes_the_crd_and_schedules_the_operator_on_a_cpu_node(cluster: LocalCluster,
                                                                            installed: None) -> None:
    cluster.kubectl_ok("wait", "--for=condition=Established", "crd/finetunejobs.kubetune.io", "--timeout=60s")

    def operator_pod() -> dict | None:
        pods = json.loads(cluster.kubectl_ok("get", "pods", "-n", NAMESPACE, "-l",
                                             f"app.kubernetes.io/instance={RELEASE}", "-o", "json"))["items"]
        return pods[0] if pods and pods[0]["spec"].get("nodeName") else None

    pod = wait_until("the operator pod to be scheduled", operator_pod)
    node = json.loads(cluster.kubectl_ok("get", "node", pod["spec"]["nodeName"], "-o", "json"))
    assert "nvidia.com/gpu.present" not in node["metadata"]["labels"]
    security = pod["spec"]["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] and security["capabilities"]["drop"] == ["ALL"]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("list", "nodes", True),
        ("list", "pods", True),
        ("create", "jobs.batch", True),
        ("patch", "finetunejobs.kubetune.io/status", True),
        ("create", "events", True),
        ("get", "secrets", False),
        ("get", "persistentvolumeclaims", True),  # to say when a job's claim is missing
        ("get", "priorityclasses.scheduling.k8s.io", True),
        ("create", "persistentvolumeclaims", False),
        ("list", "secrets", False),
        ("delete", "nodes", False),
        ("delete", "jobs.batch", True),  # to replace a failed attempt's Job
        ("delete", "configmaps", False),
        ("delete", "services", False),
        ("delete", "finetunejobs.kubetune.io", False),
        ("create", "deployments.apps", False),
        ("create", "pods", False),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", False),
    ],
)
def test_rbac_grants_only_what_the_operator_needs(cluster: LocalCluster, installed: None, verb: str,
                                                  resource: str, allowed: bool) -> None:
    result = cluster.kubectl("auth", "can-i", verb, resource, "--as", ACCOUNT, "-n", "default")
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)


@pytest.fixture
def operator_as_the_charts_account(cluster: LocalCluster, installed: None, tmp_path: Path) -> Iterator[Operator]:
    kubeconfig = service_account_kubeconfig(cluster, RELEASE, NAMESPACE, tmp_path / "operator.kubeconfig")
    # The in-cluster pod cannot run (kwok runs no containers): the same account runs out of cluster instead.
    cluster.kubectl_ok("scale", "deployment", RELEASE, "-n", NAMESPACE, "--replicas=0")
    operator = Operator(kubeconfig, tmp_path / "operator.log")
    operator.start()
    yield operator
    operator.stop()
    print(operator.log.read_text()[-3000:])


@pytest.fixture
def namespace(cluster: LocalCluster) -> Iterator[str]:
    name = "chart-rbac"
    cluster.kubectl_ok("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_the_charts_account_is_enough_to_plan_run_and_report(cluster: LocalCluster,
                                                            operator_as_the_charts_account: Operator,
                                                            namespace: str) -> None:
    apply(cluster, namespace, example("minimal"))
    ftj = wait_until("the job to succeed", in_phase(cluster, namespace, "minimal", "Succeeded"))
    assert condition(ftj, "Planned")["status"] == "True"

    apply(cluster, namespace, failing("failing", 3))
    ftj = wait_until("the job to fail", in_phase(cluster, namespace, "failing", "Failed"))
    assert "exited with code 3" in condition(ftj, "Failed")["message"]
    # RBAC denials read 'is forbidden: User "system:serviceaccount:..." cannot ...' (other Forbidden answers,
    # such as Events refused in a namespace that another test is deleting, are not about permissions).
    denials = re.findall(r'forbidden: User "[^"]+" cannot [^\n]*', operator_as_the_charts_account.log.read_text())
    assert not denials, denials


def test_rendered_manifests_pass_the_apiservers_own_validation(cluster: LocalCluster, installed: None,
                                                               tmp_path: Path) -> None:
    for sets in ([], ["--set", "operator.watchNamespaces={default}"],
                 ["--set", "operator.replicas=2", "--set", "grafana.dashboards.enabled=true"]):
        rendered = helm(cluster, "template", "dryrun", str(ROOT / "charts" / "kubetune"), "-n", NAMESPACE, *sets)
        assert rendered.returncode == 0, rendered.stderr
        result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered.stdout)
        assert result.returncode == 0, result.stderr


def test_apply_warns_when_the_output_would_be_lost(cluster: LocalCluster, installed: None) -> None:
    """The chart's admission policy warns at `kubectl apply` (and refuses nothing) when no claim keeps the
    output; the operator says the same in status (tests/integration/test_operator.py)."""
    ephemeral = example("minimal")
    ephemeral["spec"].pop("output", None)
    durable = example("minimal")
    durable["spec"]["output"] = {"claimName": "models"}

    def warned() -> subprocess.CompletedProcess[str] | None:
        result = cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(ephemeral))
        return result if "claimName is not set" in result.stderr else None

    result = wait_until("the admission policy to take effect", warned)  # the apiserver compiles it first
    assert result.returncode == 0 and "Warning:" in result.stderr, result.stderr
    result = cluster.kubectl("apply", "--dry-run=server", "-n", "default", "-f", "-", stdin=json.dumps(durable))
    assert result.returncode == 0 and "Warning" not in result.stderr, result.stderr


def test_upgrade_keeps_existing_finetunejobs(cluster: LocalCluster, installed: None) -> None:
    cluster.kubectl("create", "namespace", "chart-upgrade")
    apply(cluster, "chart-upgrade", example("minimal"))
    result = helm(cluster, "upgrade", RELEASE, str(ROOT / "charts" / "kubetune"), "-n", NAMESPACE,
                  "--set", "operator.reconcileSeconds=5", "--wait=false")
    assert result.returncode == 0, result.stderr
    assert cluster.kubectl("get", "ftj", "minimal", "-n", "chart-upgrade").returncode == 0
    cluster.kubectl("delete", "namespace", "chart-upgrade", "--wait=false")


def test_uninstall_leaves_no_operator_objects(cluster: LocalCluster, installed: None) -> None:
    assert helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE).returncode == 0
    selector = f"app.kubernetes.io/instance={RELEASE}"
    wait_until("the operator's objects to go", lambda: not json.loads(cluster.kubectl_ok(
        "get", "deployments,serviceaccounts,roles,rolebindings", "-n", NAMESPACE, "-l", selector, "-o", "json"))["items"])
    cluster_wide = json.loads(cluster.kubectl_ok("get", "clusterroles,clusterrolebindings", "-l", selector,
                                                 "-o", "json"))["items"]
    assert not cluster_wide
    # Helm keeps CRDs (and so FineTuneJobs) on uninstall, as its docs say; README documents it.
    assert cluster.kubectl("get", "crd", "finetunejobs.kubetune.io").returncode == 0
