"""Status conditions (metav1.Condition), written only when something changes, and the phase they sum up."""

from datetime import UTC, datetime
from typing import Any

PLANNED, ADMITTED, RUNNING, SUCCEEDED, FAILED = "Planned", "Admitted", "Running", "Succeeded", "Failed"
# Whether what the job trains outlives its pods: False (with a Warning Event) when output.claimName is unset.
OUTPUT_DURABLE = "OutputDurable"

# Reasons, one CamelCase word each.
REASON_PLANNED = "Planned"
REASON_UNSCHEDULABLE = "Unschedulable"
REASON_INVALID_MODEL = "ModelUnknown"
REASON_QUEUED = "WaitingForQueue"
REASON_ADMITTED = "Admitted"
REASON_SUSPENDED = "Suspended"
REASON_PODS_RUNNING = "PodsRunning"
REASON_PODS_PENDING = "PodsPending"
REASON_COMPLETED = "JobCompleted"
REASON_NAME_CONFLICT = "NameConflict"
REASON_INVALID_NAME = "InvalidName"
REASON_REPLANNED = "Replanned"
REASON_RESTARTING = "Restarting"
REASON_OUTPUT_ON_CLAIM = "OutputOnClaim"
REASON_EPHEMERAL_OUTPUT = "EphemeralOutput"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Conditions:
    def __init__(self, existing: list[dict[str, Any]] | None, generation: int) -> None:
        self.items = {c["type"]: dict(c) for c in existing or []}
        self.generation = generation
        self.changed: list[dict[str, Any]] = []

    def set(self, kind: str, status: bool, reason: str, message: str) -> None:
        value = "True" if status else "False"
        old = self.items.get(kind)
        if old and (old["status"], old["reason"], old["message"]) == (value, reason, message):
            return
        condition = {"type": kind, "status": value, "reason": reason, "message": message[:32768],
                     "lastTransitionTime": old["lastTransitionTime"] if old and old["status"] == value else now(),
                     "observedGeneration": self.generation}
        self.items[kind] = condition
        self.changed.append(condition)

    def true(self, kind: str) -> bool:
        return self.items.get(kind, {}).get("status") == "True"

    def as_list(self) -> list[dict[str, Any]]:
        """Every condition, in the order of the job's life (what `kubectl describe` lists)."""
        order = (PLANNED, ADMITTED, RUNNING, SUCCEEDED, FAILED, OUTPUT_DURABLE)
        return sorted(self.items.values(), key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))

    def phase(self) -> str:
        if self.true(SUCCEEDED):
            return "Succeeded"
        if self.true(FAILED):
            return "Unschedulable" if self.items[FAILED]["reason"] == REASON_UNSCHEDULABLE else "Failed"
        if self.true(RUNNING):
            return "Running"
        if self.items.get(RUNNING, {}).get("reason") == REASON_RESTARTING:
            return "Restarting"
        admitted = self.items.get(ADMITTED)
        if admitted and admitted["status"] == "False":
            return "Suspended" if admitted["reason"] == REASON_SUSPENDED else "Queued"
        if self.true(PLANNED):
            return "Planned"
        return "Pending"
