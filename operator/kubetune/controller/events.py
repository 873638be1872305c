"""Which condition changes become Events, and of which type. Pure; the handlers post them."""

from dataclasses import dataclass
from typing import Any

from kubetune.api.conditions import WAITING, ConditionType, Reason


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def _worth_an_event(condition: dict[str, Any]) -> bool:
    """Events for what a user acts on: the plan, queueing and suspension, output that will be lost, the end. The
    Running condition's comings and goings stay in status (restarts have their own Warning): at 1,000 jobs an
    Event per transition was a third of the operator's apiserver writes. Nothing is said of what is not known
    yet."""
    if condition["status"] == "Unknown":
        return False
    if condition["type"] == ConditionType.RUNNING:
        return bool(condition["reason"] in (*WAITING, Reason.WAITING_FOR_CAPACITY))
    if condition["type"] in (ConditionType.ADMITTED, ConditionType.OUTPUT_DURABLE):
        return bool(condition["status"] == "False")
    return bool(condition["type"] == ConditionType.PLANNED or condition["status"] == "True")


def for_changes(changed: list[dict[str, Any]]) -> list[Event]:
    events = []
    for condition in changed:
        if not _worth_an_event(condition):
            continue
        warning = condition["type"] in (ConditionType.FAILED, ConditionType.OUTPUT_DURABLE) or \
            condition["reason"] in (Reason.UNSCHEDULABLE, *WAITING)
        events.append(Event("Warning" if warning else "Normal", condition["reason"],
                            f"{condition['type']}={condition['status']}: {condition['message']}"))
    return events
