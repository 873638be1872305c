"""`kubectl kubetune` without a cluster: the kubeconfig resolved as kubectl resolves it, the plan and a job
rendered, the operator's configuration read from its Deployment, the errors a user meets before any cluster
answers, and the krew manifest (fresh, naming the executable the package installs, at the package's version)."""

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from rich.console import Console, RenderableType

from kubetune.api import v1alpha1 as api
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import ConfigError
from kubetune.devcluster import profile
from kubetune.planner import decision, report
from kubetune.plugin import facts, render
from kubetune.plugin.kubeconfig import KubeconfigProblem, resolve

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(sys.executable).parent / "kubectl-kubetune")
KREW = ROOT / "hack" / "krew"


def text(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined]


def bar_rows(out: str) -> dict[str, str]:
    """The rows of a table's output that draw a bar, by their first cell."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.split("│") if c.strip()]
        if cells and any(mark in line for mark in "█▏▎▍▌▋▊▉"):
            rows[cells[0]] = line
    return rows


def kubeconfig(path: Path, current: str | None, contexts: dict[str, str | None], server: str = "https://127.0.0.1:1") -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", **({"current-context": current} if current else {}),
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": "c", "user": "u", **({"namespace": ns} if ns else {})}}
                     for name, ns in contexts.items()]}))
    return str(path)


def test_kubeconfig_resolves_as_kubectl_does(tmp_path: Path) -> None:
    first = kubeconfig(tmp_path / "a", "team", {"team": "team-a"})
    second = kubeconfig(tmp_path / "b", "other", {"other": None, "team": "shadowed"})
    listed = {"KUBECONFIG": os.pathsep.join([first, str(tmp_path / "absent"), second])}
    # The first file that sets a current context wins, and the first that defines a context's name.
    assert resolve(None, None, None, listed).context == "team"
    assert resolve(None, None, None, listed).namespace == "team-a"
    assert resolve(None, "other", None, listed).namespace == "default"
    assert resolve(None, None, "mine", listed).namespace == "mine"
    assert resolve(second, None, None, listed).context == "other"  # --kubeconfig over KUBECONFIG
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    kubeconfig(home / ".kube" / "config", "team", {"team": "from-home"})
    assert resolve(None, None, None, {"HOME": str(home)}).namespace == "from-home"


@pytest.mark.parametrize(("current", "context", "error"), [
    (None, None, "no current context"),
    ("team", "gone", "context 'gone' is not in"),
])
def test_kubeconfig_problems_say_what_to_do(tmp_path: Path, current: str | None, context: str | None,
                                            error: str) -> None:
    path = kubeconfig(tmp_path / "config", current, {"team": None})
    with pytest.raises(KubeconfigProblem, match=error):
        resolve(path, context, None, {})
    with pytest.raises(KubeconfigProblem, match="no kubeconfig"):
        resolve(None, None, None, {"HOME": str(tmp_path / "nobody")})


def _plan() -> api.Plan:
    spec = api.FineTuneJobSpec.model_validate(yaml.safe_load((ROOT / "examples" / "minimal.yaml").read_text())["spec"])
    decided = decision.decide(spec, node_groups(profile.load("default").node_manifests(), []))
    assert decided.plan is not None
    return decided.plan


def test_the_plan_shows_the_choice_the_runners_up_and_the_breakdown_as_bars() -> None:
    plan = _plan()
    out = text(render.plan_view(plan, "default/minimal"))
    assert decision.summary(plan) in out
    for runner_up in plan.runners_up:
        assert runner_up.why_not_chosen in out
    assert {"weights", "optimizer states", "predicted peak", "GPU capacity"} <= bar_rows(out).keys()
    assert plan.explanation[0] in out


def test_bars_share_one_scale_the_largest_filling_the_width() -> None:
    memory = _plan().memory
    table = report.memory_bars(memory, memory.total_bytes // 2, "t", [("measured", memory.total_bytes * 2)])
    lines = bar_rows(text(table))
    assert lines["measured"].count("█") == report.BAR_WIDTH
    assert lines["predicted peak"].count("█") == report.BAR_WIDTH // 2
    assert lines["GPU capacity"].count("█") == report.BAR_WIDTH // 4
    assert report.bar(1, 800, width=10) == ""  # under a sixteenth of a character: nothing drawn
    assert report.bar(12, 80, width=10) == "█▌"  # to an eighth of a character


def _event(reason: str, seen: str) -> dict[str, Any]:
    return {"metadata": {"name": reason}, "type": "Normal", "reason": reason, "message": f"{reason} happened",
            "lastTimestamp": seen, "count": 1}


def test_a_job_shows_progress_measured_memory_attempts_conditions_and_the_latest_events() -> None:
    plan = _plan()
    status = {
        "phase": "Running", "plan": plan.model_dump(mode="json", by_alias=True, exclude_none=True),
        "progress": {"step": 50, "totalSteps": 200, "etaSeconds": 125, "summary": "50/200"},
        "attempts": [{"number": 1, "reason": "GPUOutOfMemory", "message": "kubetune-oom", "planSummary": "before",
                      "predictedPeakBytes": 20 * 1024**3, "measuredPeakBytes": 23 * 1024**3,
                      "action": "replanned for 1.15x the predicted memory", "finishedAt": "2026-01-01T00:00:00Z"}],
        "conditions": [{"type": "Running", "status": "True", "reason": "Running", "message": "2 pods training",
                        "lastTransitionTime": "2026-01-01T00:01:00Z"}],
    }
    ftj = {"metadata": {"name": "j", "namespace": "ns"}, "spec": {"model": {"name": "Qwen/Qwen2.5-0.5B"}},
           "status": status}
    events = [_event(f"E{i:02d}", f"2026-01-01T00:{i:02d}:00Z") for i in range(12)]
    out = text(render.job_view(ftj, events, live_peak_bytes=plan.memory.total_bytes + 1024**3))
    assert "ns/j" in out and "Running" in out and "step 50/200 (25%), about 2 min 5 s to go" in out
    assert "measured peak, rank 0" in out and f"{(plan.memory.total_bytes + 1024**3) / 1024**3:.2f}" in out
    assert "20.0 GiB" in out and "23.0 GiB" in out and "replanned for 1.15x" in out
    assert "2 pods training" in out
    assert "E11" in out and "E02" in out and "E01" not in out  # the last ten, by time


def test_a_job_without_a_plan_says_so() -> None:
    out = text(render.job_view({"metadata": {"name": "j", "namespace": "ns"}, "spec": {}}, [], None))
    assert "Pending" in out and "no plan yet" in out and "no steps yet" in out


def test_admission_warnings_read_as_kubectl_prints_them() -> None:
    assert render.warning_text('299 - "spec.output.claimName is not set: checkpoints \\"go\\""') == \
        'spec.output.claimName is not set: checkpoints "go"'
    assert render.warning_text("plain") == "plain"


def _deployment(env: list[dict[str, Any]], args: list[str] | None = None) -> dict[str, Any]:
    operator = {"name": "operator", "env": env, "args": args or ["run-operator"]}
    return {"metadata": {"name": "kubetune", "namespace": "kubetune-system"},
            "spec": {"template": {"spec": {"containers": [{"name": "sidecar"}, operator]}}}}


def test_the_operators_configuration_comes_from_its_deployment() -> None:
    pools = [{"gpuType": "H100-SXM-80GB", "gpusPerNode": 8, "maxNodes": 4, "cpu": "190", "memory": "2000Gi"}]
    settings = facts.settings_from_deployment(_deployment([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "KUBETUNE_GPU_PRICES", "value": json.dumps({"L4-24GB": 0.5})},
        {"name": "KUBETUNE_AUTOSCALED_GPU_POOLS", "value": json.dumps(pools)}],
        ["run-operator", "--metrics-port=8000", "--namespace=team-a", "--namespace=team-b"]))
    assert settings.config.gpu_prices == {"L4-24GB": 0.5}
    assert settings.config.namespaces == ("team-a", "team-b")
    assert [p.max_nodes for p in settings.config.autoscaled_pools] == [4]
    assert "kubetune-system/kubetune" in settings.source
    with pytest.raises(ConfigError, match="kubetune-system/kubetune.*KUBETUNE_GPU_PRICES"):
        facts.settings_from_deployment(_deployment([{"name": "KUBETUNE_GPU_PRICES", "value": "{"}]))


def test_rank_zeros_peak_is_read_from_its_metrics_page() -> None:
    registry = CollectorRegistry()
    Gauge(facts.PEAK_SERIES, "peak", ["rank"], registry=registry).labels(rank="0").set(3 * 1024**3)
    assert facts.peak_from_metrics(generate_latest(registry).decode()) == 3 * 1024**3
    assert facts.peak_from_metrics("not { prometheus") is None
    assert facts.peak_from_metrics("") is None


def _run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PLUGIN, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False,
                          env={**os.environ, **(env or {})})


def test_an_unreachable_cluster_is_named_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    path = kubeconfig(tmp_path / "config", "team", {"team": None}, server=f"https://127.0.0.1:{port}")
    for args in (["describe", "j"], ["plan", "-f", str(ROOT / "examples" / "minimal.yaml")]):
        result = _run(*args, "--kubeconfig", path)
        assert result.returncode == 1, result
        assert f"cannot reach the cluster at https://127.0.0.1:{port} (context 'team')" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_file_that_is_no_finetunejob_is_refused_before_any_cluster(tmp_path: Path) -> None:
    env = {"KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)}
    result = _run("plan", "-f", "-", stdin=yaml.safe_dump({"kind": "Pod"}), env=env)
    assert result.returncode == 2 and "expected one FineTuneJob, found Pod" in result.stderr
    result = _run("plan", "-f", "-", stdin="a: [", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = _run("plan", "-f", str(ROOT / "examples" / "minimal.yaml"), env=env)
    assert result.returncode == 1 and "no kubeconfig" in result.stderr


def test_the_krew_manifest_is_fresh_and_names_the_installed_executable_at_the_packages_version() -> None:
    assert subprocess.run([sys.executable, str(KREW / "release.py"), "--check"], check=False).returncode == 0
    manifest = yaml.safe_load((KREW / "kubetune.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert (manifest["apiVersion"], manifest["kind"]) == ("krew.googlecontainertools.github.com/v1alpha2", "Plugin")
    # krew names the executable kubectl-<plugin name>; the package installs it under that name.
    assert f"kubectl-{manifest['metadata']['name']}" in project["scripts"]
    assert manifest["spec"]["version"] == f"v{project['version']}"
    assert manifest["spec"]["shortDescription"] and manifest["spec"]["homepage"].startswith("https://")
    for platform in manifest["spec"]["platforms"]:
        assert platform["bin"] == f"kubectl-{manifest['metadata']['name']}"
        assert platform["uri"].startswith("https://") and platform["uri"].endswith(
            f"/v{project['version']}/kubectl-kubetune-v{project['version']}.tar.gz")
        assert platform["selector"]["matchExpressions"]
        sys.path.insert(0, str(KREW))
        try:
            import release  # noqa: PLC0415 - hack/ is no package
        finally:
            sys.path.remove(str(KREW))
        built = release.archive()
        assert platform["sha256"] == hashlib.sha256(built).hexdigest()
        with tarfile.open(fileobj=io.BytesIO(built)) as tar:
            entry = tar.getmember(platform["bin"])
            assert entry.mode & 0o111 and {f["from"] for f in platform["files"]} == {platform["bin"]}


def test_the_krew_launcher_runs_the_installed_plugin() -> None:
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}/usr/bin:/bin"}
    result = subprocess.run(["/bin/sh", str(KREW / "kubectl-kubetune"), "--help"], capture_output=True, text=True,
                            timeout=60, check=False, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "Usage: kubectl kubetune" in result.stdout  # as kubectl users type it
    assert "plan" in result.stdout and "describe" in result.stdout
    missing = subprocess.run(["/bin/sh", str(KREW / "kubectl-kubetune")], capture_output=True, text=True, timeout=60,
                             check=False, env={"PATH": "/nonexistent"})
    assert missing.returncode == 1 and "pip install kubetune" in missing.stderr
