"""A real Kueue beside the local cluster: the manager built from its Go module by hack/build-bins.sh, run on the
host with the cluster's admin credentials (as the cluster's own controllers are), its CRDs and webhooks taken
from the same module's config. The apiserver reaches the webhooks on loopback, by URL, with a certificate the
cluster's CA signed; Kueue's own certificate management (made for a Service in a pod) is off.

Only what kubetune meets is switched on: the batch/v1 Job integration, for Jobs that name a queue."""

import base64
import shutil
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune.devcluster import binaries, host, pki

NAMESPACE = "kueue-system"
HOST = "127.0.0.1"
# The webhooks kubetune's Jobs and a queue admin's objects pass through; the other integrations stay off.
WEBHOOK_GROUPS = frozenset({"kueue.x-k8s.io", "batch"})
READY_TIMEOUT_SECONDS = 120
# Without its own certificate management Kueue reads its metrics server's certificate from this fixed path,
# and exits when none is there (its metrics are off here: the files only let it start).
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
# The configurations are named for their owner: the module's generic names would clash with another manager's.
CONFIGURATION_NAMES = {"MutatingWebhookConfiguration": "kueue-mutating-webhook-configuration",
                       "ValidatingWebhookConfiguration": "kueue-validating-webhook-configuration"}


class KueueError(RuntimeError):
    """Kueue could not be started beside the local cluster."""


@dataclass(frozen=True)
class Kueue:
    """One Kueue manager whose state (config, certificate, pid, log) lives under `state_dir`."""

    state_dir: Path
    kubeconfig: Path
    ca: pki.KeyPair
    kubectl: Callable[..., Any]

    @property
    def log(self) -> Path:
        return self.state_dir / "logs" / "kueue.log"

    def up(self) -> None:
        """Install Kueue's CRDs and webhooks and start its manager; return once it admits workloads. Replaces a
        Kueue this folder started before."""
        self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        serving = pki.sign_server(self.ca, self.state_dir / "certs", "tls", HOST)
        METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
        for pem in (serving.cert, serving.key):
            shutil.copy(pem, METRICS_CERT_DIR / pem.name)
        webhook_port, health_port = _free_port(), _free_port()
        ca_bundle = base64.b64encode(self.ca.cert.read_bytes()).decode()
        definitions = crds(binaries.kueue_config_dir(), f"https://{HOST}:{webhook_port}", ca_bundle)
        self._apply(definitions, server_side=True)
        # Kueue's manager exits at once when its APIs are not served yet.
        established = self.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                                   *(f"crd/{crd['metadata']['name']}" for crd in definitions))
        if established.returncode != 0:
            raise KueueError(f"Kueue's CRDs were not established: {established.stderr.strip()}")
        self._apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        config = self.state_dir / "config.yaml"
        config.write_text(yaml.safe_dump(configuration(webhook_port, health_port, serving.cert.parent)))
        host.start("kueue", [str(binaries.built("kueue")), f"--config={config}"],
                   self.state_dir / "pids", self.state_dir / "logs", env={"KUBECONFIG": str(self.kubeconfig)})
        host.wait_for("Kueue's manager to be ready", lambda: self._ready(health_port), READY_TIMEOUT_SECONDS,
                      KueueError)
        # Registered only once something serves them: a webhook that fails closed blocks every Job until then.
        self._apply(webhooks(binaries.kueue_config_dir(), f"https://{HOST}:{webhook_port}", ca_bundle))

    def down(self) -> None:
        """Remove Kueue's webhooks (they fail closed: left behind, they would refuse every Job) and stop its
        manager; its CRDs and objects stay. A no-op when nothing is there."""
        for kind, name in CONFIGURATION_NAMES.items():
            self.kubectl("delete", kind.lower(), name, "--ignore-not-found")
        self.stop()

    def stop(self) -> None:
        """Stop the manager alone: for a cluster that goes down with it."""
        host.stop_recorded(self.state_dir / "pids", "kueue", str(self.state_dir))
        for pem in ("tls.crt", "tls.key"):  # ours only: another cluster's Kueue may have put its own there
            ours, there = self.state_dir / "certs" / pem, METRICS_CERT_DIR / pem
            if ours.exists() and there.exists() and ours.read_bytes() == there.read_bytes():
                there.unlink()

    def _apply(self, documents: list[dict[str, Any]], server_side: bool = False) -> None:
        # Kueue's CRDs exceed the annotation a client-side apply keeps.
        flags = ["--server-side", "--force-conflicts"] if server_side else []
        result = self.kubectl("apply", *flags, "-f", "-", stdin=yaml.safe_dump_all(documents))
        if result.returncode != 0:
            raise KueueError(f"applying Kueue's objects failed: {result.stderr.strip()}")

    def _ready(self, health_port: int) -> bool:
        if not _serving(f"http://{HOST}:{health_port}/readyz"):
            # Whether it lives, not what it runs: a process just forked may show no command line yet.
            if not host.alive(int((self.state_dir / "pids" / "kueue.pid").read_text())):
                raise KueueError(f"Kueue's manager exited; its log {self.log} ends:\n{_tail(self.log)}")
            return False
        return True


def configuration(webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's manager configuration: one instance, on loopback, managing only Jobs that name a queue."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
        "namespace": NAMESPACE,
        "manageJobsWithoutQueueName": False,
        "internalCertManagement": {"enable": False},
        "webhook": {"host": HOST, "port": webhook_port, "certDir": str(cert_dir)},
        "health": {"healthProbeBindAddress": f"{HOST}:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "leaderElection": {"leaderElect": False},
        "integrations": {"frameworks": ["batch/job"]},
        # Its on-demand visibility API is an aggregated apiserver of its own, with a port on every interface.
        "featureGates": {"VisibilityOnDemand": False},
    }


def crds(config_dir: Path, webhook_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's CRDs, each with the conversion webhook its kustomization gives it, served at `webhook_url`."""
    kustomization = yaml.safe_load((config_dir / "crd" / "kustomization.yaml").read_text())
    converted = {yaml.safe_load((config_dir / "crd" / patch["path"]).read_text())["metadata"]["name"]
                 for patch in kustomization.get("patches", []) if "webhook_in_" in patch["path"]}
    documents = []
    for path in kustomization["resources"]:
        crd = yaml.safe_load((config_dir / "crd" / path).read_text())
        if crd["metadata"]["name"] in converted:
            crd["spec"]["conversion"] = {"strategy": "Webhook", "webhook": {
                "clientConfig": {"url": f"{webhook_url}/convert", "caBundle": ca_bundle},
                "conversionReviewVersions": ["v1"]}}
        documents.append(crd)
    return documents


def webhooks(config_dir: Path, webhook_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's admission webhooks for its own objects and for Jobs, served at `webhook_url`."""
    documents = []
    for document in yaml.safe_load_all((config_dir / "webhook" / "manifests.yaml").read_text()):
        if not document:
            continue
        kept = [hook for hook in document["webhooks"]
                if any(set(rule["apiGroups"]) & WEBHOOK_GROUPS for rule in hook["rules"])]
        for hook in kept:
            path = hook["clientConfig"]["service"]["path"]
            hook["clientConfig"] = {"url": f"{webhook_url}{path}", "caBundle": ca_bundle}
        document["metadata"]["name"] = CONFIGURATION_NAMES[document["kind"]]
        document["webhooks"] = kept
        documents.append(document)
    return documents


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"
