"""The real node's configuration files, as pure functions of where things live: containerd's config.toml, the
kubelet's KubeletConfiguration, the CNI network list and CoreDNS's Corefile."""

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
# Debian's containernetworking-plugins.
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")


@dataclass(frozen=True)
class NodeNetwork:
    """One /24 on a bridge of the node's own: the node's IP is the bridge's, pods take the rest. Nothing is
    routed or masqueraded off the bridge, so IP forwarding stays off and the host's network is untouched."""

    bridge: str
    subnet: ipaddress.IPv4Network

    @property
    def node_ip(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def pod_range(self) -> tuple[str, str]:
        return str(self.subnet.network_address + 10), str(self.subnet.broadcast_address - 1)


@dataclass(frozen=True)
class NodePaths:
    """Every folder and socket of one real node, all under its state folder except the image store. The state
    folder's path is short: the kubelet and containerd make unix sockets under it, and a socket's path has at
    most 107 bytes."""

    state: Path  # per cluster: removed on `down`
    images: Path  # containerd's root (content and snapshots): kept, so images are imported once per cluster name

    @property
    def containerd_state(self) -> Path:
        return self.state / "containerd-state"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.state / "kubelet"

    @property
    def pod_logs(self) -> Path:
        return self.state / "pod-logs"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def cni_ipam_dir(self) -> Path:
        return self.state / "cni" / "ipam"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def volumes(self) -> Path:
        return self.state / "volumes"

    @property
    def pids(self) -> Path:
        return self.state / "pids"

    @property
    def logs(self) -> Path:
        return self.state / "logs"


def containerd_toml(paths: NodePaths, pause_image: str, bin_dir: Path) -> str:
    """containerd 2.x (config version 3). The CRI plugin's settings that differ from the defaults, and why."""
    cri_runtime = "plugins.'io.containerd.cri.v1.runtime'"
    return "\n".join([
        "version = 3",
        f"root = {json.dumps(str(paths.images))}",
        f"state = {json.dumps(str(paths.containerd_state))}",
        "[grpc]",
        f"  address = {json.dumps(str(paths.containerd_socket))}",
        "[ttrpc]",
        f"  address = {json.dumps(str(paths.containerd_socket) + '.ttrpc')}",
        # No metrics or debug listeners: nothing of the node listens beyond its socket, its kubelet and DNS.
        "[debug]",
        "  address = ''",
        "[plugins.'io.containerd.cri.v1.images']",
        "  snapshotter = 'overlayfs'",
        "  [plugins.'io.containerd.cri.v1.images'.pinned_images]",
        # Pinned, so it is never pulled (no registry is reachable) nor garbage-collected.
        f"    sandbox = {json.dumps(pause_image)}",
        f"[{cri_runtime}]",
        # Without CAP_SYS_RESOURCE (a VM's root may lack it) runc cannot lower a sandbox's oom_score_adj below
        # its own, and every sandbox fails with "can't get final child's PID from pipe: EOF".
        "  restrict_oom_score_adj = true",
        # Network namespaces under the node's folder, not /var/run/netns, so `down` finds and removes them all.
        "  netns_mounts_under_state_dir = true",
        f"  [{cri_runtime}.containerd]",
        "    default_runtime_name = 'runc'",
        f"    [{cri_runtime}.containerd.runtimes.runc]",
        "      runtime_type = 'io.containerd.runc.v2'",
        f"      [{cri_runtime}.containerd.runtimes.runc.options]",
        f"        BinaryName = {json.dumps(str(RUNC))}",
        # The kubelet's cgroupfs driver: both must agree.
        "        SystemdCgroup = false",
        f"  [{cri_runtime}.cni]",
        f"    bin_dirs = [{json.dumps(str(CNI_BIN_DIR))}, {json.dumps(str(bin_dir))}]",
        f"    conf_dir = {json.dumps(str(paths.cni_conf_dir))}",
        "[plugins.'io.containerd.grpc.v1.cri']",
        "  stream_server_address = '127.0.0.1'",
        "  stream_server_port = '0'",
        "",
    ])


def cni_conflist(network: NodeNetwork, paths: NodePaths) -> dict[str, Any]:
    start, end = network.pod_range
    return {
        "cniVersion": "1.0.0",
        "name": "kubetune",
        "plugins": [
            {
                "type": "bridge",
                "bridge": network.bridge,
                # The bridge and its address exist before the kubelet starts (they are the node's IP), so the
                # plugin neither makes it a gateway nor masquerades: pod traffic stays on the bridge.
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(paths.cni_ipam_dir),
                    "ranges": [[{"subnet": str(network.subnet), "rangeStart": start, "rangeEnd": end}]],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(network: NodeNetwork, paths: NodePaths, ca_file: Path, cgroup_root: str,
                   resolv_conf: Path) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # Listens on the node's bridge address only, so several clusters' nodes can run side by side.
        "address": network.node_ip,
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": network.node_ip,
        "healthzPort": KUBELET_HEALTHZ_PORT,
        # As on a production node: client certificates signed by the cluster CA (the apiserver's kubelet
        # client certificate) or bearer tokens, each request authorized by the apiserver (SubjectAccessReview).
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(ca_file)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root,
        # This machine's kernel mounts cgroup v1; the kubelet refuses it unless told otherwise.
        "failCgroupV1": False,
        # The kubelet would lower its own score to -999, which needs CAP_SYS_RESOURCE.
        "oomScoreAdj": 0,
        "clusterDNS": [network.node_ip],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(resolv_conf),
        "failSwapOn": False,
        # Absolute thresholds: the root filesystem's reserved blocks make it look ~75 % full, so the default
        # percentages would evict pods and garbage-collect the locally imported images, which no registry
        # can give back. Image GC is off for the same reason.
        "evictionHard": {"memory.available": "200Mi", "nodefs.available": "2Gi", "imagefs.available": "2Gi"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "maxPods": 110,
        "rotateCertificates": False,
        "staticPodPath": "",
        # Its own, not the default /var/log/pods: a kubelet removes every pod log folder there of a pod it does not
        # know (kuberuntime_gc.go, evictPodLogsDirectories), so two clusters' nodes on one host (the demo beside
        # the tests) deleted each other's container logs, and `kubectl logs` came back empty.
        "podLogsDir": str(paths.pod_logs),
        "logging": {"format": "text"},
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(network: NodeNetwork, kubeconfig: Path) -> str:
    """Cluster DNS for the pods: Services and their pods' hostnames (the Indexed Job's rendezvous name),
    from the apiserver; nothing else resolves, since no upstream is reachable."""
    return "\n".join([
        f"{CLUSTER_DOMAIN}:53 {{",
        f"    bind {network.node_ip}",
        "    errors",
        f"    kubernetes {CLUSTER_DOMAIN} {{",
        f"        kubeconfig {kubeconfig}",
        "        pods insecure",
        # A peer's name is missing until its pod exists; a short TTL keeps that answer from being cached long.
        "        ttl 1",
        "    }",
        "}",
        ".:53 {",
        f"    bind {network.node_ip}",
        "    errors",
        "    template ANY ANY {",
        "        rcode NXDOMAIN",
        "    }",
        "}",
        "",
    ])


def kubeconfig(server: str, ca_file: Path, cert: Path, key: Path, user: str) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
        "current-context": "local",
    }, sort_keys=False)
