"""A real node beside kwok's simulated ones: containerd, a kubelet, CNI on a bridge of its own and CoreDNS, all
host processes started from the cache's binaries, so FineTuneJobs really train in real pods.

It advertises `nvidia.com/gpu` and GPU Feature Discovery's labels of a catalog GPU type, plus SIMULATED_LABEL:
the GPUs are simulated, its pods run on the CPU (the trainer falls back to gloo), and the planner uses them
only for jobs that name that GPU type. Static local PersistentVolumes on it stand in for a provisioner's; their
folders are root-owned as provisioners make them, so pods write to them through fsGroup as on real clusters.
"""

import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from kubetune.catalog import gpus
from kubetune.devcluster import binaries, host, node_config, oci, pki, trainer_image
from kubetune.devcluster.profile import ClusterProfile, RealNodeSpec, gfd_labels

SIMULATED_LABEL = gpus.SIMULATED_GPUS_LABEL
STORAGE_CLASS = "local"
PAUSE_IMAGE = "localhost/kubetune/pause:1"
COREDNS_USER = "kubetune:coredns"
READY_TIMEOUT_SECONDS = 180
# The nodes' folders, as /var/lib/kubelet is a node's: short paths, for the sockets made under them.
NODES_ROOT = Path("/var/lib/kubetune/nodes")
# Candidate /24s for the node's bridge, tried in order until one is free on this host.
SUBNET_POOL = ipaddress.IPv4Network("10.244.0.0/16")


class Kubectl(Protocol):
    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]: ...


class NodeError(RuntimeError):
    """The real node could not be started or stopped."""


@dataclass(frozen=True)
class NodeState:
    """What `up` chose, kept in the node's folder for `down` and for what runs on the node."""

    subnet: str
    node: str
    trainer_image: str = ""  # the reference loaded into its runtime: what its pods run


class RealNode:
    def __init__(self, cluster_name: str, state_dir: Path, cluster_dir: Path, kubectl: Kubectl) -> None:
        """`state_dir` is the cluster's; the node keeps its own files under NODES_ROOT."""
        self.cluster_name = cluster_name
        self.cluster_dir = cluster_dir  # kwokctl's folder: its pki/ holds the cluster CA
        # Names on the host (folder, bridge, cgroup) come from the cluster's state folder, so nodes of other
        # checkouts or state roots never share them.
        self.key = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:8]
        self.paths = node_config.NodePaths(state=NODES_ROOT / self.key,
                                           images=binaries.cache_dir() / "nodes" / cluster_name)
        self.kubectl = kubectl

    @property
    def bridge(self) -> str:
        return f"kt-{self.key}"  # interface names have at most 15 characters

    @property
    def cgroup_root(self) -> str:
        return f"kubetune-{self.key}"

    def network(self, state: NodeState) -> node_config.NodeNetwork:
        return node_config.NodeNetwork(self.bridge, ipaddress.IPv4Network(state.subnet))

    def _kubectl_ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.kubectl(*args, stdin=stdin)
        if result.returncode != 0:
            raise NodeError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}")
        return result.stdout

    @property
    def state_file(self) -> Path:
        return self.paths.state / "node.json"

    def state(self) -> NodeState:
        """What the running node was started with; a NodeError when it is not running."""
        try:
            return NodeState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError) as error:
            raise NodeError(f"no real node under {self.paths.state}: dev-cluster up starts one") from error

    # Up --------------------------------------------------------------------------------------------------------

    @staticmethod
    def check() -> None:
        """What this host must give a real node, checked before any cluster starts."""
        if os.geteuid() != 0:
            raise NodeError("a real node needs root (mounts, cgroups, a bridge); run as root or use a profile "
                            "without real_node")
        if (host.CGROUP_V1 / "cgroup.controllers").exists():
            raise NodeError("a real node here is set up for cgroup v1 (this host mounts cgroup v2); use a profile "
                            "without real_node")
        missing = [name for name in binaries.NODE if not os.access(binaries.bin_dir() / name, os.X_OK)]
        if missing or not node_config.RUNC.exists() or not (node_config.CNI_BIN_DIR / "bridge").exists():
            raise NodeError(f"the real node's parts are missing ({', '.join(missing) or 'runc or CNI plugins'}): "
                            "run hack/setup.sh")

    def up(self, profile: ClusterProfile, server: str) -> None:
        spec = profile.real_node
        assert spec is not None
        self.check()
        self.down()
        for folder in (self.paths.state, self.paths.images, self.paths.volumes, self.paths.cni_conf_dir):
            folder.mkdir(parents=True, exist_ok=True)
        state = NodeState(subnet=str(_free_subnet()), node=spec.name)
        network = self.network(state)

        ca = pki.KeyPair(self.cluster_dir / "pki" / "ca.crt", self.cluster_dir / "pki" / "ca.key")
        kubelet_pair = pki.sign_client(ca, self.paths.pki, "kubelet", f"system:node:{spec.name}", "system:nodes")
        coredns_pair = pki.sign_client(ca, self.paths.pki, "coredns", COREDNS_USER)
        kubelet_kubeconfig = self.paths.pki / "kubelet.kubeconfig"
        kubelet_kubeconfig.write_text(node_config.kubeconfig(server, ca.cert, kubelet_pair.cert, kubelet_pair.key,
                                                             f"system:node:{spec.name}"))
        coredns_kubeconfig = self.paths.pki / "coredns.kubeconfig"
        coredns_kubeconfig.write_text(node_config.kubeconfig(server, ca.cert, coredns_pair.cert, coredns_pair.key,
                                                             COREDNS_USER))
        self._kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(_coredns_rbac()))

        image = trainer_image.build()
        state = dataclasses.replace(state, trainer_image=image.ref)
        self.state_file.write_text(json.dumps(dataclasses.asdict(state)))
        host.make_bridge(network.bridge, network.node_ip, network.subnet.prefixlen)
        self._start_containerd()
        self._load_images(image)
        self._start_coredns(network, coredns_kubeconfig)
        host.make_cgroup_root(self.cgroup_root)
        self._start_kubelet(spec, network, ca.cert, kubelet_kubeconfig)
        self._wait_for(f"node {spec.name} to register",
                       lambda: self.kubectl("get", "node", spec.name).returncode == 0)
        self._advertise(spec, profile)
        self._wait_for(f"node {spec.name} to be Ready", lambda: self._ready(spec.name))
        self._kubectl_ok("apply", "-f", "-", stdin=yaml.safe_dump_all(self._volumes(spec)))

    def _start_containerd(self) -> None:
        config = self.paths.state / "containerd.toml"
        config.write_text(node_config.containerd_toml(self.paths, PAUSE_IMAGE, binaries.bin_dir()))
        # The image store is shared by every cluster of this name: containerd inherits a lock on it, held as
        # long as it runs, so a second node on the same store fails here instead of hanging in its database.
        lock = os.open(self.paths.images / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            os.close(lock)
            raise NodeError(f"another real node uses the image store {self.paths.images} (a cluster named "
                            f"'{self.cluster_name}' from another state folder): stop it first") from error
        try:
            host.start("containerd", [str(binaries.bin_dir() / "containerd"), "--config", str(config)],
                       self.paths.pids, self.paths.logs, pass_fds=(lock,),
                       # containerd finds its shim on PATH.
                       env={"PATH": f"{binaries.bin_dir()}:{os.environ.get('PATH', '/usr/bin:/bin')}"})
        finally:
            os.close(lock)
        self._wait_for("containerd", lambda: self._ctr("version", check=False).returncode == 0, timeout=60)

    def _ctr(self, *args: str, check: bool = True) -> Any:
        return host.run(str(binaries.bin_dir() / "ctr"), "--address", str(self.paths.containerd_socket),
                        "--namespace", "k8s.io", *args, check=check)

    def _load_images(self, trainer: trainer_image.TrainerImage) -> None:
        """Import the pause and trainer images unless containerd has them already (its store outlives `down`),
        and drop older trainer images so the store does not grow build after build."""
        present = set(self._ctr("images", "ls", "-q").stdout.split())
        pause_archive = binaries.cache_dir() / "images" / "pause.tar"
        if PAUSE_IMAGE not in present:
            oci.single_binary_image(binaries.bin_dir() / "pause", "/pause", PAUSE_IMAGE, pause_archive)
            self._ctr("images", "import", "--local", str(pause_archive))
        if trainer.ref not in present:
            # Unpacked layers leave the content store: the image is kept once (~6 GB), not twice.
            self._ctr("images", "import", "--local", "--discard-unpacked-layers", str(trainer.archive))
        repository = trainer.ref.rsplit(":", 1)[0]
        stale = [ref for ref in present if ref.startswith(repository + ":") and ref != trainer.ref]
        if stale:
            self._ctr("images", "rm", *stale)

    def _start_coredns(self, network: node_config.NodeNetwork, kubeconfig: Path) -> None:
        corefile = self.paths.state / "Corefile"
        corefile.write_text(node_config.corefile(network, kubeconfig))
        host.start("coredns", [str(binaries.bin_dir() / "coredns"), "-conf", str(corefile)],
                   self.paths.pids, self.paths.logs)

    def _start_kubelet(self, spec: RealNodeSpec, network: node_config.NodeNetwork, ca_file: Path,
                       kubeconfig: Path) -> None:
        cni = self.paths.cni_conf_dir / "10-kubetune.conflist"
        cni.write_text(json.dumps(node_config.cni_conflist(network, self.paths), indent=2))
        resolv = self.paths.state / "resolv.conf"
        resolv.write_text("")  # pods resolve cluster names only; the host's resolvers are not theirs
        config = self.paths.state / "kubelet.yaml"
        config.write_text(node_config.kubelet_config(network, self.paths, ca_file, f"/{self.cgroup_root}", resolv))
        host.start("kubelet", [
            str(binaries.bin_dir() / "kubelet"), f"--config={config}", f"--kubeconfig={kubeconfig}",
            f"--hostname-override={spec.name}", f"--node-ip={network.node_ip}",
            f"--root-dir={self.paths.kubelet_root}", f"--cert-dir={self.paths.pki / 'kubelet-serving'}",
        ], self.paths.pids, self.paths.logs)

    def _advertise(self, spec: RealNodeSpec, profile: ClusterProfile) -> None:
        """What GPU Feature Discovery and the device plugin would add, with the admin's credentials: the GPU
        labels, the simulated label, and `nvidia.com/gpu` capacity (the kubelet keeps extended resources it
        does not manage, and derives allocatable from them)."""
        labels = {**gfd_labels(spec.instance_type, spec.gpu, profile.driver_version, profile.cuda_version),
                  "node.kubernetes.io/instance-type": spec.instance_type, SIMULATED_LABEL: "true"}
        self._kubectl_ok("label", "node", spec.name, "--overwrite", *(f"{k}={v}" for k, v in labels.items()))
        count = str(spec.gpu.count)
        patch = {"status": {"capacity": {"nvidia.com/gpu": count}}}
        self._kubectl_ok("patch", "node", spec.name, "--subresource=status", "--type=merge", "-p", json.dumps(patch))

    def _ready(self, name: str) -> bool:
        result = self.kubectl("get", "node", name, "-o", "json")
        if result.returncode != 0:
            return False
        node = json.loads(result.stdout)
        conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
        return conditions.get("Ready") == "True" and "nvidia.com/gpu" in node["status"].get("allocatable", {})

    def _volumes(self, spec: RealNodeSpec) -> list[dict[str, Any]]:
        manifests: list[dict[str, Any]] = [{
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS,
                         "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Retain",
        }]
        for index in range(spec.volumes):
            folder = self.paths.volumes / f"pv-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o755)  # root-owned, as provisioners make a claim's root
            manifests.append({
                "apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": f"{spec.name}-pv-{index}"},
                "spec": {
                    "capacity": {"storage": spec.volume_size},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": STORAGE_CLASS,
                    "local": {"path": str(folder)},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [spec.name]}]}]}},
                },
            })
        return manifests

    def recycle_volumes(self) -> int:
        """Make the node's Released volumes Available again, emptied (what a provisioner's Delete policy would
        give): there is no provisioner, and each claim of a test or demo run otherwise keeps one for good.
        Returns how many."""
        volumes = json.loads(self._kubectl_ok("get", "pv", "-o", "json"))["items"]
        recycled = 0
        for volume in volumes:
            folder = Path(volume["spec"].get("local", {}).get("path", "/"))
            if volume["status"].get("phase") != "Released" or folder.parent != self.paths.volumes:
                continue
            shutil.rmtree(folder)
            folder.mkdir()
            folder.chmod(0o755)
            self._kubectl_ok("patch", "pv", volume["metadata"]["name"], "--type=json",
                             "-p", '[{"op": "remove", "path": "/spec/claimRef"}]')
            recycled += 1
        return recycled

    # Down ------------------------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process the node started (by recorded pid), its containers, mounts, cgroups, bridge and
        kubelet chains, and remove its folder; the image store stays. A no-op when nothing is there."""
        if not self.paths.state.exists():
            return
        marker = str(self.paths.state)
        host.stop_recorded(self.paths.pids, "kubelet", marker)
        if (self.paths.pids / "containerd.pid").exists():
            self._remove_containers()
        host.stop_recorded(self.paths.pids, "containerd", marker)
        # Shims outlive containerd by design; theirs name its socket.
        host.terminate(host.processes_naming(str(self.paths.containerd_socket)), grace_seconds=5)
        host.stop_recorded(self.paths.pids, "coredns", marker)
        host.remove_cgroup_root(self.cgroup_root)
        host.unmount_under([self.paths.state, self.paths.images])
        for link in host.links_on_bridge(self.bridge):
            host.delete_link(link)
        host.delete_link(self.bridge)
        host.remove_kubelet_chains()
        if host.mounts_under([self.paths.state]):
            raise NodeError(f"mounts are left under {self.paths.state}: {host.mounts_under([self.paths.state])}")
        host.run("rm", "-rf", "--one-file-system", str(self.paths.state))

    def _remove_containers(self) -> None:
        """Every container of the node's pods, killed and removed while containerd runs, so the image store is
        left clean for the next `up`."""
        if self._ctr("version", check=False).returncode != 0:
            return
        tasks = [line.split()[0] for line in self._ctr("tasks", "ls", check=False).stdout.splitlines()[1:] if line]
        for task in tasks:
            self._ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
        deadline = time.monotonic() + 20
        for task in tasks:
            while self._ctr("tasks", "delete", task, check=False).returncode != 0 and time.monotonic() < deadline:
                time.sleep(0.2)
        containers = self._ctr("containers", "ls", "-q", check=False).stdout.split()
        if containers:
            self._ctr("containers", "rm", *containers, check=False)

    @staticmethod
    def _wait_for(what: str, ready: Callable[[], bool], timeout: float = READY_TIMEOUT_SECONDS) -> None:
        host.wait_for(what, ready, timeout, NodeError)


def _free_subnet() -> ipaddress.IPv4Network:
    for subnet in SUBNET_POOL.subnets(new_prefix=24):
        if not host.subnet_in_use(subnet):
            return subnet
    raise NodeError(f"no free /24 in {SUBNET_POOL} for the node's bridge")


def _coredns_rbac() -> list[dict[str, Any]]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": COREDNS_USER},
         "rules": [{"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": COREDNS_USER},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": COREDNS_USER},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": COREDNS_USER}]},
    ]
