"""The chart lints clean, refuses unknown or wrong values, and renders least-privilege RBAC in both modes."""

import subprocess
from pathlib import Path

import yaml

from kubetune.devcluster import binaries

CHART = Path(__file__).resolve().parents[2] / "charts" / "kubetune"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binaries.built("helm")), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def render(*sets: str) -> list[dict]:
    result = helm("template", "kt", str(CHART), "-n", "ops", *[f"--set={s}" for s in sets])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def test_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr


def test_wrong_values_fail_with_the_schemas_message() -> None:
    unknown = helm("template", "kt", str(CHART), "--set", "operator.replicaz=2")
    assert unknown.returncode != 0 and "additional properties 'replicaz' not allowed" in unknown.stderr
    wrong = helm("template", "kt", str(CHART), "--set", "operator.reconcileSeconds=0")
    assert wrong.returncode != 0 and "reconcileSeconds" in wrong.stderr


def test_cluster_wide_mode_writes_only_its_own_kinds() -> None:
    docs = render()
    writes = [rule for doc in docs if doc["kind"] == "ClusterRole" for rule in doc["rules"]
              if set(rule["verbs"]) - {"get", "list", "watch"}]
    resources = {r for rule in writes for r in rule["resources"]}
    assert resources == {"finetunejobs", "finetunejobs/status", "events", "jobs", "configmaps", "services"}
    assert not any("delete" in rule["verbs"] or "*" in rule["verbs"] for rule in writes)
    assert not any("secrets" in rule["resources"] for doc in docs if "rules" in doc for rule in doc["rules"])


def test_namespaced_mode_grants_writes_through_roles_in_those_namespaces_only() -> None:
    docs = render("operator.watchNamespaces={team-a,team-b}")
    roles = [doc for doc in docs if doc["kind"] == "Role"]
    assert {role["metadata"]["namespace"] for role in roles} == {"team-a", "team-b"}
    cluster_roles = [doc for doc in docs if doc["kind"] == "ClusterRole"]
    assert all(set(rule["verbs"]) <= {"get", "list", "watch"} for doc in cluster_roles for rule in doc["rules"])
    deployment = next(doc for doc in docs if doc["kind"] == "Deployment")
    assert "--namespace=team-a" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
