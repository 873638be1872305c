"""A suspended job whose resources changed (the only time they may: the CRD's rule) is replanned when it
resumes, and the new plan's run goes on from the checkpoints, converted across layouts as a replan after an
out-of-memory failure is. Pure; the handlers act on it like on a recovery's response: the record ends the
attempt, so the next reconcile replaces the old plan's Job with the new one's."""

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.catalog.cluster_gpus import GpuNodeGroup
from kubetune.controller import clock
from kubetune.controller.conditions import Update
from kubetune.controller.recovery import Response
from kubetune.planner import decision


def resized(spec: api.FineTuneJobSpec, plan: api.Plan) -> bool:
    """The job runs (or is about to) with other resources than its plan was made for."""
    return not spec.suspend and plan.planned_for is not None and plan.planned_for != spec.resources


def respond(spec: api.FineTuneJobSpec, plan: api.Plan, attempt: int, groups: list[GpuNodeGroup],
            prices: dict[str, float]) -> Response:
    decided = decision.decide(spec, groups, prices, resuming=plan)
    changed = _changes(plan.planned_for or api.Resources(), spec.resources)
    if decided.plan is None:
        how = f"no plan fits the new resources: {decided.message}"
        record = _record(attempt, plan, changed, how)
        reason = decided.reason or Reason.UNSCHEDULABLE
        return Response(record, [Update(ConditionType.PLANNED, False, reason, decided.message),
                                 Update(ConditionType.RUNNING, False, Reason.RESIZED, how),
                                 Update(ConditionType.FAILED, True, reason, f"resized ({changed}): {how}"),
                                 Update(ConditionType.SUCCEEDED, False, reason, "the job failed")], gave_up=True)
    how = f"replanned for the new resources: {decision.summary(decided.plan)}"
    ended = f"attempt {attempt} ended (resized: {changed})"
    return Response(_record(attempt, plan, changed, how),
                    [Update(ConditionType.PLANNED, True, Reason.REPLANNED, decision.summary(decided.plan)),
                     Update(ConditionType.RUNNING, False, Reason.RESTARTING, f"{ended}; {how}")],
                    decided.plan)


def _record(attempt: int, plan: api.Plan, changed: str, how: str) -> api.Attempt:
    return api.Attempt(number=attempt, reason=Reason.RESIZED.value, message=f"spec.resources changed: {changed}",
                       plan_summary=decision.summary(plan)[:512], predicted_peak_bytes=plan.predicted_peak_bytes,
                       action=how[:512], finished_at=clock.now())


def _changes(before: api.Resources, after: api.Resources) -> str:
    old, new = before.model_dump(by_alias=True), after.model_dump(by_alias=True)
    return ", ".join(f"{key} {old[key]} -> {new[key]}" for key in new if old[key] != new[key])
