"""The Helm chart installed for real: CRDs established, the operator pod scheduled on a CPU node, and the
chart's RBAC both sufficient (the operator, running with the chart's ServiceAccount token, plans and runs a
job and reports a failure) and no more than needed (`kubectl auth can-i`). An upgrade changes the CRD's schema
and keeps FineTuneJobs; uninstalling leaves nothing but the CRD."""

import json
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubetune.api import crd
from kubetune.controller.leader import LEASE_SECONDS, RENEW_SECONDS
from kubetune.devcluster import binaries
from kubetune.devcluster.cluster import LocalCluster
from tests.chart_values import NAMESPACES, VALUES
from tests.integration.accounts import service_account_kubeconfig
from tests.integration.ftj import ROOT, Operator, apply, condition, example, failing, in_phase
from tests.integration.waiting import wait_until
from tests.observability.prometheus import free_port

pytestmark = pytest.mark.cluster

RELEASE, NAMESPACE = "kubetune", "kubetune-system"
ACCOUNT = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
CHART = ROOT / "charts" / "kubetune"
CRD_NAME = "crd/finetunejobs.kubetune.io"


def helm(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.built("helm")), "--kubeconfig", str(cluster.kubeconfig), *args],
                          capture_output=True, text=True, timeout=180, check=False)


def adopt_the_crd(cluster: LocalCluster) -> None:
    """What README tells a user whose CRD came from `kubectl apply -f crds/` (as the other test modules apply
    it) or from an older chart's crds/: Helm refuses to take over an object without its release's marks."""
    if cluster.kubectl("get", CRD_NAME).returncode == 0:
        cluster.kubectl_ok("label", "--overwrite", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
        cluster.kubectl_ok("annotate", "--overwrite", CRD_NAME, f"meta.helm.sh/release-name={RELEASE}",
                           f"meta.helm.sh/release-namespace={NAMESPACE}")


@pytest.fixture(scope="module")
def installed(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The release installed from the archive `helm package` makes, as a user installs a pushed chart."""
    adopt_the_crd(cluster)
    folder = tmp_path_factory.mktemp("package")
    packaged = helm(cluster, "package", str(CHART), "-d", str(folder))
    assert packaged.returncode == 0, packaged.stderr
    (archive,) = folder.glob("kubetune-*.tgz")
    result = helm(cluster, "install", RELEASE, str(archive), "-n", NAMESPACE, "--create-namespace", "--wait=false")
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
        ("delete", "configmaps", True),  # to remove an earlier plan's ConfigMap (named for its content)
        ("patch", "configmaps", False),  # a ConfigMap is never changed in place
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
    # `kind/name` names one object to kubectl; a subresource is its own flag.
    kind, _, subresource = resource.partition("/")
    result = cluster.kubectl("auth", "can-i", verb, kind, "--as", ACCOUNT, "-n", "default",
                             *([f"--subresource={subresource}"] if subresource else []))
    assert result.stdout.strip() == ("yes" if allowed else "no"), (verb, resource, result.stdout, result.stderr)


@pytest.fixture
def users(cluster: LocalCluster, installed: None) -> Iterator[str]:
    """alice holds the built-in edit role and bob view, both by a RoleBinding in one namespace only."""
    name = "chart-users"
    cluster.kubectl_ok("create", "namespace", name)
    cluster.kubectl_ok("create", "rolebinding", "alice-edits", "--clusterrole=edit", "--user=alice", "-n", name)
    cluster.kubectl_ok("create", "rolebinding", "bob-views", "--clusterrole=view", "--user=bob", "-n", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_holders_of_the_built_in_roles_may_use_finetunejobs_in_their_namespace_only(cluster: LocalCluster,
                                                                                  users: str) -> None:
    def can(user: str, verb: str, namespace: str, subresource: str = "") -> bool:
        result = cluster.kubectl("auth", "can-i", verb, "finetunejobs.kubetune.io", "--as", user, "-n", namespace,
                                 *([f"--subresource={subresource}"] if subresource else []))
        return result.stdout.strip() == "yes"

    # The controller manager aggregates the chart's rules into edit and view shortly after install.
    wait_until("the chart's rules to be aggregated into edit and view",
               lambda: can("alice", "create", users) and can("bob", "list", users))
    for verb in ("create", "get", "list", "watch", "update", "patch", "delete"):
        assert can("alice", verb, users), verb
    assert can("alice", "get", users, "status")
    assert not can("alice", "patch", users, "status")  # the operator's to write
    assert not can("alice", "create", "default")
    for verb in ("get", "list", "watch"):
        assert can("bob", verb, users), verb
        assert can("bob", verb, users, "status"), verb
    for verb in ("create", "patch", "delete"):
        assert not can("bob", verb, users), verb
    assert not can("bob", "get", "default")


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


def lease_holder(cluster: LocalCluster) -> str | None:
    result = cluster.kubectl("get", "lease", RELEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}")
    return result.stdout if result.returncode == 0 else None


def test_standbys_elect_a_leader_with_the_charts_own_role(cluster: LocalCluster, installed: None,
                                                          tmp_path: Path) -> None:
    result = helm(cluster, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--set", "operator.replicas=2",
                  "--wait=false")
    assert result.returncode == 0, result.stderr
    # As in the test above, the chart's account runs out of cluster (kwok's pods run nothing), with the
    # Deployment's leader-election arguments.
    cluster.kubectl_ok("scale", "deployment", RELEASE, "-n", NAMESPACE, "--replicas=0")
    kubeconfig = service_account_kubeconfig(cluster, RELEASE, NAMESPACE, tmp_path / "operator.kubeconfig")
    args = (f"--leader-election-namespace={NAMESPACE}", f"--lease-name={RELEASE}")
    replicas = [Operator(kubeconfig, tmp_path / f"{name}.log", *args, f"--metrics-port={free_port()}")
                for name in ("first", "second")]

    def identity(operator: Operator) -> str:
        assert operator.process is not None
        return f"{socket.gethostname()}-{operator.process.pid}"  # as run-operator names itself outside a pod

    first, second = replicas
    try:
        first.start()
        wait_until("the first replica to lead", lambda: lease_holder(cluster) == identity(first))
        second.start()
        wait_until("the second replica to stand by", lambda: "is a standby" in second.log.read_text())
        first.kill()  # no release: the standby waits the Lease out, then renews it with the same Role
        wait_until("the standby to lead", lambda: lease_holder(cluster) == identity(second),
                   timeout=LEASE_SECONDS + 3 * RENEW_SECONDS)
    finally:
        for replica in replicas:
            replica.stop()
    logs = "".join(replica.log.read_text() for replica in replicas)
    assert not re.findall(r'forbidden: User "[^"]+" cannot [^\n]*', logs), logs[-3000:]


@pytest.fixture(scope="module")
def named_namespaces(cluster: LocalCluster) -> Iterator[None]:
    for namespace in NAMESPACES:
        cluster.kubectl_ok("create", "namespace", namespace)
    yield
    cluster.kubectl("delete", "namespace", *NAMESPACES, "--wait=false")


@pytest.mark.parametrize("name", sorted(VALUES))
def test_rendered_manifests_pass_the_apiservers_own_validation(cluster: LocalCluster, installed: None,
                                                               named_namespaces: None, name: str) -> None:
    rendered = helm(cluster, "template", "dryrun", str(CHART), "-n", NAMESPACE, *VALUES[name])
    assert rendered.returncode == 0, rendered.stderr
    # The Prometheus Operator's kinds are unknown to this apiserver (the cluster runs no Prometheus Operator);
    # tests/observability checks their rules with promtool and their scrape configs against a real Prometheus.
    known = [doc for doc in yaml.safe_load_all(rendered.stdout)
             if doc and not doc["apiVersion"].startswith("monitoring.coreos.com/")]
    result = cluster.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(known))
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


def chart_with_a_new_crd_field(folder: Path) -> Path:
    """The chart as its next version would be: one more optional spec field in the generated CRD."""
    chart = folder / "kubetune"
    shutil.copytree(CHART, chart)
    definition = crd.crd()
    spec = definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["team"] = {"type": "string", "maxLength": 63, "description": "team owning the job"}
    (chart / crd.CHART_TEMPLATE_PATH.removeprefix("charts/kubetune/")).write_text(crd.chart_template(definition))
    metadata = yaml.safe_load((chart / "Chart.yaml").read_text())
    (chart / "Chart.yaml").write_text(yaml.safe_dump({**metadata, "version": "0.3.0"}, sort_keys=False))
    return chart


def spec_fields(cluster: LocalCluster) -> set[str]:
    served = json.loads(cluster.kubectl_ok("get", CRD_NAME, "-o", "json"))
    return set(served["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])


def test_upgrade_changes_the_crd_schema_and_keeps_existing_finetunejobs(cluster: LocalCluster, installed: None,
                                                                        tmp_path: Path) -> None:
    cluster.kubectl("create", "namespace", "chart-upgrade")
    apply(cluster, "chart-upgrade", example("minimal"))
    assert "team" not in spec_fields(cluster)

    result = helm(cluster, "upgrade", RELEASE, str(chart_with_a_new_crd_field(tmp_path)), "-n", NAMESPACE,
                  "--wait=false")
    assert result.returncode == 0, result.stderr
    assert "team" in spec_fields(cluster)
    # The new field is served: the apiserver keeps it instead of pruning it as unknown.
    labelled = example("minimal")
    labelled["metadata"]["name"] = "labelled"
    labelled["spec"]["team"] = "search"
    apply(cluster, "chart-upgrade", labelled)
    assert cluster.kubectl_ok("get", "ftj", "labelled", "-n", "chart-upgrade", "-o",
                              "jsonpath={.spec.team}") == "search"
    assert cluster.kubectl("get", "ftj", "minimal", "-n", "chart-upgrade").returncode == 0

    # And back: the release's chart is again the schema's only source.
    result = helm(cluster, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait=false")
    assert result.returncode == 0, result.stderr
    assert "team" not in spec_fields(cluster)
    assert cluster.kubectl("get", "ftj", "minimal", "labelled", "-n", "chart-upgrade").returncode == 0
    cluster.kubectl("delete", "namespace", "chart-upgrade", "--wait=false")


def test_uninstall_leaves_no_operator_objects(cluster: LocalCluster, installed: None) -> None:
    assert helm(cluster, "uninstall", RELEASE, "-n", NAMESPACE).returncode == 0
    selector = f"app.kubernetes.io/instance={RELEASE}"
    wait_until("the operator's objects to go", lambda: not json.loads(cluster.kubectl_ok(
        "get", "deployments,serviceaccounts,roles,rolebindings", "-n", NAMESPACE, "-l", selector, "-o", "json"))["items"])
    cluster_wide = json.loads(cluster.kubectl_ok("get", "clusterroles,clusterrolebindings", "-l", selector,
                                                 "-o", "json"))["items"]
    assert not cluster_wide
    # The CRD's keep policy leaves it, and so every FineTuneJob, in place; README says how to delete it.
    kept = json.loads(cluster.kubectl_ok("get", CRD_NAME, "-o", "json"))
    assert kept["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
