"""What to do when the training Job fails: read why from its pods, then replan after an out-of-memory error
(of a GPU: a plan predicted to need less GPU memory; of the host: a plan that offloads less), restart after a
lost or failed worker, or give up when no retry can help or the budget is spent.

A restart is of the whole gang (every worker): torchrun's static rendezvous cannot take one replaced worker
back, and the survivors of a lost peer fail their collectives anyway. The trainer resumes from the newest
complete checkpoint on the output volume."""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from kubetune.api import contract
from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.vocabulary import Offload
from kubetune.catalog.cluster_gpus import GpuNodeGroup
from kubetune.controller import clock
from kubetune.controller.conditions import Update
from kubetune.planner import decision

# Each replan asks for this much more than the failed run showed it needs.
REPLAN_MARGIN = 1.05


class Kind(StrEnum):
    """Why an attempt ended: the reason of its record and of the conditions it sets."""

    HOST_OUT_OF_MEMORY = Reason.HOST_OUT_OF_MEMORY.value
    OUT_OF_MEMORY = Reason.GPU_OUT_OF_MEMORY.value
    INVALID_INPUT = Reason.INVALID_INPUT.value
    WORKER_FAILED = Reason.WORKER_FAILED.value
    WORKER_LOST = Reason.WORKER_LOST.value


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
    consequence: bool = False  # a worker whose collectives failed because a peer was gone: the peer explains it


def classify(pods: list[dict[str, Any]], job_message: str) -> Failure:
    """The most telling failure among the attempt's pods: an out-of-memory error or bad input explains the
    others (their peers fail their collectives after it), a worker's own error comes next, then a worker
    stopped from outside (its launcher says so) or disrupted, then the collective errors of the workers left
    behind; a Job that failed with no failed container lost a worker (pod deleted or evicted, node gone,
    preempted)."""
    failures: list[Failure] = []
    for pod in pods:
        name = pod["metadata"]["name"]
        for container in pod.get("status", {}).get("containerStatuses", []):
            terminated = container.get("state", {}).get("terminated")
            if not terminated or terminated.get("exitCode", 0) == 0:
                continue
            code, text = terminated["exitCode"], terminated.get("message", "").strip()
            reason = terminated.get("reason", "Error")
            message = f"pod {name} exited with code {code} ({reason}): {text}"
            # The runtime says OOMKilled when the kernel killed for the container's limit; the launcher says so
            # itself (its own exit code and line), also when the runtime does not.
            if reason == "OOMKilled" or (code == contract.HOST_OOM_EXIT_CODE and contract.parse_host_oom(text) is not None):
                failures.append(Failure(Kind.HOST_OUT_OF_MEMORY, message))
            elif code == contract.OOM_EXIT_CODE:
                measured = contract.parse_oom(text)
                failures.append(Failure(Kind.OUT_OF_MEMORY, message, *measured) if measured
                                else Failure(Kind.OUT_OF_MEMORY, message))
            elif code == contract.INVALID_INPUT_EXIT_CODE:
                failures.append(Failure(Kind.INVALID_INPUT, message))
            elif text.startswith("kubetune-stopped"):
                failures.append(Failure(Kind.WORKER_LOST, message))
            else:
                failures.append(Failure(Kind.WORKER_FAILED, message, consequence=contract.peer_lost(text)))
        disrupted = [c for c in pod.get("status", {}).get("conditions", [])
                     if c["type"] == "DisruptionTarget" and c["status"] == "True"]
        if disrupted:
            failures.append(Failure(Kind.WORKER_LOST, f"pod {name} was disrupted ({disrupted[0].get('reason')}): "
                                                      f"{disrupted[0].get('message', '')}".strip()))
    order = [Kind.HOST_OUT_OF_MEMORY, Kind.OUT_OF_MEMORY, Kind.INVALID_INPUT, Kind.WORKER_FAILED, Kind.WORKER_LOST]
    if failures:
        # A worker's own error explains a stopped peer (the Job ends the others after it), a stopped or
        # disrupted worker explains the collective errors of those left behind.
        return min(failures, key=lambda f: (f.consequence, order.index(f.kind)))
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


MEMORY_KINDS = (Kind.OUT_OF_MEMORY, Kind.HOST_OUT_OF_MEMORY)


def action(failure: Failure, attempts: list[api.Attempt], recovery: api.Recovery, plan: api.Plan) -> Action:
    """Out-of-memory failures of either kind share the replan budget, the others the restart budget. A plan
    that offloads nothing has no host memory to give back: the same plan would be killed again."""
    if failure.kind is Kind.INVALID_INPUT:
        return Action.GIVE_UP
    if failure.kind in MEMORY_KINDS:
        if failure.kind is Kind.HOST_OUT_OF_MEMORY and plan.offload is Offload.NONE:
            return Action.GIVE_UP
        replans = sum(1 for a in attempts if a.reason in MEMORY_KINDS)
        return Action.REPLAN if replans < recovery.max_out_of_memory_replans else Action.GIVE_UP
    restarts = sum(1 for a in attempts if a.reason not in (*MEMORY_KINDS, Reason.RESIZED))
    return Action.RESTART if restarts < recovery.max_restarts else Action.GIVE_UP


def why_not_retried(failure: Failure, plan: api.Plan, attempts: list[api.Attempt]) -> str:
    if failure.kind is Kind.INVALID_INPUT:
        return "gave up: retrying cannot fix the input"
    if failure.kind is Kind.HOST_OUT_OF_MEMORY and plan.offload is Offload.NONE:
        return ("gave up: the plan offloads nothing to the host, so no plan needs less host memory; the limit is the "
                "pod's GPUs' share of its node's memory: use nodes with more memory per GPU")
    return f"gave up after {len(attempts) + 1} attempts (spec.recovery)"


def less_offload(plan: api.Plan) -> Offload:
    """The most offload a replan after a host out-of-memory kill may keep: one step less than the plan's."""
    order = list(Offload)
    return order[max(order.index(plan.offload) - 1, 0)]


def memory_scale(failure: Failure, plan: api.Plan, current: float) -> float:
    """How much more memory than predicted the failed plan needed, for the part that depends on the
    configuration (the planner scales that part alone: the CUDA context and NCCL's buffers are the same for
    every plan, and scaling them would rule out every plan of a small model): at least the whole device it
    ran out of (so the same plan can never be chosen again), or what it had allocated when it did; never less
    than what an earlier failure showed."""
    fixed = plan.memory.overhead_bytes
    device = max(plan.gpu_memory_bytes, failure.device_total_bytes or 0)
    needed = (max(device, failure.measured_peak_bytes or 0) - fixed) / max(plan.predicted_peak_bytes - fixed, 1)
    return max(current, needed) * REPLAN_MARGIN


@dataclass(frozen=True)
class Response:
    """What to record and do after an attempt failed."""

    record: api.Attempt
    updates: list[Update]
    plan: api.Plan | None = None  # the replan, when there is one
    memory_scale: float | None = None  # what the replan was made for
    warning: tuple[Reason, str] | None = None  # an Event, when the job goes on
    gave_up: bool = False


def respond(failure: Failure, attempt: int, attempts: list[api.Attempt], spec: api.FineTuneJobSpec, plan: api.Plan,
            scale: float, groups: list[GpuNodeGroup], prices: dict[str, float]) -> Response:
    """Replan, restart or give up (`action` decides which; a replan that finds no plan gives up), with the
    attempt's record. The record is all that is written: the next reconcile sees a Job older than the attempt
    in status, deletes it and, once its workers are gone, creates the next; so a crash at any point neither
    loses an attempt nor repeats one."""
    todo = action(failure, attempts, spec.recovery, plan)
    new_plan, how = None, ""
    if todo is Action.REPLAN:
        # The host's memory: less offload at the same scale; the GPU's: the same offload bound at a larger scale.
        if failure.kind is Kind.HOST_OUT_OF_MEMORY:
            most = less_offload(plan)
            fits, replanned = f"with offload at most {most}", f"with offload at most {most} (less host memory)"
        else:
            most, scale = Offload.ALL, memory_scale(failure, plan, scale)
            fits = f"{scale:.2f}x the predicted memory (all but the CUDA context)"
            replanned = f"for {fits}"
        decided = decision.decide(spec, groups, prices, memory_scale=scale, resuming=plan, max_offload=most)
        if decided.plan is None:
            todo, how = Action.GIVE_UP, f"no plan fits {fits}: {decided.message}"
        else:
            new_plan = decided.plan
            how = f"replanned {replanned}: {decision.summary(new_plan)}"
    elif todo is Action.RESTART:
        how = "restarted from the newest checkpoint" if spec.output.claim_name else \
            "restarted from the start (the output is not on a claim, so no checkpoint survives)"
    else:
        how = why_not_retried(failure, plan, attempts)
    record = api.Attempt(number=attempt, reason=failure.kind.value, message=failure.message[:4096],
                         plan_summary=decision.summary(plan)[:512], predicted_peak_bytes=plan.predicted_peak_bytes,
                         measured_peak_bytes=failure.measured_peak_bytes, action=how[:512], finished_at=clock.now())
    reason = Reason(failure.kind.value)
    if todo is Action.GIVE_UP:
        return Response(record, [Update(ConditionType.RUNNING, False, reason, failure.message),
                                 Update(ConditionType.FAILED, True, reason, f"{failure.message} ({how})"),
                                 Update(ConditionType.SUCCEEDED, False, reason, "the job failed")], gave_up=True)
    ended = f"attempt {attempt} ended ({failure.kind.value})"
    updates = [Update(ConditionType.RUNNING, False, Reason.RESTARTING, f"{ended}; {how}")]
    if new_plan is not None:
        updates.insert(0, Update(ConditionType.PLANNED, True, Reason.REPLANNED, decision.summary(new_plan)))
    return Response(record, updates, new_plan, scale if new_plan is not None else None,
                    (Reason.REPLANNED if new_plan else Reason.RESTARTING, f"{ended}: {failure.message[:1024]}; {how}"))
