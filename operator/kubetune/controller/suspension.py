"""Whether the training Job may run: the user's spec.suspend, and Kueue's admission of a queued Job. Pure; the
handlers act on it.

Kueue owns the `suspend` of a Job it manages: it unsuspends an admitted Job whoever suspended it, so a user's
suspension of a queued job goes through Kueue, by deactivating the Job's Workload (Kueue then evicts it and
suspends the Job; reactivated, it queues again). A Job Kueue manages without the spec naming a queue (Kueue's
manageJobsWithoutQueueName, or its default LocalQueue) is told apart by the Workload Kueue made for it."""

from dataclasses import dataclass
from typing import Any

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller.conditions import Update


@dataclass(frozen=True)
class Workload:
    """What kubetune reads of the Workload Kueue keeps for a queued Job."""

    name: str
    queue: str
    active: bool
    # Kueue's own words for why the Job does not run: evicted (preempted, deactivated) or not yet admitted
    # (no quota, no flavor that matches); empty when admitted.
    waiting: str

    @classmethod
    def of(cls, workload: dict[str, Any]) -> "Workload":
        conditions = {c["type"]: c for c in workload.get("status", {}).get("conditions", [])}
        evicted, reserved = conditions.get("Evicted", {}), conditions.get("QuotaReserved", {})
        if evicted.get("status") == "True" and conditions.get("Admitted", {}).get("status") != "True":
            waiting = f"evicted ({evicted.get('reason', '')}): {evicted.get('message', '')}"
        elif reserved.get("status") != "True":
            waiting = reserved.get("message", "")
        elif conditions.get("Admitted", {}).get("status") != "True":
            waiting = conditions.get("Admitted", {}).get("message", "")
        else:
            waiting = ""
        spec = workload.get("spec", {})
        return cls(workload["metadata"]["name"], spec.get("queueName", ""), spec.get("active", True) is not False,
                   waiting)


@dataclass(frozen=True)
class Suspension:
    set_job_suspend: bool | None  # what to set the Job's spec.suspend to; None: leave it
    set_workload_active: bool | None  # what to set the Workload's spec.active to; None: leave it
    suspended: bool  # whether the Job is suspended once that is done
    updates: list[Update]


def decide(spec: api.FineTuneJobSpec, job_suspended: bool, workload: Workload | None = None) -> Suspension:
    """The user's flag drives the Job directly, or through its Workload when Kueue manages it."""
    queued = spec.queue_name is not None or workload is not None
    queue = spec.queue_name or (workload.queue if workload is not None else "")
    change = spec.suspend != job_suspended and not queued
    suspended = spec.suspend if change else job_suspended
    activate = None
    if workload is not None and workload.active == spec.suspend:
        activate = not spec.suspend
    if spec.suspend:
        updates = [Update(ConditionType.SUSPENDED, True, Reason.SUSPENDED,
                          "spec.suspend is true: the training pods are stopped, the checkpoints kept")]
    else:
        updates = [Update(ConditionType.SUSPENDED, False, Reason.NOT_SUSPENDED, "spec.suspend is false")]
        if suspended:
            why = workload.waiting if workload is not None and workload.active else ""
            if workload is None:
                why = "Kueue has made no Workload for its Job yet (is Kueue running, with its batch/job integration?)"
            updates.append(Update(ConditionType.ADMITTED, False, Reason.QUEUED,
                                  f"waiting for Kueue to admit it from queue '{queue}'" +
                                  (f": {why}" if why else "")))
        else:
            updates.append(Update(ConditionType.ADMITTED, True, Reason.ADMITTED, "the Job may run" + (
                f" (admitted by Kueue from '{queue}')" if queued else "")))
    return Suspension(spec.suspend if change else None, activate, suspended, updates)
