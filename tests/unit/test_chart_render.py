"""The chart lints clean, refuses unknown or wrong values, and renders least-privilege RBAC in both modes, all
through the helm that hack/build-bins.sh builds (the schema's GPU ids are checked in test_gpu_catalog.py)."""

import json
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from kubetune.api import crd
from kubetune.devcluster import binaries
from kubetune.resources import names
from tests.chart_values import VALUES

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubetune"

pytestmark = pytest.mark.tools


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.built("helm")), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def render(*sets: str) -> list[dict]:
    result = helm("template", "kt", str(CHART), "-n", "ops", *[f"--set={s}" for s in sets])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.mark.parametrize("name", sorted(VALUES))
def test_lint_is_clean(name: str) -> None:
    result = helm("lint", "--strict", str(CHART), *VALUES[name])
    assert result.returncode == 0, result.stdout + result.stderr


def test_chart_yaml_says_where_it_comes_from_with_an_icon_the_repository_holds() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert metadata["home"] in metadata["sources"] and metadata["maintainers"] and metadata["kubeVersion"]
    icon = re.fullmatch(rf"https://raw\.githubusercontent\.com/{re.escape(metadata['home'].removeprefix('https://github.com/'))}"
                        r"/main/(?P<path>.+)", metadata["icon"])
    assert icon and (CHART.parents[1] / icon["path"]).is_file(), metadata["icon"]


def test_package_is_an_archive_that_renders_as_the_chart_does(tmp_path: Path) -> None:
    result = helm("package", str(CHART), "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    version = yaml.safe_load((CHART / "Chart.yaml").read_text())["version"]
    archive = tmp_path / f"kubetune-{version}.tgz"
    assert archive.is_file()
    with tarfile.open(archive) as packed:
        files = set(packed.getnames())
    assert {"kubetune/README.md", "kubetune/values.schema.json", "kubetune/templates/crd.yaml"} <= files
    assert "kubetune/README.template.md" not in files
    for sets in (VALUES["defaults"], VALUES["standbys"]):
        packaged = helm("template", "kt", str(archive), "-n", "ops", *sets)
        unpacked = helm("template", "kt", str(CHART), "-n", "ops", *sets)
        assert packaged.returncode == 0 and packaged.stdout == unpacked.stdout


def test_the_pod_names_kopf_itself_so_kopf_needs_no_passwd_entry_for_the_images_uid() -> None:
    container = by_kind(render(), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_standbys_get_a_disruption_budget_that_keeps_one_replica() -> None:
    assert not by_kind(render(), "PodDisruptionBudget")
    docs = render("operator.replicas=2")
    budget = by_kind(docs, "PodDisruptionBudget")[0]
    pods = by_kind(docs, "Deployment")[0]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["minAvailable"] == 1 and budget["metadata"]["namespace"] == "ops"
    assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()


def test_wrong_values_fail_with_the_schemas_message() -> None:
    unknown = helm("template", "kt", str(CHART), "--set", "operator.replicaz=2")
    assert unknown.returncode != 0 and "additional properties 'replicaz' not allowed" in unknown.stderr
    wrong = helm("template", "kt", str(CHART), "--set", "operator.reconcileSeconds=0")
    assert wrong.returncode != 0 and "reconcileSeconds" in wrong.stderr


def operators(docs: list[dict], kind: str) -> list[dict]:
    """The roles bound to the operator's ServiceAccount (not those aggregated into users' roles)."""
    bound = {doc["roleRef"]["name"] for doc in docs if doc["kind"] == f"{kind}Binding"}
    return [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] in bound]


def test_cluster_wide_mode_writes_only_its_own_kinds() -> None:
    docs = render()
    writes = [rule for doc in operators(docs, "ClusterRole") for rule in doc["rules"]
              if set(rule["verbs"]) - {"get", "list", "watch"}]
    resources = {r for rule in writes for r in rule["resources"]}
    # workloads: a queued job's suspension goes through its Kueue Workload (spec.active).
    assert resources == {"finetunejobs", "finetunejobs/status", "events", "jobs", "configmaps", "services", "workloads"}
    assert not any("*" in rule["verbs"] for rule in writes)
    # The only deletes: a failed attempt's Job, which the next attempt replaces, and the ConfigMap of an earlier
    # plan, which a content-named ConfigMap replaces; a ConfigMap is never changed in place.
    assert [rule["resources"] for rule in writes if "delete" in rule["verbs"]] == [["jobs"], ["configmaps"]]
    assert [rule["verbs"] for rule in writes if rule["resources"] == ["configmaps"]] == [["get", "create", "delete"]]
    assert not any("secrets" in rule["resources"] for doc in docs if "rules" in doc for rule in doc["rules"])


def test_namespaced_mode_grants_writes_through_roles_in_those_namespaces_only() -> None:
    docs = render("operator.watchNamespaces={team-a,team-b}")
    roles = [doc for doc in docs if doc["kind"] == "Role"]
    assert {role["metadata"]["namespace"] for role in roles} == {"team-a", "team-b"}
    cluster_roles = operators(docs, "ClusterRole")
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for doc in cluster_roles for rule in doc["rules"])
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    assert "--namespace=team-a" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


@pytest.mark.parametrize("sets", [(), ("operator.watchNamespaces={team-a}",)])
def test_users_of_the_built_in_roles_get_finetunejobs_and_only_read_their_status(sets: tuple[str, ...]) -> None:
    docs = render(*sets)
    bound = {doc["roleRef"]["name"] for doc in docs if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    aggregated = {label.rsplit("-", 1)[1]: doc for doc in by_kind(docs, "ClusterRole")
                  for label, value in doc["metadata"]["labels"].items()
                  if label.startswith("rbac.authorization.k8s.io/aggregate-to-") and value == "true"}
    assert set(aggregated) == {"admin", "edit", "view"}
    assert not {doc["metadata"]["name"] for doc in aggregated.values()} & bound  # no subject of their own

    def verbs(role: dict, resource: str) -> set[str]:
        return {verb for rule in role["rules"] if resource in rule["resources"] for verb in rule["verbs"]}

    for role in ("admin", "edit"):
        assert {"create", "update", "patch", "delete", "get", "list", "watch"} <= verbs(aggregated[role], "finetunejobs")
        assert verbs(aggregated[role], "finetunejobs/status") == {"get", "list", "watch"}
    assert verbs(aggregated["view"], "finetunejobs") == verbs(aggregated["view"], "finetunejobs/status") == {
        "get", "list", "watch"}


def test_the_crd_is_a_template_that_upgrades_with_the_release_and_stays_on_uninstall() -> None:
    """In crds/ Helm would install it once and never upgrade it; as a template `helm upgrade` applies a new
    schema, and the keep policy leaves it (and every FineTuneJob) in place on `helm uninstall`."""
    definitions = by_kind(render(), "CustomResourceDefinition")
    assert len(definitions) == 1 and definitions[0]["spec"] == crd.crd()["spec"]
    assert definitions[0]["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert definitions[0]["metadata"]["labels"]["app.kubernetes.io/instance"] == "kt"
    assert not by_kind(render("crds.enabled=false"), "CustomResourceDefinition")
    assert not (CHART / "crds").exists()  # Helm would install the CRD from there too


def test_monitoring_pieces_are_off_by_default_and_scrape_what_the_operator_and_trainers_serve() -> None:
    
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & {doc["kind"] for doc in render()}
    docs = render("monitoring.serviceMonitor.enabled=true", "monitoring.podMonitor.enabled=true",
                  "monitoring.prometheusRule.enabled=true", "monitoring.labels.release=prom")
    service = next(d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "kt-kubetune-metrics")
    deployment = by_kind(docs, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 8081} in container["ports"]
    assert "--metrics-port=8081" in container["args"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    monitor = by_kind(docs, "ServiceMonitor")[0]
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics" and monitor["spec"]["endpoints"][0]["honorLabels"]

    pods = by_kind(docs, "PodMonitor")[0]["spec"]
    assert pods["selector"]["matchLabels"].items() <= names.labels("any", "trainer").items()
    keep = pods["podMetricsEndpoints"][0]["relabelings"][0]
    ports = [f"metrics-{i}" for i in range(1, 8)] + ["metrics"]
    assert all(re.fullmatch(keep["regex"], port) for port in ports) and not re.fullmatch(keep["regex"], "rendezvous")
    assert pods["namespaceSelector"] == {"any": True}
    scoped = by_kind(render("monitoring.podMonitor.enabled=true", "operator.watchNamespaces={a,b}"), "PodMonitor")
    assert scoped[0]["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_dashboards_are_configmaps_for_the_grafana_sidecar_with_the_generated_json() -> None:
    assert not by_kind(render(), "ConfigMap")
    maps = by_kind(render("grafana.dashboards.enabled=true"), "ConfigMap")
    files = sorted((CHART / "dashboards").glob("*.json"))
    assert len(maps) == len(files) == 2
    for config_map, path in zip(sorted(maps, key=lambda m: m["metadata"]["name"]), files, strict=True):
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["annotations"]["grafana_folder"] == "kubetune"
        assert json.loads(config_map["data"][path.name]) == json.loads(path.read_text())


def test_gpu_prices_reach_the_operator_and_unknown_gpu_ids_are_refused() -> None:
    result = helm("template", "kt", str(CHART), "--set-json", 'operator.gpuPrices={"L4-24GB": 0.45}')
    assert result.returncode == 0, result.stderr
    deployment = by_kind([d for d in yaml.safe_load_all(result.stdout) if d], "Deployment")[0]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert json.loads(env["KUBETUNE_GPU_PRICES"]) == {"L4-24GB": 0.45}
    typo = helm("template", "kt", str(CHART), "--set-json", 'operator.gpuPrices={"L4": 0.45}')
    assert typo.returncode != 0 and "L4-24GB" in typo.stderr


def test_two_replicas_elect_a_leader_on_a_lease_only_they_may_write() -> None:
    single = render()
    assert not [r for r in by_kind(single, "Role") if "leader" in r["metadata"]["name"]]
    assert by_kind(single, "Deployment")[0]["spec"]["strategy"] == {"type": "Recreate"}
    docs = render("operator.replicas=2")
    deployment = by_kind(docs, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 2 and "strategy" not in deployment["spec"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"--leader-election-namespace=ops", "--lease-name=kt-kubetune"} <= set(container["args"])
    assert container["readinessProbe"]["httpGet"]["port"] == "metrics"
    role = next(r for r in by_kind(docs, "Role") if "leader" in r["metadata"]["name"])
    assert role["metadata"]["namespace"] == "ops"
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["kt-kubetune"],
         "verbs": ["get", "update"]},
    ]
