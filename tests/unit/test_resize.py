"""A suspended job resized (controller/resize.py): resumed with other resources than its plan was made for, it
is replanned for them, keeping what its checkpoints need, without spending its restart budget; resources no
plan fits fail it with the reason."""

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.controller import recovery, resize
from kubetune.controller.recovery import Action, Failure, Kind
from tests.unit.test_real_node import tiny_spec
from tests.unit.test_recovery_policy import first_plan


def with_resources(spec: api.FineTuneJobSpec, suspend: bool = False, **resources: object) -> api.FineTuneJobSpec:
    changed = spec.resources.model_copy(update=resources)
    return spec.model_copy(update={"resources": changed, "suspend": suspend})


def test_a_plan_knows_the_resources_it_was_made_for() -> None:
    spec = tiny_spec()
    plan, _ = first_plan(spec)
    assert plan.planned_for == spec.resources and not resize.resized(spec, plan)


def test_a_resize_counts_once_the_job_resumes() -> None:
    plan, _ = first_plan(tiny_spec())
    assert not resize.resized(with_resources(tiny_spec(), suspend=True, gpus=4, nodes=4), plan)
    assert resize.resized(with_resources(tiny_spec(), gpus=4, nodes=4), plan)
    # A plan stored by an operator that did not record its resources is left alone.
    assert not resize.resized(with_resources(tiny_spec(), gpus=4), plan.model_copy(update={"planned_for": None}))


def test_a_resumed_job_with_more_gpus_is_replanned_onto_them_keeping_its_checkpoints_layout() -> None:
    plan, groups = first_plan(tiny_spec())
    grown = with_resources(tiny_spec(), gpus=4, nodes=4)
    response = resize.respond(grown, plan, 1, groups, {})
    assert response.plan is not None and (response.plan.gpus, response.plan.nodes) == (4, 4)
    assert (response.plan.method, response.plan.precision) == (plan.method, plan.precision)
    assert response.plan.zero_stage >= plan.zero_stage and response.plan.planned_for == grown.resources
    assert (response.record.reason, response.record.number) == (Reason.RESIZED, 1)
    assert "gpus 2 -> 4" in response.record.message and "nodes 2 -> 4" in response.record.message
    by_type = {u.type: u for u in response.updates}
    assert by_type[ConditionType.PLANNED].reason is Reason.REPLANNED
    assert by_type[ConditionType.RUNNING].reason is Reason.RESTARTING and not response.gave_up


def test_a_resize_no_plan_fits_fails_the_job_saying_so() -> None:
    plan, groups = first_plan(tiny_spec())
    response = resize.respond(with_resources(tiny_spec(), gpu_types=["H100-SXM-80GB"]), plan, 1, groups, {})
    assert response.gave_up and response.plan is None
    failed = next(u for u in response.updates if u.type is ConditionType.FAILED)
    assert failed.status is True and "gpuTypes" in failed.message and "no plan fits" in failed.message


def test_a_resize_spends_no_restart() -> None:
    plan, groups = first_plan(tiny_spec())
    resized = resize.respond(with_resources(tiny_spec(), gpus=4, nodes=4), plan, 1, groups, {}).record
    lost = Failure(Kind.WORKER_LOST, "pod deleted")
    assert recovery.action(lost, [resized], api.Recovery(max_restarts=1), plan) is Action.RESTART
