"""What to do when the training Job fails: read why from its pods, then replan after an out-of-memory error,
restart after a lost or failed worker, or give up when no retry can help or the budget is spent.

A restart is of the whole gang (every worker): torchrun's static rendezvous cannot take one replaced worker
back, and the survivors of a lost peer fail their collectives anyway. The trainer resumes from the newest
complete checkpoint on the output volume."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubetune.api import contract
from kubetune.api import v1alpha1 as api

# Each replan asks for this much more than the failed run showed it needs.
REPLAN_MARGIN = 1.05


class Kind(StrEnum):
    OUT_OF_MEMORY = "GPUOutOfMemory"
    INVALID_INPUT = "InvalidInput"
    WORKER_FAILED = "WorkerFailed"
    WORKER_LOST = "WorkerLost"


class Action(StrEnum):
    REPLAN = "replan"
    RESTART = "restart"
    GIVE_UP = "give up"


@dataclass(frozen=True)
class Failure:
    kind: Kind
    message: str
    measured_peak_bytes: int | None = None
    device_total_bytes: int | None = None


def classify(pods: list[dict[str, Any]], job_message: str) -> Failure:
    """The most telling failure among the attempt's pods: an out-of-memory error or bad input explains the
    others (their peers fail their collectives after it), a worker's own error comes next, and a Job that
    failed with no failed container lost a worker (pod deleted or evicted, node gone, preempted)."""
    failures: list[Failure] = []
    for pod in pods:
        name = pod["metadata"]["name"]
        for container in pod.get("status", {}).get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            code, text = terminated["exitCode"], terminated.get("message", "").strip()
            message = f"pod {name} exited with code {code} ({terminated.get('reason', 'Error')}): {text}"
            if code == contract.OOM_EXIT_CODE:
                measured = contract.parse_oom(text)
                failures.append(Failure(Kind.OUT_OF_MEMORY, message, *measured) if measured
                                else Failure(Kind.OUT_OF_MEMORY, message))
            elif code == contract.INVALID_INPUT_EXIT_CODE:
                failures.append(Failure(Kind.INVALID_INPUT, message))
            else:
                failures.append(Failure(Kind.WORKER_FAILED, message))
        disrupted = [c for c in pod.get("status", {}).get("conditions", [])
                     if c["type"] == "DisruptionTarget" and c["status"] == "True"]
        if disrupted:
            failures.append(Failure(Kind.WORKER_LOST, f"pod {name} was disrupted ({disrupted[0].get('reason')}): "
                                                      f"{disrupted[0].get('message', '')}".strip()))
    order = [Kind.OUT_OF_MEMORY, Kind.INVALID_INPUT, Kind.WORKER_FAILED, Kind.WORKER_LOST]
    if failures:
        return min(failures, key=lambda f: order.index(f.kind))
    return Failure(Kind.WORKER_LOST, f"a worker disappeared (pod deleted, node lost or preempted): {job_message}")


# Container states in which the kubelet retries for ever what only the user can fix: a Secret or ConfigMap the
# pod references that does not exist, an image name that is malformed or cannot be pulled.
BLOCKED_REASONS = ("CreateContainerConfigError", "InvalidImageName", "ImagePullBackOff", "ErrImageNeverPull")
# Workers are looked at only once their Job is this old and not all ready: pods start slowly under load, and
# listing them on every reconcile of every new job would cost more than it finds.
BLOCKED_AFTER_SECONDS = 20


def blocked(pods: list[dict[str, Any]]) -> Failure | None:
    """An input failure when a worker cannot even start, instead of a job pending for ever."""
    for pod in pods:
        for container in pod.get("status", {}).get("containerStatuses", []):
            waiting = container.get("state", {}).get("waiting") or {}
            if waiting.get("reason") in BLOCKED_REASONS:
                return Failure(Kind.INVALID_INPUT, f"pod {pod['metadata']['name']} cannot start its {container['name']} "
                                                   f"container ({waiting['reason']}): {waiting.get('message', '')}")
    return None


def action(failure: Failure, attempts: list[api.Attempt], recovery: api.Recovery) -> Action:
    if failure.kind is Kind.INVALID_INPUT:
        return Action.GIVE_UP
    if failure.kind is Kind.OUT_OF_MEMORY:
        replans = sum(1 for a in attempts if a.reason == Kind.OUT_OF_MEMORY)
        return Action.REPLAN if replans < recovery.max_out_of_memory_replans else Action.GIVE_UP
    restarts = sum(1 for a in attempts if a.reason != Kind.OUT_OF_MEMORY)
    return Action.RESTART if restarts < recovery.max_restarts else Action.GIVE_UP


def memory_scale(failure: Failure, plan: api.Plan, current: float) -> float:
    """How much more memory than predicted the failed plan needed: at least the whole device it ran out of
    (so the same plan can never be chosen again), or what it had allocated when it did; never less than what
    an earlier failure showed."""
    device = max(plan.memory.gpu_memory, failure.device_total_bytes or 0)
    needed = max(device, failure.measured_peak_bytes or 0) / plan.predicted_peak_bytes
    return max(current, needed) * REPLAN_MARGIN
