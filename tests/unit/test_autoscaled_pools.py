"""GPU pools a cluster autoscaler grows (the operator's autoscaledGpuPools): a job is planned on up to their
size, even on a pool scaled to zero, and its Job is created at once, since the autoscaler adds nodes only for
pending pods; a job that needs more than the pool can ever have still waits or fails as before."""

import pytest

from kubetune.catalog.cluster_gpus import check_pools, node_groups, with_autoscaled
from kubetune.config import AutoscaledPool, ConfigError, load
from kubetune.devcluster import profile
from kubetune.planner.decision import decide, waiting_for_capacity
from tests.unit.test_gpu_inventory import spec
from tests.unit.test_real_node import held_by

H100 = AutoscaledPool(gpu_type="H100-SXM-80GB", gpus_per_node=8, max_nodes=4, cpu="190", memory="2000Gi")


def test_the_pools_come_from_the_charts_json() -> None:
    config = load({"KUBETUNE_AUTOSCALED_GPU_POOLS": '[{"gpuType": "H100-SXM-80GB", "gpusPerNode": 8, '
                                                    '"maxNodes": 4, "cpu": "190", "memory": "2000Gi"}]'})
    assert config.autoscaled_pools == (H100,)
    with pytest.raises(ConfigError, match="KUBETUNE_AUTOSCALED_GPU_POOLS"):
        load({"KUBETUNE_AUTOSCALED_GPU_POOLS": '[{"gpuType": "H100-SXM-80GB"}]'})


def test_a_pool_the_planner_could_not_plan_on_is_refused_at_start() -> None:
    with pytest.raises(LookupError, match="H900"):
        check_pools((H100.model_copy(update={"gpu_type": "H900"}),))
    with pytest.raises(ValueError, match="not a Quantity"):
        check_pools((H100.model_copy(update={"memory": "lots"}),))
    check_pools((H100,))


def test_a_pool_scaled_to_zero_is_planned_on_and_its_job_starts_at_once() -> None:
    groups = with_autoscaled([], (H100,))
    [group] = groups
    assert (group.nodes, group.autoscaled_nodes, group.product) == (0, 4, "NVIDIA-H100-80GB-HBM3")
    decided = decide(spec(gpuTypes=["H100-SXM-80GB"]), groups)
    assert decided.plan is not None and decided.plan.gpu_type == "H100-SXM-80GB"
    assert waiting_for_capacity(decided.plan, groups) is None  # its pending pods are what the autoscaler reads
    assert any("autoscaled pool (0 node(s) now, up to 4)" in line for line in decided.plan.explanation)
    # Without the pool the same cluster has nothing to plan on.
    assert decide(spec(gpuTypes=["H100-SXM-80GB"]), []).plan is None


def test_a_full_pool_with_room_to_grow_starts_and_one_at_its_size_waits() -> None:
    nodes = [n for n in profile.load("default").node_manifests() if n["metadata"]["name"].startswith("h100-")]
    busy = [held_by(n["metadata"]["name"], 8) for n in nodes]
    pinned = spec(gpuTypes=["H100-SXM-80GB"], gpus=16, nodes=2)
    full = node_groups(nodes, busy)
    plan = decide(pinned, full).plan
    assert plan is not None and waiting_for_capacity(plan, full) is not None  # 2 nodes, both busy: wait
    grown = with_autoscaled(full, (H100,))  # the pool may have 4: 2 more for the pending pods
    assert [g.autoscaled_nodes for g in grown if g.product == "NVIDIA-H100-80GB-HBM3"] == [2]
    assert waiting_for_capacity(plan, grown) is None
    at_size = with_autoscaled(full, (H100.model_copy(update={"max_nodes": 2}),))
    assert waiting_for_capacity(plan, at_size) is not None
