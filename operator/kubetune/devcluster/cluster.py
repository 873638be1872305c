"""Start and stop a local cluster with kwokctl's binary runtime, every component bound to 127.0.0.1."""

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from kubetune.devcluster import binaries, host, pki
from kubetune.devcluster.host import HostError
from kubetune.devcluster.kueue import Kueue, KueueError
from kubetune.devcluster.node import NodeError, RealNode
from kubetune.devcluster.profile import FAKE_NODE_ANNOTATION, ClusterProfile
from kubetune.devcluster.trainer_image import TrainerImageError

# kwok's own stages, from its module (copied by hack/build-bins.sh). A config that declares any Stage
# replaces all of kwok's defaults, so the defaults we rely on are listed here explicitly.
DEFAULT_STAGES = (
    "node/fast/node-initialize.yaml",
    # kube-controller-manager marks a node NotReady after 40 s without a lease renewal.
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
    # A pod labelled pod-container-running-failed.stage.kwok.x-k8s.io=true fails with the exit code and
    # message named in that prefix's annotations (exit-code, reason, message).
    "pod/chaos/pod-container-running-failed.yaml",
)

# Pods of Jobs in this namespace run until deleted instead of completing at once, for what needs a
# training run in progress: live metrics, node loss mid-run, dashboards with running jobs.
LONG_RUNNING_NAMESPACE = "kubetune-long-running"

# A pod labelled WAITING_LABEL never starts: its containers wait with the reason and message in its
# WAITING_LABEL/reason and WAITING_LABEL/message annotations, as the kubelet reports a missing Secret or an
# image it cannot pull (kwok resolves neither).
WAITING_LABEL = "waiting.kubetune.io"

START_TIMEOUT_SECONDS = 180


class ClusterError(RuntimeError):
    """The local cluster could not be started, reached or stopped."""


@dataclass(frozen=True)
class LocalCluster:
    """One named kwokctl cluster whose state lives under ``state_dir`` (never in ~/.kwok)."""

    name: str
    state_dir: Path

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    @property
    def workdir(self) -> Path:
        return self.state_dir / "kwok"

    @property
    def cluster_dir(self) -> Path:
        return self.workdir / "clusters" / self.name

    @property
    def node(self) -> RealNode:
        return RealNode(self.name, self.state_dir, self.cluster_dir, self.kubectl)

    @property
    def kueue(self) -> Kueue:
        ca = pki.KeyPair(self.cluster_dir / "pki" / "ca.crt", self.cluster_dir / "pki" / "ca.key")
        return Kueue(self.state_dir / "kueue", self.kubeconfig, ca, self.kubectl)

    def kwokctl(self, *args: str, timeout: float = START_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KWOK_WORKDIR=str(self.workdir), KWOK_RUNTIME="binary")
        return subprocess.run(
            [str(binaries.built("kwokctl")), *args, "--name", self.name],
            env=env, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binaries.kubectl()), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        )

    def kubectl_ok(self, *args: str, stdin: str | None = None, timeout: float = 60) -> str:
        result = self.kubectl(*args, stdin=stdin, timeout=timeout)
        if result.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def is_running(self) -> bool:
        return self.kubeconfig.exists() and self.kubectl("get", "--raw", "/readyz", timeout=10).returncode == 0

    def up(self, profile: ClusterProfile, kueue: bool = False) -> None:
        """Start the cluster (replacing any earlier one of the same name), register the profile's nodes, and
        start Kueue beside it when asked."""
        missing = binaries.missing()
        if missing:
            raise ClusterError(f"binaries not built yet: {', '.join(missing)}; run hack/build-bins.sh first")
        if profile.real_node is not None:
            try:
                RealNode.check()
            except NodeError as error:
                raise ClusterError(str(error)) from error
        self.down()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "kwok.yaml"
        config.write_text(self._config())
        result = self.kwokctl(
            "create", "cluster",
            "--config", str(config),
            "--kubeconfig", str(self.kubeconfig),
            "--etcd-binary", str(binaries.built("etcd")),
            "--kube-apiserver-binary", str(binaries.built("kube-apiserver")),
            "--kube-controller-manager-binary", str(binaries.built("kube-controller-manager")),
            "--kube-scheduler-binary", str(binaries.built("kube-scheduler")),
            "--kwok-controller-binary", str(binaries.built("kwok")),
            "--kube-authorization=true",
            # Advertise loopback (a sandbox may have no default route to pick an address from); the
            # endpoint reconciler refuses loopback addresses, and nothing here needs the in-cluster
            # `kubernetes` Service endpoints, so it is turned off.
            "--extra-args", "kube-apiserver=advertise-address=127.0.0.1",
            "--extra-args", "kube-apiserver=endpoint-reconciler-type=none",
            # Logs, exec and port-forward reach a real kubelet as on a production cluster: the apiserver shows a
            # client certificate the kubelet checks against the cluster CA (kwokctl's admin pair: its CA is
            # the cluster's), at the node's InternalIP (its hostname resolves nowhere).
            "--extra-args", f"kube-apiserver=kubelet-client-certificate={self.cluster_dir / 'pki' / 'admin.crt'}",
            "--extra-args", f"kube-apiserver=kubelet-client-key={self.cluster_dir / 'pki' / 'admin.key'}",
            "--extra-args", "kube-apiserver=kubelet-preferred-address-types=InternalIP",
            "--wait", f"{START_TIMEOUT_SECONDS}s",
            timeout=START_TIMEOUT_SECONDS + 60,
        )
        if result.returncode != 0:
            raise ClusterError(f"kwokctl create cluster failed:\n{result.stdout}\n{result.stderr}")
        # ServiceAccount admission rejects pods until the controller-manager has made the default account.
        self._wait_for("default ServiceAccount", lambda: self.kubectl("get", "sa", "default").returncode == 0)
        # One create per node: 2,000 of them outlast kubectl's usual minute on two busy cores.
        self.kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(profile.node_manifests()),
                        timeout=START_TIMEOUT_SECONDS)
        expected = {node["metadata"]["name"] for node in profile.node_manifests()}
        self._wait_for(f"{len(expected)} Ready nodes", lambda: expected <= self.ready_nodes())
        if profile.real_node is not None:
            try:
                self.node.up(profile, self.server())
            except (NodeError, HostError, TrainerImageError) as error:
                raise ClusterError(f"the real node did not start: {error}") from error
        if kueue:
            self.start_kueue()

    def start_kueue(self) -> None:
        try:
            self.kueue.up()
        except (KueueError, binaries.MissingBinaryError) as error:
            raise ClusterError(f"Kueue did not start: {error}") from error

    def server(self) -> str:
        return yaml.safe_load(self.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]

    def down(self) -> None:
        """Stop the cluster and every process it started; a no-op when none is there."""
        try:
            self.kueue.stop()
            self.node.down()
        finally:
            if self.cluster_dir.exists():
                self.kwokctl("delete", "cluster", timeout=120)
            self._kill_leftover_pids()
            self.kubeconfig.unlink(missing_ok=True)

    def ready_nodes(self) -> set[str]:
        result = self.kubectl("get", "nodes", "-o", "json")
        if result.returncode != 0:
            return set()
        ready = set()
        for node in json.loads(result.stdout)["items"]:
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            if conditions.get("Ready") == "True":
                ready.add(node["metadata"]["name"])
        return ready

    def _config(self) -> str:
        options = {
            "kind": "KwokctlConfiguration",
            "apiVersion": "config.kwok.x-k8s.io/v1alpha1",
            # kwokctl binds 0.0.0.0 unless told otherwise, and has no flag for it.
            "options": {"runtime": "binary", "bindAddress": "127.0.0.1"},
            # One instance of each: leader election would only make them exit when the apiserver is briefly
            # away (a lease they cannot renew), and nothing restarts them in the binary runtime.
            "componentsPatches": [
                *({"name": component, "extraArgs": [{"key": "leader-elect", "value": "false"}]}
                  for component in ("kube-controller-manager", "kube-scheduler")),
                # kwok plays only the profile's simulated nodes; a real node's kubelet reports for itself.
                {"name": "kwok-controller", "extraArgs": [
                    {"key": "manage-all-nodes", "value": "false"},
                    {"key": "manage-nodes-with-annotation-selector", "value": f"{FAKE_NODE_ANNOTATION}=fake"}]},
            ],
        }
        stages = [yaml.safe_load(binaries.kwok_stages_dir().joinpath(path).read_text()) for path in DEFAULT_STAGES]
        for stage in stages:
            if stage["metadata"]["name"] == "pod-complete":
                stage["spec"]["selector"]["matchExpressions"].append(
                    {"key": ".metadata.namespace", "operator": "NotIn", "values": [LONG_RUNNING_NAMESPACE]})
            if stage["metadata"]["name"] == "pod-ready":
                stage["spec"]["selector"]["matchExpressions"].append(
                    {"key": f'.metadata.labels["{WAITING_LABEL}"]', "operator": "DoesNotExist"})
        return "---\n".join(yaml.safe_dump(document) for document in [options, *stages, _waiting_stage()])

    def restart_apiserver(self, down_seconds: float) -> None:
        """Kill kube-apiserver (SIGKILL), leave it down for `down_seconds`, and start it again with the same
        command line: the outage an operator must ride out. Its new pid is recorded where kwokctl keeps it, so
        `down` still stops it."""
        pid_file = self.cluster_dir / "pids" / "kube-apiserver.pid"
        pid = int(pid_file.read_text().strip())
        apiserver = psutil.Process(pid)
        argv, cwd = apiserver.cmdline(), apiserver.cwd()
        os.kill(pid, signal.SIGKILL)
        self._wait_for("kube-apiserver to exit", lambda: not host.alive(pid), timeout=30)
        time.sleep(down_seconds)
        log = (self.cluster_dir / "logs" / "kube-apiserver.log").open("a")
        process = subprocess.Popen(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        pid_file.write_text(str(process.pid))

    def _kill_leftover_pids(self) -> None:
        # kwokctl records each component's pid; a crashed run can leave them behind. Kill by recorded pid,
        # never by process name, so another checkout's cluster is left alone; and only a process whose
        # command line names this cluster's folder, since a pid may have been reused since.
        if not self.cluster_dir.exists():
            return
        killed: list[int] = []
        for pid_file in self.cluster_dir.glob("pids/*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (ValueError, OSError):
                continue
            if str(self.cluster_dir) in host.cmdline(pid):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        # SIGKILL is delivered asynchronously; return only once the processes (and their ports) are gone.
        self._wait_for("killed processes to exit", lambda: not any(host.alive(pid) for pid in killed), timeout=30)
        shutil.rmtree(self.cluster_dir)

    @staticmethod
    def _wait_for(what: str, ready: Callable[[], bool], timeout: float = START_TIMEOUT_SECONDS) -> None:
        host.wait_for(what, ready, timeout, ClusterError)


def _waiting_stage() -> dict[str, Any]:
    return {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "Stage", "metadata": {"name": "pod-container-waiting"},
        "spec": {
            "resourceRef": {"apiGroup": "v1", "kind": "Pod"},
            "selector": {"matchExpressions": [
                {"key": f'.metadata.labels["{WAITING_LABEL}"]', "operator": "Exists"},
                {"key": ".metadata.deletionTimestamp", "operator": "DoesNotExist"},
                {"key": ".status.containerStatuses", "operator": "DoesNotExist"},
            ]},
            "next": {"statusTemplate": "\n".join([
                '{{ $annotations := or .metadata.annotations dict }}',
                'phase: Pending',
                'containerStatuses:',
                '{{ range .spec.containers }}',
                '- name: {{ .name | Quote }}',
                '  image: {{ .image | Quote }}',
                '  ready: false',
                '  restartCount: 0',
                '  started: false',
                '  state:',
                '    waiting:',
                f'      reason: {{{{ index $annotations "{WAITING_LABEL}/reason" | Quote }}}}',
                f'      message: {{{{ index $annotations "{WAITING_LABEL}/message" | Quote }}}}',
                '{{ end }}',
            ])},
        },
    }
