"""The operator-trainer contract beyond trainer.json (api/trainer_config.py): where a training pod finds its
inputs, what it serves, and how it says why it ended. Both sides import this module; it imports neither torch
nor the operator.

How a pod ends: every rank that fails writes a verdict (its exit code and a one-line message) into the folder
the launcher (kubetune.trainer.launch, the container's command) gives it; torchrun itself only ever exits 1,
so the launcher exits with the most telling rank's code and writes that rank's line as the pod's termination
message. The operator (controller/recovery.py) reads both.
"""

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

# Exit codes: distinct from a crash (1) and from the kernel's OOM kill (137).
OOM_EXIT_CODE = 86  # the GPU ran out of memory: the operator may replan on a more frugal plan
INVALID_INPUT_EXIT_CODE = 87  # input no retry can fix: the job fails at once, without spending restarts
# The kernel killed a training process for the container's memory limit (the launcher reads the cgroup's OOM
# kill count: the kill hits a worker, not the container's PID 1, which would otherwise exit with torchrun's 1).
HOST_OOM_EXIT_CODE = 137
ERROR_EXIT_CODE = 1

CONFIG_DIR = "/etc/kubetune"  # trainer.json and ds_config.json, from the job's ConfigMap
DATA_MOUNT = Path("/data")  # the dataset claim (dataset.claimName), read-only
RENDEZVOUS_PORT = 29500
# Rank 0's; local rank i serves on METRICS_PORT + i (up to 8 a node). Clear of what runs on a GPU node:
# dcgm-exporter (9400) and DCGM's host engine (5555), node-exporter (9100), the GPU Operator's node status
# exporter (8000), node-feature-discovery and kube-state-metrics (8080, 8081), the kubelet and kube-proxy
# (10248-10259), torchrun (29400, 29500), and the exporters' registered range 9100-9999, which Prometheus'
# port allocation list shows full.
METRICS_PORT = 8450

VERDICT_DIR_ENV = "KUBETUNE_VERDICT_DIR"
# Asked to stop (the kubelet's SIGTERM: the pod deleted, evicted, preempted, or its Job suspended), the launcher
# writes this file into the verdict folder; the ranks see it at their next optimizer step, agree, save a
# checkpoint and exit, so a suspended or preempted run resumes where it stopped. The launcher passes the signal
# on to torchrun after SAVE_SECONDS_ENV seconds (the pod's grace period, less a margin) if they have not.
STOP_FILE = "stop"
# Written by every rank beside it once the ranks saved and left the run unfinished: its exit code 0 is then no
# success, and the container says it was stopped.
SAVED_ON_STOP_FILE = "saved-on-stop"
SAVE_SECONDS_ENV = "KUBETUNE_SAVE_SECONDS"
# What the grace period is sized for: writing the pod's share of the model states at this rate, and this much
# more for the step in flight and the ranks' exit.
SAVE_BYTES_PER_SECOND = 200 * 1000**2
SAVE_MARGIN_SECONDS = 60
# Left to torchrun, once the signal is passed on, to stop its workers before the kubelet kills the container.
SHUTDOWN_SECONDS = 20


def grace_seconds(checkpoint_bytes: int) -> int:
    """The pod's termination grace period: time to write a checkpoint of this many bytes, and the margin."""
    return SAVE_MARGIN_SECONDS + -(-checkpoint_bytes // SAVE_BYTES_PER_SECOND)
# torch's caching allocator configuration in every training pod: expandable segments map pages into one
# growing virtual range per stream, so freed blocks merge with their neighbours and the fixed shapes of every
# step (trainer/data.py pads to seq_len) find room again; the planner's allocator margin assumes exactly this
# (planner/coefficients.yaml, allocator_*). PYTORCH_ALLOC_CONF is torch's name since 2.9 (the trainer's pin;
# PYTORCH_CUDA_ALLOC_CONF is its older alias); expandable segments since 2.1 (pytorch/pytorch#96995).
ALLOCATOR_CONF_ENV = "PYTORCH_ALLOC_CONF"
ALLOCATOR_CONF = "expandable_segments:True"
# Set on pods of nodes whose GPUs are simulated: only then may the trainer run on the CPU. Elsewhere a pod
# that sees no GPU (a driver not mounted) fails at once instead of crawling on the CPU for days.
SIMULATED_GPUS_ENV = "KUBETUNE_SIMULATED_GPUS"
# Fault injection, for tests on real pods only: a FineTuneJob annotated "KIND:STEP:RANK" has its first
# attempt's rank RANK fail after optimizer step STEP (later attempts run clean, as a replanned run would):
# gpu-oom raises torch's real OutOfMemoryError, host-oom allocates host memory until the kernel kills it.
# Off unless the annotation is set; nothing else reads it.
INJECT_FAULT_ANNOTATION = "testing.kubetune.io/inject-fault"
INJECT_FAULT_ENV = "KUBETUNE_TESTING_INJECT_FAULT"
FAULTS = ("gpu-oom", "host-oom")
TERMINATION_LOG = Path("/dev/termination-log")
MAX_MESSAGE = 4000  # the kubelet keeps 4096 bytes of a termination message

_OOM = re.compile(r"kubetune-oom peak_allocated_bytes=(\d+) device_total_bytes=(\d+)")
_HOST_OOM = re.compile(r"kubetune-host-oom limit_bytes=(\d+)")
# Which rank's verdict explains a pod's end: an out-of-memory error or bad input explains its peers' failures
# (their collectives break after it), a plain error comes last.
_PRIORITY = {OOM_EXIT_CODE: 0, INVALID_INPUT_EXIT_CODE: 1}


class Verdict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    rank: int
    exit_code: int
    message: str


def oom_message(peak_allocated_bytes: int, device_total_bytes: int) -> str:
    return f"kubetune-oom peak_allocated_bytes={peak_allocated_bytes} device_total_bytes={device_total_bytes}"


def parse_oom(message: str) -> tuple[int, int] | None:
    """(peak allocated, device total) bytes from an out-of-memory termination message."""
    match = _OOM.search(message)
    return (int(match.group(1)), int(match.group(2))) if match else None


# What a rank's collectives say when a peer is gone (gloo, NCCL): a consequence, explained by the peer's own end.
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "remote process exited",
              "NCCL communicator was aborted")


def peer_lost(message: str) -> bool:
    return any(sign in message for sign in _PEER_LOST)


def stop_requested(folder: str | None) -> bool:
    return folder is not None and (Path(folder) / STOP_FILE).exists()


def stopped_message(signum: int) -> str:
    return (f"kubetune-stopped the container was asked to stop (signal {signum}): its pod was deleted, evicted or "
            "preempted, or its Job ended")


def peer_stopped_message() -> str:
    return ("kubetune-stopped a peer pod of this run was asked to stop: this pod's ranks saved a checkpoint with "
            "it and stopped")


def host_oom_message(limit_bytes: int | None) -> str:
    limit = f"its memory limit ({limit_bytes / 1024**3:.1f} GiB)" if limit_bytes else "the node's memory"
    return (f"kubetune-host-oom limit_bytes={limit_bytes or 0} the kernel killed a training process: the "
            f"container's processes needed more host memory than {limit}")


def parse_host_oom(message: str) -> int | None:
    """The memory limit (bytes; 0 when the container had none) from a host out-of-memory termination message."""
    match = _HOST_OOM.search(message)
    return int(match.group(1)) if match else None


def write_verdict(folder: Path, verdict: Verdict) -> None:
    (folder / f"rank-{verdict.rank}.json").write_text(verdict.model_dump_json())


def read_verdicts(folder: Path) -> list[Verdict]:
    verdicts = []
    for path in sorted(folder.glob("rank-*.json")):
        try:
            verdicts.append(Verdict.model_validate(json.loads(path.read_text())))
        except (OSError, ValueError):
            continue  # a rank killed while writing leaves half a file; the others still tell
    return verdicts


def most_telling(verdicts: list[Verdict]) -> Verdict | None:
    failed = [v for v in verdicts if v.exit_code != 0]
    return min(failed, key=lambda v: (_PRIORITY.get(v.exit_code, 2), v.rank)) if failed else None


def injected_fault(value: str | None) -> tuple[str, int, int] | None:
    """(kind, step, rank) of an INJECT_FAULT setting; None when unset. A malformed one is an error, not ignored."""
    if not value:
        return None
    kind, _, where = value.partition(":")
    step, _, rank = where.partition(":")
    if kind not in FAULTS or not (step.isdigit() and rank.isdigit()):
        raise ValueError(f"{INJECT_FAULT_ENV}={value!r}: expected KIND:STEP:RANK with KIND one of "
                         f"{', '.join(FAULTS)}, e.g. gpu-oom:5:1")
    return kind, int(step), int(rank)
