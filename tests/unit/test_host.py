"""Finding, stopping and unmounting what the local cluster left on the host (kubetune.devcluster.host), on real
processes this test starts and, where the machine allows it, real tmpfs mounts."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from kubetune.devcluster import host
from kubetune.devcluster.cluster import LocalCluster


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; killed and reaped after it, whatever it did to them."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        process.kill()
        process.wait()


def sleeper(started: list[subprocess.Popen], *args: str, program: str | None = None) -> subprocess.Popen:
    """A process that sleeps with `args` on its command line (after Python's own, unless `program` is given)."""
    argv = [program] if program else [sys.executable, "-c", "import time; time.sleep(120)"]
    process = subprocess.Popen([*argv, *args])
    started.append(process)
    host.wait_for("the sleeper to start", lambda: args[-1:] == tuple(psutil.Process(process.pid).cmdline()[-1:]),
                  timeout=10)
    return process


def zombie(started: list[subprocess.Popen]) -> subprocess.Popen:
    """A child that has exited and is not reaped yet."""
    process = subprocess.Popen(["true"])
    started.append(process)
    host.wait_for("the child to exit", lambda: psutil.Process(process.pid).status() == psutil.STATUS_ZOMBIE,
                  timeout=10)
    return process


def test_alive_and_cmdline_of_a_running_process(started: list[subprocess.Popen]) -> None:
    marker = f"marker-{uuid.uuid4()}"
    process = sleeper(started, "an argument with spaces", "", marker)
    assert host.alive(process.pid)
    assert f"an argument with spaces  {marker}" in host.cmdline(process.pid)


def test_a_zombie_is_not_alive_and_names_nothing(started: list[subprocess.Popen]) -> None:
    process = zombie(started)
    assert not host.alive(process.pid) and host.cmdline(process.pid) == ""


def test_a_gone_process_or_a_number_that_is_no_pid_is_not_alive_and_names_nothing(
        started: list[subprocess.Popen]) -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    # Never a match: a pid file holding 0 or -1 must not lead to kill(0) or kill(-1).
    for pid in (process.pid, 0, -1, 2**22 + 1):
        assert not host.alive(pid) and host.cmdline(pid) == ""


def test_processes_naming_a_marker_and_stopping_them(started: list[subprocess.Popen]) -> None:
    marker = f"/tmp/state-{uuid.uuid4()}/containerd.sock"
    first, second = sleeper(started, marker), sleeper(started, f"--address={marker}")
    other = sleeper(started, f"/tmp/elsewhere-{uuid.uuid4()}")
    assert set(host.processes_naming(marker)) == {first.pid, second.pid}
    host.terminate(host.processes_naming(marker), grace_seconds=5)
    assert host.processes_naming(marker) == [] and not host.alive(first.pid) and not host.alive(second.pid)
    assert host.alive(other.pid)


def test_stop_recorded_stops_only_a_process_that_still_names_the_marker(started: list[subprocess.Popen],
                                                                         tmp_path: Path) -> None:
    marker = str(tmp_path / "node")
    ours, reused = sleeper(started, f"--root={marker}/containerd"), sleeper(started, "--root=/somewhere/else")
    pids = tmp_path / "pids"
    pids.mkdir()
    (pids / "containerd.pid").write_text(f"{ours.pid}\n")
    (pids / "kubelet.pid").write_text(str(reused.pid))  # the pid was reused by a process that is not ours
    (pids / "coredns.pid").write_text("not a pid")
    for name in ("containerd", "kubelet", "coredns", "missing"):
        host.stop_recorded(pids, name, marker, grace_seconds=5)
    assert not host.alive(ours.pid) and host.alive(reused.pid)
    assert not (pids / "containerd.pid").exists() and not (pids / "kubelet.pid").exists()


def test_leftover_cluster_pids_are_killed_only_when_they_name_the_cluster(started: list[subprocess.Popen],
                                                                         tmp_path: Path) -> None:
    cluster = LocalCluster("leftovers", tmp_path / "state")
    (cluster.cluster_dir / "pids").mkdir(parents=True)
    ours = sleeper(started, f"--config={cluster.cluster_dir}/kwok.yaml")
    reused = sleeper(started, "--config=/elsewhere/kwok.yaml")
    (cluster.cluster_dir / "pids" / "kube-apiserver.pid").write_text(str(ours.pid))
    (cluster.cluster_dir / "pids" / "etcd.pid").write_text(str(reused.pid))
    (cluster.cluster_dir / "pids" / "kwok-controller.pid").write_text("")
    cluster._kill_leftover_pids()
    assert not host.alive(ours.pid) and host.alive(reused.pid) and not cluster.cluster_dir.exists()


def test_the_apiserver_restarts_with_its_exact_command_line_and_folder(started: list[subprocess.Popen],
                                                                       tmp_path: Path) -> None:
    cluster = LocalCluster("restart", tmp_path / "state")
    (cluster.cluster_dir / "pids").mkdir(parents=True)
    (cluster.cluster_dir / "logs").mkdir()
    workdir = tmp_path / "a folder"
    workdir.mkdir()
    argv = [sys.executable, "-c", "import time; time.sleep(120)", "--etcd-servers=http://127.0.0.1:2379",
            "an argument with spaces", ""]
    first = subprocess.Popen(argv, cwd=workdir)
    started.append(first)
    # Popen returns once the child is exec'ing, a moment before /proc shows its command line (empty until then, on
    # a loaded machine long enough to read): the restart reads the first's from there, this test the second's.
    host.wait_for("the first to start", lambda: psutil.Process(first.pid).cmdline() != [], timeout=10)
    pid_file = cluster.cluster_dir / "pids" / "kube-apiserver.pid"
    pid_file.write_text(str(first.pid))
    cluster.restart_apiserver(down_seconds=0)
    second = int(pid_file.read_text())
    try:
        assert second != first.pid and not host.alive(first.pid)
        restarted = psutil.Process(second)
        host.wait_for("the restarted one to start", lambda: restarted.cmdline() != [], timeout=10)
        assert (restarted.cmdline(), restarted.cwd()) == (argv, str(workdir))
    finally:
        psutil.Process(second).kill()
        host.wait_for("the restarted process to exit", lambda: not host.alive(second), timeout=10)


def test_a_running_kubelet_keeps_the_kubelet_chains(started: list[subprocess.Popen], tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Another node's kubelet on this host still uses them: its process name, not its path, tells."""
    (tmp_path / "kubelet").symlink_to(Path(os.path.realpath("/bin/sleep")))
    sleeper(started, "120", program=str(tmp_path / "kubelet"))
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(host, "run", lambda *args, **kwargs: calls.append(args))
    host.remove_kubelet_chains()
    assert calls == []


def test_mounts_under_folders_deepest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path.resolve() / "state"
    points = [state, state / "a", state / "a" / "b c", state / "a", Path(f"{state}ful"), tmp_path / "other",
              state / "ü"]
    monkeypatch.setattr(host.psutil, "disk_partitions",
                        lambda all=False: [SimpleNamespace(mountpoint=str(p)) for p in points])
    found = host.mounts_under([state])
    assert found[0] == state / "a" / "b c" and found[-1] == state
    assert set(found) == {state, state / "a", state / "a" / "b c", state / "ü"} and len(found) == 4


def test_real_mounts_with_spaces_and_non_ascii_names_are_found_and_unmounted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    point, stacked = state / "pods" / "a volume ü", state / "stacked"
    point.mkdir(parents=True)
    stacked.mkdir()
    mounted = [subprocess.run(["mount", "-t", "tmpfs", "kubetune-test", str(where)], capture_output=True).returncode
               for where in (point, stacked, stacked)]
    try:
        if any(mounted):
            pytest.skip("this machine does not let the test mount a tmpfs")
        assert point.resolve() in host.mounts_under([state]) and stacked.resolve() in host.mounts_under([state])
        assert host.mounts_under([tmp_path / "elsewhere"]) == []
        host.unmount_under([state])
        assert host.mounts_under([state]) == []
    finally:
        for where in (stacked, stacked, point):
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
