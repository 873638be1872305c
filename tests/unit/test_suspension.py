"""Who suspends the training Job (controller/suspension.py): the user's spec.suspend, or Kueue for a job in a
queue, which alone may lift the suspension of a queued Job."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller.suspension import decide

SPEC = api.FineTuneJobSpec.model_validate({"model": {"name": "tiny"}, "dataset": {"source": "a/b"}})


def spec(suspend: bool, queue: str | None) -> api.FineTuneJobSpec:
    return SPEC.model_copy(update={"suspend": suspend, "queue_name": queue})


@pytest.mark.parametrize(("suspend", "queue", "job_suspended", "set_to", "suspended", "admitted"), [
    (False, None, False, None, False, (True, Reason.ADMITTED)),
    (True, None, False, True, True, None),  # the user suspends: the Job follows
    (False, None, True, False, False, (True, Reason.ADMITTED)),  # and resumes
    (False, "q", True, None, True, (False, Reason.QUEUED)),  # Kueue has not admitted it: left to Kueue
    (False, "q", False, None, False, (True, Reason.ADMITTED)),  # Kueue admitted it
    (True, "q", False, True, True, None),  # a user may suspend a queued job too
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
