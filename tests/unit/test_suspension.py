"""Who suspends the training Job (controller/suspension.py): the user's spec.suspend, or Kueue for a job in a
queue, which owns the Job's suspension: a user's suspension of a queued job goes through its Workload."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.controller.suspension import Workload, decide
from kubetune.planner.decision import decide as plan
from kubetune.resources.job import job
from tests.unit.test_real_node import real_node, tiny_spec

SPEC = api.FineTuneJobSpec.model_validate({"model": {"name": "tiny"}, "dataset": {"source": "a/b"}})


def spec(suspend: bool, queue: str | None) -> api.FineTuneJobSpec:
    return SPEC.model_copy(update={"suspend": suspend, "queue_name": queue})


@pytest.mark.parametrize(("suspend", "queue", "job_suspended", "set_to", "suspended", "admitted"), [
    (False, None, False, None, False, (True, Reason.ADMITTED)),
    (True, None, False, True, True, None),  # the user suspends: the Job follows
    (False, None, True, False, False, (True, Reason.ADMITTED)),  # and resumes
    (False, "q", True, None, True, (False, Reason.QUEUED)),  # Kueue has not admitted it: left to Kueue
    (False, "q", False, None, False, (True, Reason.ADMITTED)),  # Kueue admitted it
    (True, "q", False, None, False, None),  # a user may suspend a queued job too: through Kueue, below
])
def test_who_suspends_the_job(suspend: bool, queue: str | None, job_suspended: bool, set_to: bool | None,
                              suspended: bool, admitted: tuple[bool, Reason] | None) -> None:
    held = decide(spec(suspend, queue), job_suspended)
    assert (held.set_job_suspend, held.suspended) == (set_to, suspended)
    by_type = {u.type: (u.status, u.reason) for u in held.updates}
    assert by_type[ConditionType.SUSPENDED] == ((True, Reason.SUSPENDED) if suspend else (False, Reason.NOT_SUSPENDED))
    assert by_type.get(ConditionType.ADMITTED) == admitted


def test_a_queued_job_names_its_queue() -> None:
    queued = next(u for u in decide(spec(False, "team-a"), True).updates if u.type is ConditionType.ADMITTED)
    assert "team-a" in queued.message


def workload(active: bool = True, **conditions: tuple[str, str, str]) -> Workload:
    return Workload.of({"metadata": {"name": "job-tiny-train-1a2b3"}, "spec": {"active": active, "queueName": "q"},
                        "status": {
        "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, (s, r, m) in conditions.items()]}})


@pytest.mark.parametrize(("suspend", "active", "set_active"), [
    (True, True, False),  # the user suspends a queued job: Kueue evicts its Workload and suspends the Job
    (False, False, True),  # and resumes it: the Workload queues again
    (False, True, None),
    (True, False, None),
])
def test_a_queued_job_is_suspended_through_its_workload(suspend: bool, active: bool, set_active: bool | None) -> None:
    held = decide(spec(suspend, "q"), job_suspended=False, workload=workload(active))
    assert (held.set_job_suspend, held.set_workload_active) == (None, set_active)


def test_a_job_kueue_manages_without_a_queue_in_its_spec_is_left_to_kueue() -> None:
    """Kueue's manageJobsWithoutQueueName or default LocalQueue: Kueue suspended the Job at creation and made
    its Workload; kubetune does not unsuspend it, and suspends it through the Workload."""
    waiting = decide(spec(False, None), job_suspended=True, workload=workload())
    assert (waiting.set_job_suspend, waiting.suspended) == (None, True)
    admitted = next(u for u in waiting.updates if u.type is ConditionType.ADMITTED)
    assert (admitted.status, admitted.reason) == (False, Reason.QUEUED) and "'q'" in admitted.message
    suspending = decide(spec(True, None), job_suspended=False, workload=workload())
    assert (suspending.set_job_suspend, suspending.set_workload_active) == (None, False)


def test_a_queued_job_says_why_kueue_does_not_admit_it() -> None:
    no_flavor = workload(QuotaReserved=("False", "Pending", "couldn't assign flavors to pod set main: flavor l4 "
                                                             "doesn't match node affinity"))
    queued = next(u for u in decide(spec(False, "q"), True, no_flavor).updates if u.type is ConditionType.ADMITTED)
    assert (queued.status, queued.reason) == (False, Reason.QUEUED)
    assert "doesn't match node affinity" in queued.message and "'q'" in queued.message


def test_a_preempted_job_says_it_was_evicted_and_why() -> None:
    preempted = workload(QuotaReserved=("False", "Pending", "couldn't assign flavors: insufficient quota"),
                         Evicted=("True", "Preempted", "Preempted to accommodate a workload (UID: 1) due to "
                                                       "prioritization in the ClusterQueue"))
    queued = next(u for u in decide(spec(False, "q"), True, preempted).updates if u.type is ConditionType.ADMITTED)
    assert "evicted (Preempted)" in queued.message and "prioritization" in queued.message


def test_a_queued_job_without_a_workload_asks_whether_kueue_runs() -> None:
    queued = next(u for u in decide(spec(False, "q"), True, None).updates if u.type is ConditionType.ADMITTED)
    assert "no Workload" in queued.message and "Kueue running" in queued.message


def test_an_admitted_workload_has_nothing_to_wait_for() -> None:
    admitted = workload(QuotaReserved=("True", "QuotaReserved", "Quota reserved in ClusterQueue c"),
                        Admitted=("True", "Admitted", "The workload is admitted"))
    assert admitted.waiting == "" and admitted.active


def test_a_queued_jobs_kueue_labels_reach_its_job_where_kueue_reads_them() -> None:
    labels = {"kueue.x-k8s.io/priority-class": "low", "kueue.x-k8s.io/max-exec-time-seconds": "3600",
              "team": "nlp"}
    queued = tiny_spec().model_copy(update={"queue_name": "q"})
    decided = plan(queued, node_groups([real_node()], []))
    built = job("tiny", queued, decided.plan, decided.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0", labels_of_job=labels)
    assert {k: v for k, v in built["metadata"]["labels"].items() if k.startswith("kueue.x-k8s.io/")} == {
        "kueue.x-k8s.io/queue-name": "q", "kueue.x-k8s.io/priority-class": "low",
        "kueue.x-k8s.io/max-exec-time-seconds": "3600"}
    assert "team" not in built["metadata"]["labels"] and built["spec"]["suspend"] is True
    unqueued = job("tiny", tiny_spec(), decided.plan, decided.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0", labels_of_job=labels)
    assert not any(k.startswith("kueue.x-k8s.io/") for k in unqueued["metadata"]["labels"])
