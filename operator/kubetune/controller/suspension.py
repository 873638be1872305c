"""Whether the training Job may run: the user's spec.suspend, and Kueue's admission of a queued Job. Pure; the
handlers act on it."""

from dataclasses import dataclass

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller.conditions import Update


@dataclass(frozen=True)
class Suspension:
    set_job_suspend: bool | None  # what to set the Job's spec.suspend to; None: leave it
    suspended: bool  # whether the Job is suspended once that is done
    updates: list[Update]


def decide(spec: api.FineTuneJobSpec, job_suspended: bool) -> Suspension:
    """The user's flag drives the Job, except that Kueue alone lifts the suspension of a queued Job (it
    unsuspends the Job when it admits it)."""
    change = spec.suspend != job_suspended and (spec.suspend or spec.queue_name is None)
    suspended = spec.suspend if change else job_suspended
    if spec.suspend:
        updates = [Update(ConditionType.SUSPENDED, True, Reason.SUSPENDED,
                          "spec.suspend is true: the training pods are stopped, the checkpoints kept")]
    else:
        updates = [Update(ConditionType.SUSPENDED, False, Reason.NOT_SUSPENDED, "spec.suspend is false")]
        if suspended:
            updates.append(Update(ConditionType.ADMITTED, False, Reason.QUEUED,
                                  f"waiting for Kueue to admit it from queue '{spec.queue_name}'"))
        else:
            updates.append(Update(ConditionType.ADMITTED, True, Reason.ADMITTED, "the Job may run" + (
                f" (admitted by Kueue from '{spec.queue_name}')" if spec.queue_name else "")))
    return Suspension(spec.suspend if change else None, suspended, updates)
