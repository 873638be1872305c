"""Status conditions (metav1.Condition), written only when something changes, and the phase they sum up."""

from dataclasses import dataclass
from typing import Any

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ORDER, TRACKED, ConditionType, Reason
from kubetune.controller.clock import now


def finished(conditions: list[dict[str, Any]]) -> bool:
    """Succeeded or failed for good: nothing is reconciled any more."""
    return any(c.get("type") in (ConditionType.SUCCEEDED, ConditionType.FAILED) and c.get("status") == "True"
               for c in conditions)


@dataclass(frozen=True)
class Update:
    """A condition a policy decided on; None is Unknown."""

    type: ConditionType
    status: bool | None
    reason: Reason
    message: str


class Conditions:
    def __init__(self, existing: list[dict[str, Any]] | None, generation: int) -> None:
        self.items = {c["type"]: dict(c) for c in existing or []}
        self.generation = generation
        self.changed: list[dict[str, Any]] = []
        for kind in TRACKED:
            if kind not in self.items:
                self.set(kind, None, Reason.NOT_YET_OBSERVED, "the operator has not decided this yet")

    def set(self, kind: ConditionType, status: bool | None, reason: Reason, message: str) -> None:
        """Set a condition; None is Unknown."""
        value = "Unknown" if status is None else "True" if status else "False"
        old = self.items.get(kind)
        if old and (old["status"], old["reason"], old["message"]) == (value, reason, message):
            return
        condition = {"type": str(kind), "status": value, "reason": str(reason), "message": message[:32768],
                     "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value else now(),
                     "observedGeneration": self.generation}
        self.items[kind] = condition
        self.changed.append(condition)

    def apply(self, updates: list[Update]) -> None:
        for update in updates:
            self.set(update.type, update.status, update.reason, update.message)

    def true(self, kind: ConditionType) -> bool:
        return self.items.get(kind, {}).get("status") == "True"

    @property
    def finished(self) -> bool:
        return finished(list(self.items.values()))

    def reason(self, kind: ConditionType) -> str | None:
        return self.items.get(kind, {}).get("reason")

    def as_list(self) -> list[dict[str, Any]]:
        """Every condition, in the order of the job's life (what `kubectl describe` lists)."""
        return sorted(self.items.values(),
                      key=lambda c: ORDER.index(c["type"]) if c["type"] in ORDER else len(ORDER))

    def phase(self) -> api.JobPhase:
        phase = api.JobPhase
        if self.true(ConditionType.SUCCEEDED):
            return phase.SUCCEEDED
        if self.true(ConditionType.FAILED):
            return phase.UNSCHEDULABLE if self.reason(ConditionType.FAILED) == Reason.UNSCHEDULABLE else phase.FAILED
        if self.true(ConditionType.SUSPENDED):
            return phase.SUSPENDED
        if self.true(ConditionType.RUNNING):
            return phase.RUNNING
        if self.reason(ConditionType.RUNNING) == Reason.RESTARTING:
            return phase.RESTARTING
        if self.reason(ConditionType.ADMITTED) == Reason.QUEUED:
            return phase.QUEUED
        if self.reason(ConditionType.RUNNING) == Reason.WAITING_FOR_CAPACITY:
            return phase.WAITING
        if self.true(ConditionType.PLANNED):
            return phase.PLANNED
        return phase.PENDING
