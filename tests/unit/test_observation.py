"""Reading the training Job into the FineTuneJob's status (controller/observation.py), case by case."""

from datetime import UTC, datetime, timedelta

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller import clock, recovery
from kubetune.controller.observation import JobView, observe, output_durability

NOW = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


def started(seconds_ago: float) -> str:
    return clock.time(NOW - timedelta(seconds=seconds_ago))


def job(**fields: object) -> JobView:
    return JobView(**{"name": "tiny-train", "suspended": False, "parallelism": 2, **fields})


def states(updates: list) -> dict[str, tuple[bool | None, str]]:
    return {u.type: (u.status, u.reason) for u in updates}


def test_a_job_read_from_the_index_keeps_what_reconciling_needs() -> None:
    view = JobView.of({"metadata": {"name": "tiny-train"}, "spec": {"suspend": None, "parallelism": 2},
                       "status": {"active": 2, "ready": 1, "startTime": "2026-12-02T11:59:00Z",
                                  "conditions": [{"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"},
                                                 {"type": "Complete", "status": "False"}]}})
    assert view == JobView("tiny-train", False, 2, active=2, ready=1, complete=False,
                           failed_message="BackoffLimitExceeded", start_time="2026-12-02T11:59:00Z")


def test_a_complete_job_succeeds_and_its_progress_reaches_the_last_step() -> None:
    seen = observe(job(complete=True, completion_time="2026-12-02T12:00:00Z"), False,
                   {"progress": {"step": 117, "totalSteps": 120, "etaSeconds": 3, "summary": "117/120"}}, NOW)
    assert states(seen.updates) == {ConditionType.RUNNING: (False, Reason.COMPLETED),
                                    ConditionType.SUCCEEDED: (True, Reason.COMPLETED),
                                    ConditionType.FAILED: (False, Reason.COMPLETED)}
    assert seen.status == {"completionTime": "2026-12-02T12:00:00Z",
                           "progress": {"step": 120, "totalSteps": 120, "etaSeconds": 0, "summary": "120/120"}}
    assert seen.attempt_over and not seen.recover


def test_a_failed_job_is_recovered_from_and_changes_nothing_by_itself() -> None:
    seen = observe(job(failed_message="BackoffLimitExceeded", active=0), False, {}, NOW)
    assert seen.recover and seen.attempt_over and seen.updates == [] and seen.status == {}


@pytest.mark.parametrize(("by_spec", "reason"), [(True, Reason.SUSPENDED), (False, Reason.QUEUED)])
def test_a_suspended_job_runs_no_workers(by_spec: bool, reason: Reason) -> None:
    seen = observe(job(suspended=True, active=2), by_spec, {}, NOW)
    assert states(seen.updates) == {ConditionType.RUNNING: (False, reason)}
    assert not (seen.read_progress or seen.check_blocked or seen.recover)


def test_workers_not_yet_scheduled_are_pending() -> None:
    seen = observe(job(active=0), False, {}, NOW)
    assert states(seen.updates) == {ConditionType.RUNNING: (False, Reason.PODS_PENDING)}


def test_running_workers_start_the_clock_once_and_progress_is_read() -> None:
    first = observe(job(active=2, ready=2, start_time=started(5)), False, {}, NOW)
    assert states(first.updates) == {ConditionType.RUNNING: (True, Reason.PODS_RUNNING)}
    assert first.first_start and "startTime" in first.status and first.read_progress
    assert "2/2 workers ready" in first.updates[0].message
    later = observe(job(active=2, ready=2, start_time=started(5)), False, {"startTime": started(5)}, NOW)
    assert not later.first_start and later.status == {}


@pytest.mark.parametrize(("ready", "age", "look"), [
    (1, recovery.BLOCKED_AFTER_SECONDS + 1, True),  # slow to become ready: maybe a worker cannot start
    (1, recovery.BLOCKED_AFTER_SECONDS - 5, False),  # pods start slowly under load
    (2, 3600, False),  # all ready
])
def test_workers_slow_to_become_ready_are_looked_at_only_after_a_while(ready: int, age: float, look: bool) -> None:
    assert observe(job(active=2, ready=ready, start_time=started(age)), False, {"startTime": "x"}, NOW) \
        .check_blocked is look


def test_output_off_a_claim_is_said_to_be_lost_with_the_pods() -> None:
    lost = output_durability(api.Output())
    assert (lost.status, lost.reason) == (False, Reason.EPHEMERAL_OUTPUT) and "output.claimName" in lost.message
    kept = output_durability(api.Output(claim_name="ckpt", path="/output"))
    assert (kept.status, kept.reason) == (True, Reason.OUTPUT_ON_CLAIM) and "ckpt at /output" in kept.message
