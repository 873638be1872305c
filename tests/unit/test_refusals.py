"""What a job says when what it needs cannot be created or does not exist (controller/refusals.py)."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import Reason
from kubetune.controller import refusals
from kubetune.controller.refusals import Refused

QUOTA = ('jobs.batch "j-train" is forbidden: exceeded quota: no-jobs, requested: count/jobs.batch=1, used: '
         'count/jobs.batch=0, limited: count/jobs.batch=0')
RBAC = ('jobs.batch is forbidden: User "system:serviceaccount:kubetune-system:kubetune" cannot create resource '
        '"jobs" in API group "batch" in the namespace "team"')
WEBHOOK = 'admission webhook "policy.example.com" denied the request: training pods need a cost-center label'
POLICY = "jobs.batch \"j-train\" is forbidden: ValidatingAdmissionPolicy 'no-jobs' denied request: no Jobs here"


@pytest.mark.parametrize(("code", "reason", "message", "failed", "says"), [
    (403, "Forbidden", QUOTA, False, Reason.QUOTA_EXCEEDED),
    (403, "Forbidden", 'jobs.batch "j-train" is forbidden: status unknown for quota: no-jobs, resource: '
                       'count/jobs.batch', False, Reason.QUOTA_EXCEEDED),
    (403, "Forbidden", RBAC, False, Reason.CHILD_FORBIDDEN),
    (403, "Forbidden", WEBHOOK, True, Reason.CHILD_REFUSED),
    (422, "Invalid", POLICY, True, Reason.CHILD_REFUSED),
    (400, "BadRequest", "the object is malformed", True, Reason.CHILD_REFUSED),
])
def test_a_refused_child_fails_the_job_only_when_only_the_user_can_fix_it(code: int, reason: str, message: str,
                                                                         failed: bool, says: str) -> None:
    outcome = refusals.child_refused(Refused("Job", "j-train", code, reason, message))
    assert (outcome.failed, outcome.reason) == (failed, says)
    assert outcome.message.startswith(f"the apiserver refused to create Job j-train ({code} {reason}): {message}")


def test_what_the_pods_refer_to_is_checked_but_not_secrets() -> None:
    spec = api.FineTuneJobSpec.model_validate({
        "model": {"name": "m"}, "dataset": {"source": "train.jsonl", "claimName": "data"},
        "output": {"claimName": "models"}, "priorityClassName": "training", "hubTokenSecretRef": {"name": "hf"}})
    assert refusals.references(spec) == [("PersistentVolumeClaim", "models"), ("PersistentVolumeClaim", "data"),
                                         ("PriorityClass", "training")]


def test_a_missing_reference_is_waited_for_then_fails_the_job() -> None:
    missing = [("PersistentVolumeClaim", "models")]
    assert refusals.missing_references([], 10_000) is None
    waiting = refusals.missing_references(missing, refusals.REFERENCE_GRACE_SECONDS - 1)
    assert not waiting.failed and waiting.reason == Reason.WAITING_FOR_REFERENCES
    assert "PersistentVolumeClaim models does not exist" in waiting.message
    failed = refusals.missing_references(missing, refusals.REFERENCE_GRACE_SECONDS)
    assert failed.failed and failed.reason == Reason.MISSING_REFERENCE and "create it or fix its name" in failed.message
