"""Which condition changes a user hears of as Events (controller/events.py)."""

import pytest

from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller.events import for_changes


def change(kind: ConditionType, status: str, reason: Reason) -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": "why"}


@pytest.mark.parametrize(("condition", "expected"), [
    (change(ConditionType.PLANNED, "True", Reason.PLANNED), "Normal"),
    (change(ConditionType.PLANNED, "False", Reason.UNSCHEDULABLE), "Warning"),
    (change(ConditionType.FAILED, "True", Reason.GPU_OUT_OF_MEMORY), "Warning"),
    (change(ConditionType.SUCCEEDED, "True", Reason.COMPLETED), "Normal"),
    (change(ConditionType.SUSPENDED, "True", Reason.SUSPENDED), "Normal"),
    (change(ConditionType.SUSPENDED, "False", Reason.NOT_SUSPENDED), None),
    (change(ConditionType.ADMITTED, "False", Reason.QUEUED), "Normal"),
    (change(ConditionType.ADMITTED, "True", Reason.ADMITTED), None),
    (change(ConditionType.OUTPUT_DURABLE, "False", Reason.EPHEMERAL_OUTPUT), "Warning"),
    (change(ConditionType.OUTPUT_DURABLE, "True", Reason.OUTPUT_ON_CLAIM), None),
    # The workers' comings and goings stay in status, unless the job waits on something else.
    (change(ConditionType.RUNNING, "True", Reason.PODS_RUNNING), None),
    (change(ConditionType.RUNNING, "False", Reason.RESTARTING), None),
    (change(ConditionType.RUNNING, "False", Reason.QUOTA_EXCEEDED), "Warning"),
    (change(ConditionType.RUNNING, "False", Reason.WAITING_FOR_REFERENCES), "Warning"),
    # Nothing is said of what is not known yet.
    (change(ConditionType.PLANNED, "Unknown", Reason.NOT_YET_OBSERVED), None),
])
def test_which_changes_become_events(condition: dict[str, str], expected: str | None) -> None:
    events = for_changes([condition])
    assert [e.type for e in events] == ([expected] if expected else [])
    if events:
        assert events[0].reason == condition["reason"]
        assert events[0].message == f"{condition['type']}={condition['status']}: why"
