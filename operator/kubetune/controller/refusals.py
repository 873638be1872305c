"""What a FineTuneJob says when what it needs cannot be created or does not exist: a child the apiserver
refuses, or an object its training pods refer to that is missing. Pure decisions; the handlers act on them.

Only the user can fix an invalid child or a reference that never appears: the job fails, naming it. A quota
or the operator's own permissions may change without the spec changing: the job waits, saying why, and
tries again at every reconcile."""

from dataclasses import dataclass

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import Reason


class Refused(Exception):
    """The apiserver refused to create an object: invalid (400, 422) or forbidden (403: RBAC, a quota, an
    admission webhook). Retrying the same request gets the same answer; other errors may pass."""

    def __init__(self, kind: str, name: str, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.name, self.code, self.reason, self.message = kind, name, code, reason, message


# A claim or PriorityClass created together with the job may arrive a little after it.
REFERENCE_GRACE_SECONDS = 120


@dataclass(frozen=True)
class Outcome:
    failed: bool  # only the user can fix it
    reason: Reason
    message: str


def child_refused(refused: Refused) -> Outcome:
    what = (f"the apiserver refused to create {refused.kind} {refused.name} ({refused.code} {refused.reason}): "
            f"{refused.message}")
    # "exceeded quota: ...", or "status unknown for quota: ..." until the quota controller has counted.
    if refused.code == 403 and "quota" in refused.message:
        return Outcome(False, Reason.QUOTA_EXCEEDED, f"{what}; trying again until the namespace's quota allows it")
    if refused.code == 403 and "admission webhook" not in refused.message:
        return Outcome(False, Reason.CHILD_FORBIDDEN, f"{what}; the operator's ServiceAccount needs that permission (the "
                                               "chart's RBAC grants it): trying again")
    return Outcome(True, Reason.CHILD_REFUSED, what)


def references(spec: api.FineTuneJobSpec) -> list[tuple[str, str]]:
    """What the training pods need to exist before they can start, as (kind, name). Secrets are the kubelet's
    to find (the operator may not read them): a missing one shows as the pods' CreateContainerConfigError."""
    found = [("PersistentVolumeClaim", claim) for claim in (spec.output.claim_name, spec.dataset.claim_name) if claim]
    if spec.priority_class_name:
        found.append(("PriorityClass", spec.priority_class_name))
    return found


def missing_references(missing: list[tuple[str, str]], age_seconds: float) -> Outcome | None:
    if not missing:
        return None
    names = ", ".join(f"{kind} {name}" for kind, name in missing)
    if age_seconds < REFERENCE_GRACE_SECONDS:
        return Outcome(False, Reason.WAITING_FOR_REFERENCES, f"{names} does not exist (yet): the training pods could not "
                       f"start; waiting up to {REFERENCE_GRACE_SECONDS} s from the job's creation for it to appear")
    return Outcome(True, Reason.MISSING_REFERENCE, f"{names} does not exist {REFERENCE_GRACE_SECONDS} s after the job was "
                   "created, and the training pods cannot start without it: create it or fix its name in the spec")
