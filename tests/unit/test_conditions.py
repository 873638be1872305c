"""The conditions written to status: every one there from the first reconcile (Unknown until decided), in the
order of a job's life, and the phase that sums them up for `kubectl get`."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import TRACKED, ConditionType, Reason
from kubetune.controller.conditions import Conditions, Update


def test_a_new_job_shows_every_condition_as_unknown() -> None:
    conds = Conditions(None, generation=1)
    assert [(c["type"], c["status"], c["reason"]) for c in conds.as_list()] == \
        [(kind, "Unknown", Reason.NOT_YET_OBSERVED) for kind in TRACKED]
    assert conds.phase() is api.JobPhase.PENDING


def test_every_condition_set_is_written_in_the_order_of_the_jobs_life() -> None:
    conds = Conditions([{"type": "SomethingOlder", "status": "True", "reason": "R", "message": "",
                         "lastTransitionTime": "2026-12-01T00:00:00Z"}], generation=1)
    conds.apply([Update(ConditionType.OUTPUT_DURABLE, False, Reason.EPHEMERAL_OUTPUT, "lost with the pods"),
                 Update(ConditionType.RUNNING, True, Reason.PODS_RUNNING, "2/2 workers ready"),
                 Update(ConditionType.PLANNED, True, Reason.PLANNED, "A10G x 2")])
    assert [x["type"] for x in conds.as_list()] == [*TRACKED, ConditionType.OUTPUT_DURABLE, "SomethingOlder"]
    assert conds.phase() is api.JobPhase.RUNNING


def test_an_unchanged_condition_is_not_rewritten_and_keeps_its_transition_time() -> None:
    old = {"type": "Running", "status": "True", "reason": "PodsRunning", "message": "1/2 workers ready",
           "lastTransitionTime": "2026-12-01T00:00:00Z"}
    conds = Conditions([old], generation=2)
    conds.changed.clear()
    conds.set(ConditionType.RUNNING, True, Reason.PODS_RUNNING, "1/2 workers ready")
    assert conds.changed == []
    conds.set(ConditionType.RUNNING, True, Reason.PODS_RUNNING, "2/2 workers ready")
    assert conds.changed[0]["lastTransitionTime"] == "2026-12-01T00:00:00Z"
    assert conds.changed[0]["observedGeneration"] == 2


@pytest.mark.parametrize(("updates", "phase"), [
    ([(ConditionType.PLANNED, True, Reason.PLANNED)], api.JobPhase.PLANNED),
    ([(ConditionType.PLANNED, False, Reason.UNSCHEDULABLE), (ConditionType.FAILED, True, Reason.UNSCHEDULABLE)],
     api.JobPhase.UNSCHEDULABLE),
    ([(ConditionType.FAILED, True, Reason.GPU_OUT_OF_MEMORY)], api.JobPhase.FAILED),
    ([(ConditionType.ADMITTED, False, Reason.QUEUED)], api.JobPhase.QUEUED),
    # Suspension wins over workers still shutting down.
    ([(ConditionType.RUNNING, True, Reason.PODS_RUNNING), (ConditionType.SUSPENDED, True, Reason.SUSPENDED)],
     api.JobPhase.SUSPENDED),
    ([(ConditionType.RUNNING, False, Reason.RESTARTING)], api.JobPhase.RESTARTING),
    ([(ConditionType.RUNNING, False, Reason.COMPLETED), (ConditionType.SUCCEEDED, True, Reason.COMPLETED)],
     api.JobPhase.SUCCEEDED),
])
def test_the_phase_sums_up_the_conditions(updates: list[tuple[ConditionType, bool, Reason]],
                                          phase: api.JobPhase) -> None:
    conds = Conditions(None, generation=1)
    conds.apply([Update(kind, status, reason, "") for kind, status, reason in updates])
    assert conds.phase() is phase
