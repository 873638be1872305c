"""What a real node changes on the host, made and undone: its processes (found again by recorded pid only),
its mounts, its cgroups, its bridge and the iptables chains its kubelet adds."""

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

CGROUP_V1 = Path("/sys/fs/cgroup")
# Chains the kubelet makes in each table to notice a flush of its rules.
KUBELET_CANARY = "KUBE-KUBELET-CANARY"


class HostError(RuntimeError):
    """A host change the real node needs could not be made."""


def wait_for(what: str, ready: Callable[[], bool], timeout: float, error: type[Exception] = TimeoutError) -> None:
    """Poll `ready` until it is true; `error` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def run(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """A host command; an image import is the slowest (about a minute for 6 GB)."""
    result = subprocess.run(list(args), capture_output=True, text=True, check=False, timeout=timeout)
    if check and result.returncode != 0:
        raise HostError(f"{' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


# Processes -----------------------------------------------------------------------------------------------------

def start(name: str, argv: Sequence[str], pids: Path, logs: Path, env: dict[str, str] | None = None,
          pass_fds: Sequence[int] = ()) -> int:
    pids.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, env={**os.environ, **(env or {})}, pass_fds=pass_fds)
    (pids / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, ValueError):  # gone, or not a pid at all (psutil refuses one below 0)
        return False


def cmdline(pid: int) -> str:
    """The process's arguments joined by spaces; empty for one that is gone or a zombie."""
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, ValueError):
        return ""


def stop_recorded(pids: Path, name: str, marker: str, grace_seconds: float = 20) -> None:
    """Stop the process recorded as `name`, but only if its command line still names `marker` (a pid may
    have been reused since): SIGTERM, then SIGKILL after the grace period."""
    pid_file = pids / f"{name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if alive(pid) and marker in cmdline(pid):
        terminate([pid], grace_seconds)
    pid_file.unlink(missing_ok=True)


def terminate(pids: list[int], grace_seconds: float) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def processes_naming(marker: str) -> list[int]:
    """Pids whose command line names `marker`: containerd's shims, which outlive containerd by design."""
    return [pid for pid in psutil.pids() if pid != os.getpid() and marker in cmdline(pid)]


# Cgroups (v1) --------------------------------------------------------------------------------------------------

def cgroup_hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_V1.iterdir() if p.is_dir() and not p.is_symlink()) if CGROUP_V1.is_dir() else []


def make_cgroup_root(name: str) -> None:
    """The kubelet's cgroupRoot in every v1 hierarchy; a new cpuset starts with no CPUs or memory nodes, so it
    takes its parent's."""
    for hierarchy in cgroup_hierarchies():
        if hierarchy.name == "unified":
            continue
        folder = hierarchy / name
        folder.mkdir(exist_ok=True)
        for setting in ("cpuset.cpus", "cpuset.mems"):
            if (folder / setting).exists() and not (folder / setting).read_text().strip():
                (folder / setting).write_text((hierarchy / setting).read_text())


def cgroup_pids(name: str) -> list[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if root.is_dir():
            for procs in root.rglob("cgroup.procs"):
                try:
                    pids |= {int(line) for line in procs.read_text().split()}
                except OSError:
                    continue
    return sorted(pids)


def remove_cgroup_root(name: str) -> None:
    """Kill what is left in the kubelet's cgroups (containers whose shim is gone), then remove them."""
    leftover = cgroup_pids(name)
    if leftover:
        terminate(leftover, grace_seconds=0)
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / name
        if not root.is_dir():
            continue
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            _rmdir(folder)
        _rmdir(root)


def _rmdir(folder: Path) -> None:
    for _ in range(50):
        try:
            folder.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)  # a killed task leaves its cgroup a moment later


# Mounts --------------------------------------------------------------------------------------------------------

def mounts_under(folders: Sequence[Path]) -> list[Path]:
    """Mount points at or below any of `folders`, deepest first. all=True lists every mount of this mount
    namespace, bind mounts, stacked mounts and pseudo filesystems included: the kernel's /proc/self/mounts,
    which psutil reads through /etc/mtab where that exists (systemd and Debian's images make it a link there;
    a stale regular file in its place would mislead this)."""
    prefixes = [str(f.resolve()) for f in folders]
    found = {Path(part.mountpoint) for part in psutil.disk_partitions(all=True)
             if any(part.mountpoint == p or part.mountpoint.startswith(p + "/") for p in prefixes)}
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_under(folders: Sequence[Path]) -> None:
    for _ in range(3):  # a mount may be stacked over another at the same point
        points = mounts_under(folders)
        if not points:
            return
        for point in points:
            run("umount", "-l", str(point), check=False)


# The bridge ----------------------------------------------------------------------------------------------------

def subnet_in_use(subnet: ipaddress.IPv4Network) -> bool:
    routes = run("ip", "-4", "route", "show", "table", "all").stdout.split()
    for word in routes:
        try:
            network = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv4Network) and network.prefixlen > 0 and network.overlaps(subnet):
            return True
    return False


def link_exists(name: str) -> bool:
    return run("ip", "link", "show", name, check=False).returncode == 0


def make_bridge(name: str, address: str, prefix: int) -> None:
    run("ip", "link", "add", name, "type", "bridge")
    run("ip", "addr", "add", f"{address}/{prefix}", "dev", name)
    run("ip", "link", "set", name, "up")


def delete_link(name: str) -> None:
    if link_exists(name):
        run("ip", "link", "delete", name, check=False)


def links_on_bridge(bridge: str) -> list[str]:
    result = run("ip", "-o", "link", "show", "master", bridge, check=False)
    return [line.split(":")[1].strip().split("@")[0] for line in result.stdout.splitlines() if ":" in line]


def remove_kubelet_chains() -> None:
    """The kubelet's canary chains, unless another kubelet on this host (another cluster's node) still uses them."""
    if any(process.info["name"] == "kubelet" for process in psutil.process_iter(["name"])):
        return
    for tool in ("iptables", "ip6tables"):
        for table in ("mangle", "nat", "filter"):
            if run(tool, "-t", table, "-n", "-L", KUBELET_CANARY, check=False).returncode == 0:
                run(tool, "-t", table, "-F", KUBELET_CANARY, check=False)
                run(tool, "-t", table, "-X", KUBELET_CANARY, check=False)
