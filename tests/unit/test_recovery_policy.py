"""What the operator does after a failed attempt (controller/recovery.py), as pure decisions: which plan an
out-of-memory error of the GPU or of the host leads to, which budget each failure spends, and when giving
up is the only honest answer."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.api.vocabulary import Offload, ZeroStage
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.controller import recovery
from kubetune.controller.recovery import Action, Failure, Kind
from kubetune.planner.decision import decide
from tests.unit.test_real_node import real_node, tiny_spec

GIB = 1024**3


def first_plan(spec: api.FineTuneJobSpec) -> tuple[api.Plan, list]:
    groups = node_groups([real_node()], [])
    decision = decide(spec, groups)
    assert decision.plan is not None
    return decision.plan, groups


@pytest.mark.parametrize("peak", [0, 3 * GIB, 30 * GIB], ids=["no-peak-reported", "peak-below-device", "peak-above"])
def test_a_gpu_oom_of_a_small_model_replans_to_a_more_frugal_plan_and_never_the_same(peak: int) -> None:
    """The demo's model is almost all CUDA context: scaling that too would leave no plan at all, so the scale
    applies to what the configuration changes, and the replan is predicted to need less of it."""
    plan, groups = first_plan(tiny_spec())
    failure = Failure(Kind.OUT_OF_MEMORY, "oom", measured_peak_bytes=peak, device_total_bytes=0)
    scale = recovery.memory_scale(failure, plan, 1.0)
    replan = decide(tiny_spec(), groups, memory_scale=scale, resuming=plan).plan
    assert replan is not None
    fixed = plan.memory.overhead_bytes
    assert replan.predicted_peak_bytes - fixed < (plan.predicted_peak_bytes - fixed) / recovery.REPLAN_MARGIN
    # The failed plan would have needed more than its whole GPU at this scale.
    assert fixed + (plan.predicted_peak_bytes - fixed) * scale > plan.gpu_memory_bytes
    # What the checkpoints need stays (same method, precision, no lower ZeRO stage); the pins hold.
    assert (replan.method, replan.precision, replan.gpus, replan.nodes) == (plan.method, plan.precision, 2, 2)
    assert replan.zero_stage >= plan.zero_stage


def test_the_scale_never_falls_below_what_an_earlier_failure_showed() -> None:
    plan, _ = first_plan(tiny_spec())
    small = Failure(Kind.OUT_OF_MEMORY, "oom")
    assert recovery.memory_scale(small, plan, 50_000.0) == pytest.approx(50_000 * recovery.REPLAN_MARGIN)


def test_no_plan_fits_when_the_model_is_already_at_its_most_frugal() -> None:
    spec = tiny_spec(gpus=None, nodes=None)
    frugal = spec.model_copy(update={"method": spec.method.model_copy(update={
        "micro_batch": 1, "gradient_checkpointing": api.Toggle.ENABLED, "zero_stage": 3,
        "offload": Offload.ALL})})
    plan, groups = first_plan(frugal)
    scale = recovery.memory_scale(Failure(Kind.OUT_OF_MEMORY, "oom"), plan, 1.0)
    decision = decide(frugal, groups, memory_scale=scale, resuming=plan)
    assert decision.plan is None and "as measured" in decision.message


def offloading(plan: api.Plan, offload: Offload) -> api.Plan:
    return plan.model_copy(update={"offload": offload, "zero_stage": ZeroStage.PARAMETERS})


@pytest.mark.parametrize(("offload", "most"), [(Offload.ALL, Offload.OPTIMIZER), (Offload.OPTIMIZER, Offload.NONE)])
def test_a_host_oom_replans_with_less_offload(offload: Offload, most: Offload) -> None:
    plan, groups = first_plan(tiny_spec())
    failed = offloading(plan, offload)
    assert recovery.action(Failure(Kind.HOST_OUT_OF_MEMORY, "killed"), [], api.Recovery(), failed) is Action.REPLAN
    assert recovery.less_offload(failed) == most
    replan = decide(tiny_spec(), groups, resuming=failed, max_offload=recovery.less_offload(failed)).plan
    assert replan is not None and replan.offload in ([Offload.NONE, Offload.OPTIMIZER] if most is Offload.OPTIMIZER else [Offload.NONE])


def test_a_host_oom_of_a_pinned_offload_has_no_plan_that_offloads_less() -> None:
    spec = tiny_spec()
    spec = spec.model_copy(update={"method": spec.method.model_copy(update={"offload": Offload.ALL,
                                                                            "zero_stage": 3})})
    plan, groups = first_plan(spec)
    assert plan.offload is Offload.ALL
    decision = decide(spec, groups, resuming=plan, max_offload=recovery.less_offload(plan))
    assert decision.plan is None


def attempt(reason: Kind) -> api.Attempt:
    return api.Attempt(number=1, reason=reason.value, message="", plan_summary="", predicted_peak_bytes=1,
                       action="", finished_at="2026-12-02T00:00:00Z")


@pytest.mark.parametrize(
    ("kind", "offload", "earlier", "expected"),
    [
        (Kind.OUT_OF_MEMORY, Offload.NONE, [], Action.REPLAN),
        (Kind.OUT_OF_MEMORY, Offload.NONE, [Kind.WORKER_FAILED] * 3, Action.REPLAN),  # restarts are another budget
        (Kind.OUT_OF_MEMORY, Offload.NONE, [Kind.OUT_OF_MEMORY, Kind.HOST_OUT_OF_MEMORY, Kind.OUT_OF_MEMORY], Action.GIVE_UP),
        (Kind.HOST_OUT_OF_MEMORY, Offload.OPTIMIZER, [], Action.REPLAN),
        (Kind.HOST_OUT_OF_MEMORY, Offload.NONE, [], Action.GIVE_UP),  # nothing on the host to give back
        (Kind.INVALID_INPUT, Offload.NONE, [], Action.GIVE_UP),
        (Kind.WORKER_FAILED, Offload.NONE, [Kind.OUT_OF_MEMORY] * 3, Action.RESTART),
        (Kind.WORKER_LOST, Offload.NONE, [Kind.WORKER_FAILED, Kind.WORKER_LOST], Action.RESTART),
        (Kind.WORKER_LOST, Offload.NONE, [Kind.WORKER_FAILED, Kind.WORKER_LOST, Kind.WORKER_LOST], Action.GIVE_UP),
    ],
)
def test_each_failure_spends_its_own_budget(kind: Kind, offload: Offload, earlier: list[Kind], expected: Action) -> None:
    plan, _ = first_plan(tiny_spec())
    failed = offloading(plan, offload) if offload is not Offload.NONE else plan
    assert recovery.action(Failure(kind, "x"), [attempt(k) for k in earlier], api.Recovery(), failed) is expected


def test_giving_up_says_why_in_words_a_user_acts_on() -> None:
    plan, _ = first_plan(tiny_spec())
    host = recovery.why_not_retried(Failure(Kind.HOST_OUT_OF_MEMORY, "killed"), plan, [])
    assert "offloads nothing" in host and "more memory per GPU" in host
    assert recovery.why_not_retried(Failure(Kind.INVALID_INPUT, "bad"), plan, []) == \
        "gave up: retrying cannot fix the input"
    assert "after 4 attempts" in recovery.why_not_retried(Failure(Kind.WORKER_FAILED, "x"), plan, [attempt(Kind.WORKER_FAILED)] * 3)


def pod(name: str, code: int, message: str) -> dict:
    return {"metadata": {"name": name}, "status": {"containerStatuses": [
        {"name": "trainer", "state": {"terminated": {"exitCode": code, "reason": "Error", "message": message}}}]}}


PEER_LOST = "kubetune-error RuntimeError: [pair.cc:561] Connection closed by peer [10.244.0.15]:38046."
STOPPED = "kubetune-stopped the container was asked to stop (signal 15): its pod was deleted"


@pytest.mark.parametrize(("pods", "kind", "names"), [
    # A crash ends the Job, which then stops the other pod: the crash explains it.
    ([pod("p-0", 1, "kubetune-error ValueError: nan loss"), pod("p-1", 143, STOPPED)], Kind.WORKER_FAILED, "p-0"),
    # A pod stopped from outside leaves its peer's collectives broken: the stop explains them.
    ([pod("p-0", 1, PEER_LOST), pod("p-1", 143, STOPPED)], Kind.WORKER_LOST, "p-1"),
    # Only broken collectives: still a failure, named as the worker said it.
    ([pod("p-0", 1, PEER_LOST)], Kind.WORKER_FAILED, "p-0"),
])
def test_the_failure_that_explains_the_others_is_the_one_reported(pods: list, kind: Kind, names: str) -> None:
    failure = recovery.classify(pods, job_message="")
    assert failure.kind is kind and failure.message.startswith(f"pod {names} "), failure


def test_a_gpu_oom_is_answered_with_a_replan_recorded_with_its_attempt() -> None:
    plan, groups = first_plan(tiny_spec())
    failure = Failure(Kind.OUT_OF_MEMORY, "rank 1 ran out", measured_peak_bytes=30 * GIB, device_total_bytes=24 * GIB)
    response = recovery.respond(failure, 1, [], tiny_spec(), plan, 1.0, groups, {})
    assert response.plan is not None and not response.gave_up
    assert response.memory_scale == pytest.approx(recovery.memory_scale(failure, plan, 1.0))
    assert [(u.type, u.status, u.reason) for u in response.updates] == [
        (ConditionType.PLANNED, True, Reason.REPLANNED), (ConditionType.RUNNING, False, Reason.RESTARTING)]
    assert response.record.reason == Reason.GPU_OUT_OF_MEMORY and response.record.number == 1
    assert response.record.measured_peak_bytes == 30 * GIB and response.record.action.startswith("replanned for")
    assert response.warning is not None and response.warning[0] is Reason.REPLANNED


@pytest.mark.parametrize(("claim", "how"), [("ckpt", "restarted from the newest checkpoint"),
                                            (None, "restarted from the start")])
def test_a_lost_worker_restarts_from_what_survives(claim: str | None, how: str) -> None:
    plan, groups = first_plan(tiny_spec())
    spec = tiny_spec().model_copy(update={"output": api.Output(claim_name=claim)})
    response = recovery.respond(Failure(Kind.WORKER_LOST, "node gone"), 2, [attempt(Kind.WORKER_LOST)], spec, plan,
                                1.0, groups, {})
    assert response.plan is None and not response.gave_up and response.record.action.startswith(how)
    assert [(u.type, u.reason) for u in response.updates] == [(ConditionType.RUNNING, Reason.RESTARTING)]
    assert response.warning is not None and response.warning[0] is Reason.RESTARTING


def test_bad_input_fails_the_job_at_once_saying_why() -> None:
    plan, groups = first_plan(tiny_spec())
    response = recovery.respond(Failure(Kind.INVALID_INPUT, "dataset has no 'text' field"), 1, [], tiny_spec(), plan,
                                1.0, groups, {})
    assert response.gave_up and response.warning is None
    failed = next(u for u in response.updates if u.type is ConditionType.FAILED)
    assert failed.status is True and failed.reason is Reason.INVALID_INPUT
    assert "no 'text' field" in failed.message and "retrying cannot fix the input" in failed.message


def test_a_replan_that_finds_nothing_gives_up_naming_the_scale() -> None:
    spec = tiny_spec(gpus=None, nodes=None)
    frugal = spec.model_copy(update={"method": spec.method.model_copy(update={
        "micro_batch": 1, "gradient_checkpointing": api.Toggle.ENABLED, "zero_stage": 3, "offload": Offload.ALL})})
    plan, groups = first_plan(frugal)
    response = recovery.respond(Failure(Kind.OUT_OF_MEMORY, "oom"), 1, [], frugal, plan, 1.0, groups, {})
    assert response.gave_up and response.plan is None and "no plan fits" in response.record.action
