"""FineTuneJob helpers shared by the operator and chart tests: the operator as a real process, examples,
and reading status, conditions and events."""

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kubetune.devcluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
KUBETUNE = str(Path(sys.executable).parent / "kubetune")


class Operator:
    """`kubetune run-operator` as a child process that a test may kill and start again."""

    def __init__(self, kubeconfig: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log = log
        self.args = args
        self.env = env or {}
        self.metrics_port = int(args[args.index("--metrics-port") + 1]) if "--metrics-port" in args else None
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBETUNE_RECONCILE_SECONDS": "1", **self.env}
        self.process = subprocess.Popen([KUBETUNE, "run-operator", *self.args], env=env, stdout=self.log.open("a"),
                                        stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def install_crd(cluster: LocalCluster) -> None:
    cluster.kubectl_ok("apply", "-f", str(ROOT / "crds"))
    cluster.kubectl_ok("wait", "--for=condition=Established", "crd/finetunejobs.kubetune.io", "--timeout=60s")


@contextmanager
def operator_running(cluster: LocalCluster, folder: Path, *args: str,
                     env: dict[str, str] | None = None) -> Iterator[Operator]:
    """The CRD installed and the operator running for the block; its log's tail is printed afterwards."""
    install_crd(cluster)
    running = Operator(cluster.kubeconfig, folder / "operator.log", *args, env=env)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(running.log.read_text()[-5000:])


@contextmanager
def temporary_namespace(cluster: LocalCluster, prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    cluster.kubectl_ok("create", "namespace", name)
    try:
        yield name
    finally:
        cluster.kubectl("delete", "namespace", name, "--wait=false")


def get(cluster: LocalCluster, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = cluster.kubectl("get", "-n", namespace, kind, name, "-o", "json")
    return json.loads(result.stdout) if result.returncode == 0 else None


def trainer_pods(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    """A FineTuneJob's training pods, of every attempt."""
    return json.loads(cluster.kubectl_ok("get", "pods", "-n", namespace, "-l", f"kubetune.io/finetunejob={name}",
                                         "-o", "json"))["items"]


def in_phase(cluster: LocalCluster, namespace: str, name: str, *phases: str) -> Callable[[], dict | None]:
    def check() -> dict | None:
        ftj = get(cluster, namespace, "ftj", name)
        return ftj if ftj and ftj.get("status", {}).get("phase") in phases else None
    return check


def apply(cluster: LocalCluster, namespace: str, manifest: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    # JSON, not YAML: PyYAML writes '2e-4' unquoted, which the apiserver's YAML 1.2 reads as a number.
    return cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())


def events(cluster: LocalCluster, namespace: str, name: str) -> list[dict[str, Any]]:
    out = cluster.kubectl_ok("get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}",
                             "-o", "json")
    return json.loads(out)["items"]


def condition(ftj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(c for c in ftj["status"]["conditions"] if c["type"] == kind)


KWOK_FAILURE = "pod-container-running-failed.stage.kwok.x-k8s.io"


def failing(name: str, exit_code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    """The minimal example, with pod metadata that makes kwok fail its training pods as chosen. kwok writes
    the message into YAML unquoted, so it may not contain ': '."""
    assert ": " not in message
    manifest = example("minimal")
    manifest["metadata"]["name"] = name
    annotations = {f"{KWOK_FAILURE}/exit-code": str(exit_code), f"{KWOK_FAILURE}/reason": reason}
    if message:
        annotations[f"{KWOK_FAILURE}/message"] = message
    manifest["spec"]["podMetadata"] = {"labels": {KWOK_FAILURE: "true"}, "annotations": annotations}
    return manifest
