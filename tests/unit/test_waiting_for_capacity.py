"""A job that fits the cluster waits for busy GPUs instead of failing (planner/decision.py): planned against
every node of the allowed types, started on what is free when something fits there, and failed only when no
configuration fits the cluster at all."""

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import ConditionType, Reason
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.controller.conditions import Conditions
from kubetune.devcluster import profile
from kubetune.planner.decision import decide, waiting_for_capacity
from tests.unit.test_real_node import held_by

NODES = profile.load("default").node_manifests()


def busy(*prefixes: str) -> list[dict]:
    """Pods holding every GPU of the default profile's nodes whose names start so."""
    return [held_by(n["metadata"]["name"], int(n["status"]["allocatable"]["nvidia.com/gpu"]))
            for n in NODES if n["metadata"]["name"].startswith(prefixes)]


def spec(**fields: object) -> api.FineTuneJobSpec:
    return api.FineTuneJobSpec.model_validate({"model": {"name": "Llama-3.1-8B"}, "dataset": {"source": "a/b"},
                                               "training": {"seqLen": 4096}, **fields})


def test_a_job_whose_gpus_are_all_busy_is_planned_and_waits_saying_for_what() -> None:
    groups = node_groups(NODES, busy("h100-"))
    decision = decide(spec(resources={"gpuTypes": ["H100-SXM-80GB"]}), groups)
    assert decision.plan is not None and decision.reason is None
    waiting = waiting_for_capacity(decision.plan, groups)
    assert waiting is not None and "NVIDIA-H100-80GB-HBM3 nodes hold 0 such pod(s) now and 16 when free" in waiting
    assert waiting_for_capacity(decision.plan, node_groups(NODES, [])) is None  # and starts once they free


def test_a_job_starts_now_on_free_gpus_rather_than_wait_for_better_busy_ones_and_says_so() -> None:
    free_cluster = decide(spec(resources={"gpuTypes": ["H100-SXM-80GB", "A100-SXM4-80GB"], "objective": "Fastest"}),
                          node_groups(NODES, []))
    assert free_cluster.plan is not None and free_cluster.plan.gpu_type == "H100-SXM-80GB"
    groups = node_groups(NODES, busy("h100-"))
    now = decide(spec(resources={"gpuTypes": ["H100-SXM-80GB", "A100-SXM4-80GB"], "objective": "Fastest"}), groups)
    assert now.plan is not None and now.plan.gpu_type == "A100-SXM4-80GB"
    assert waiting_for_capacity(now.plan, groups) is None
    assert any("H100-SXM-80GB" in line and "no free capacity now" in line for line in now.plan.explanation)


def test_a_job_kueue_admits_is_planned_on_the_whole_cluster() -> None:
    groups = node_groups(NODES, busy("h100-"))
    queued = decide(spec(queueName="team-a", resources={"gpuTypes": ["H100-SXM-80GB", "A100-SXM4-80GB"],
                                                         "objective": "Fastest"}), groups)
    assert queued.plan is not None and queued.plan.gpu_type == "H100-SXM-80GB"  # Kueue waits, not kubetune


def test_a_job_no_configuration_of_the_cluster_fits_still_fails_at_once() -> None:
    decision = decide(spec(model={"name": "Llama-3.1-405B"}, training={"seqLen": 4096},
                           resources={"gpuTypes": ["L4-24GB"], "gpus": 1}), node_groups(NODES, busy("l4-")))
    assert decision.plan is None and decision.reason == Reason.UNSCHEDULABLE and "smallest need" in decision.message


@pytest.mark.parametrize(("reason", "phase"), [(Reason.WAITING_FOR_CAPACITY, api.JobPhase.WAITING),
                                               (Reason.PODS_PENDING, api.JobPhase.PLANNED)])
def test_a_job_waiting_for_capacity_shows_waiting(reason: Reason, phase: api.JobPhase) -> None:
    conds = Conditions(None, generation=1)
    conds.set(ConditionType.PLANNED, True, Reason.PLANNED, "planned")
    conds.set(ConditionType.RUNNING, False, reason, "why")
    assert conds.phase() is phase
