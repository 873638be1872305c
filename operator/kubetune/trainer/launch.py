"""`python -m kubetune.trainer.launch TORCHRUN_ARGS...`: the training container's command.

Runs torchrun with a verdict folder for its ranks (api/contract.py), passes the kubelet's SIGTERM on to it, and
when it fails exits with the most telling rank's exit code, that rank's line as the pod's termination message:
torchrun alone exits 1 whatever its workers did, and several ranks of one pod would otherwise race for one
termination log. A rank the kernel killed for the container's memory limit writes nothing (SIGKILL), and its
peers then fail their collectives with errors of their own; so the container's cgroup is asked first whether
the kernel killed anything, which explains them all. Imports no torch, so it starts at once.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from kubetune.api import contract

# The container's own memory cgroup, as the runtime mounts it (v1, then v2): the OOM kill count and the limit.
CGROUP_MEMORY = (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup"))
_NO_LIMIT = 1 << 62  # cgroup v1 writes "no limit" as a page-rounded 2**63 - 1


def oom_kills(cgroup: Path) -> int:
    """How many processes the kernel killed for the cgroup's memory limit (0 when the cgroup does not say)."""
    for name in ("memory.oom_control", "memory.events"):  # v1, v2
        try:
            lines = (cgroup / name).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    return 0


def memory_limit(cgroup: Path) -> int | None:
    for name in ("memory.limit_in_bytes", "memory.max"):  # v1, v2
        try:
            value = (cgroup / name).read_text().strip()
        except OSError:
            continue
        return int(value) if value.isdigit() and int(value) < _NO_LIMIT else None
    return None


def memory_cgroup() -> Path:
    return next((path for path in CGROUP_MEMORY if (path / "memory.oom_control").exists() or
                 (path / "memory.events").exists()), CGROUP_MEMORY[0])


def verdict_of(returncode: int, verdicts: list[contract.Verdict], killed_for_memory: bool = False,
               limit_bytes: int | None = None, stopped_by: int | None = None,
               saved_on_stop: bool = False) -> tuple[int, str | None]:
    """The container's exit code and termination message after torchrun exited with `returncode`: a kill for
    memory explains everything after it, a stop from outside (the kubelet's SIGTERM) the ranks' own ends."""
    if returncode == 0 and not saved_on_stop:
        return 0, None
    if killed_for_memory:
        return contract.HOST_OOM_EXIT_CODE, contract.host_oom_message(limit_bytes)
    if stopped_by is not None:
        return 128 + stopped_by, contract.stopped_message(stopped_by)
    if saved_on_stop:
        return 128 + signal.SIGTERM, contract.peer_stopped_message()
    telling = contract.most_telling(verdicts)
    if telling is not None:
        return telling.exit_code, telling.message
    if returncode < 0:  # torchrun itself was killed by a signal
        return 128 - returncode, f"kubetune-error torchrun was killed by signal {-returncode}"
    return returncode, f"kubetune-error torchrun exited with code {returncode} and no rank said why (see the logs)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    stopping: list[int] = []
    process: subprocess.Popen[bytes] | None = None

    folder = tempfile.mkdtemp(prefix="kubetune-verdicts-")
    save_seconds = float(os.environ.get(contract.SAVE_SECONDS_ENV) or "0")

    def pass_on(signum: int) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def forward(signum: int, _frame: object) -> None:
        """The first stop asks the ranks to save and exit, and passes the signal on once the time to save is
        up; a second one passes on at once."""
        stopping.append(signum)
        if len(stopping) > 1 or save_seconds <= 0:
            pass_on(signum)
            return
        (Path(folder) / contract.STOP_FILE).touch()
        timer = threading.Timer(save_seconds, pass_on, (signum,))
        timer.daemon = True
        timer.start()

    # As the container's PID 1, signals without a handler would be ignored; installed first, so none is lost.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    cgroup = memory_cgroup()
    kills_before = oom_kills(cgroup)
    try:
        # torchrun's module, whatever the image's layout puts its script.
        process = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *args],
                                   env={**os.environ, contract.VERDICT_DIR_ENV: folder})
        if stopping:  # asked to stop before training began: nothing to save
            process.send_signal(stopping[0])
        returncode = process.wait()
        code, message = verdict_of(returncode, contract.read_verdicts(Path(folder)),
                                   oom_kills(cgroup) > kills_before, memory_limit(cgroup),
                                   stopping[0] if stopping else None,
                                   (Path(folder) / contract.SAVED_ON_STOP_FILE).exists())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if message is not None:
        termination_log = Path(os.environ.get("KUBETUNE_TERMINATION_LOG", contract.TERMINATION_LOG))
        try:
            termination_log.write_text(message[:contract.MAX_MESSAGE])
        except OSError:
            pass
        print(message, file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
