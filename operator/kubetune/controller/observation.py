"""The training Job, read into the FineTuneJob's conditions and status: finished, failed (recovery.py takes
over), running, or waiting for its workers. Pure; the handlers gather the Job and act on what this returns."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller import clock, recovery
from kubetune.controller.conditions import Update


@dataclass(frozen=True)
class JobView:
    """What reconciling reads of a training Job (the trainer_jobs index keeps just this much)."""

    name: str
    suspended: bool
    parallelism: int
    uid: str = ""
    active: int = 0
    ready: int = 0
    complete: bool = False
    failed_message: str | None = None  # the Job's Failed condition's message, when it failed
    start_time: str | None = None
    completion_time: str | None = None

    @classmethod
    def of(cls, job: dict[str, Any]) -> "JobView":
        status = job.get("status", {})
        true = {c["type"]: c for c in status.get("conditions", []) if c.get("status") == "True"}
        return cls(name=job["metadata"]["name"], uid=job["metadata"].get("uid", ""),
                   suspended=bool(job["spec"].get("suspend")),
                   parallelism=job["spec"].get("parallelism") or 0, active=status.get("active", 0),
                   ready=status.get("ready", 0), complete="Complete" in true,
                   failed_message=true["Failed"].get("message", "") if "Failed" in true else None,
                   start_time=status.get("startTime"), completion_time=status.get("completionTime"))


@dataclass(frozen=True)
class Observation:
    updates: list[Update]
    status: dict[str, Any] = field(default_factory=dict)  # status fields to write
    recover: bool = False  # the attempt failed: classify its pods and recover
    # Workers not all ready long after the Job started: look for ones that cannot start. When one is found, it
    # is recovered from instead of writing `updates`.
    check_blocked: bool = False
    read_progress: bool = False  # workers run: read rank 0's progress
    first_start: bool = False  # the workers run for the first time
    attempt_over: bool = False  # the attempt's progress reader may go


def observe(job: JobView, by_spec: bool, status: dict[str, Any], at: datetime | None = None) -> Observation:
    """`by_spec`: the user suspended the job (else a suspended Job is Kueue's to admit)."""
    if job.complete:
        fields: dict[str, Any] = {"completionTime": job.completion_time or clock.now()}
        last = status.get("progress") or {}
        if last.get("totalSteps"):  # the last read may predate the last steps
            total = last["totalSteps"]
            fields["progress"] = {**last, "step": total, "etaSeconds": 0, "summary": f"{total}/{total}"}
        return Observation([Update(ConditionType.RUNNING, False, Reason.COMPLETED, "all workers finished"),
                            Update(ConditionType.SUCCEEDED, True, Reason.COMPLETED, f"Job {job.name} completed"),
                            Update(ConditionType.FAILED, False, Reason.COMPLETED, "the job succeeded")],
                           fields, attempt_over=True)
    if job.failed_message is not None:
        return Observation([], recover=True, attempt_over=True)
    if job.suspended:
        why = "spec.suspend is true" if by_spec else "the Job waits in its Kueue queue"
        return Observation([Update(ConditionType.RUNNING, False, Reason.SUSPENDED if by_spec else Reason.QUEUED,
                                   f"{why}: no workers run")])
    if job.active == 0:
        return Observation([Update(ConditionType.RUNNING, False, Reason.PODS_PENDING,
                                   "waiting for the workers to be scheduled")])
    slow = job.ready < job.parallelism and \
        clock.seconds_since(job.start_time or clock.now(), at) > recovery.BLOCKED_AFTER_SECONDS
    first = not status.get("startTime")
    return Observation([Update(ConditionType.RUNNING, True, Reason.PODS_RUNNING,
                               f"{job.ready}/{job.parallelism} workers ready")],
                       {"startTime": clock.now()} if first else {}, check_blocked=slow, read_progress=True,
                       first_start=first)


def output_durability(output: api.Output) -> Update:
    """Say, in status and once as a Warning Event, when the model and checkpoints die with the pods: the
    user may have meant it (a quick experiment) but must not find out after hours of GPU time."""
    if output.claim_name:
        return Update(ConditionType.OUTPUT_DURABLE, True, Reason.OUTPUT_ON_CLAIM,
                      f"checkpoints and the model are written to claim {output.claim_name} at {output.path}")
    return Update(ConditionType.OUTPUT_DURABLE, False, Reason.EPHEMERAL_OUTPUT,
                  "spec.output.claimName is not set: checkpoints and the model are written to an emptyDir and are "
                  "lost when the pods end, and a restart starts from step 0; recreate the job with output.claimName "
                  "naming a PersistentVolumeClaim to keep them")
