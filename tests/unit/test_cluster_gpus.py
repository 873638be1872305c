"""Reading the cluster's GPUs from Node objects and pods, and building the training Job from a plan."""

from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import Method, Precision, ZeroStage
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.devcluster import profile
from kubetune.planner.decision import decide, settings_from_plan
from kubetune.resources.job import job as job_manifest


def nodes_with_taint() -> list[dict]:
    nodes = profile.load("default").node_manifests()
    for node in nodes:
        if node["metadata"]["name"].startswith("h100-"):
            node["spec"]["taints"] = [{"key": "dedicated", "value": "training", "effect": "NoSchedule"}]
    return nodes


def busy_pod(node: str, gpus: int, phase: str = "Running") -> dict:
    return {"spec": {"nodeName": node, "containers": [{"resources": {"limits": {"nvidia.com/gpu": str(gpus)}}}]},
            "status": {"phase": phase}}


def test_groups_count_nodes_and_skip_those_with_gpus_in_use() -> None:
    groups = {g.gpu.id: g for g in node_groups(nodes_with_taint(), [busy_pod("h100-0", 2), busy_pod("l4-1", 4, "Succeeded")])}
    assert (groups["H100-SXM-80GB"].nodes, groups["H100-SXM-80GB"].free_nodes) == (2, 1)
    assert (groups["L4-24GB"].nodes, groups["L4-24GB"].free_nodes) == (4, 4)  # a finished pod holds nothing
    assert groups["A100-SXM4-80GB"].gpus_per_node == 8
    assert "V100-SXM2-32GB" in groups and len(groups) == 5  # CPU nodes are not GPU groups


def test_job_tolerates_the_gpu_nodes_taints_and_selects_the_planned_product() -> None:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Llama-3.1-70B"}, "dataset": {"source": "d"},
                                               "resources": {"gpuTypes": ["H100-SXM-80GB"], "maxNodes": 1}})
    groups = node_groups(nodes_with_taint(), [])
    decision = decide(spec, groups)
    assert decision.plan is not None and decision.plan.gpu_product == "NVIDIA-H100-80GB-HBM3"
    job = job_manifest("big", spec, decision.plan, decision.group, DEFAULT_TRAINER_IMAGE, "tiny-config-0")
    pod = job["spec"]["template"]["spec"]
    assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert "--master_addr=big-train-0.big-workers" in pod["containers"][0]["command"]
    assert pod["subdomain"] == "big-workers"


def test_settings_rebuilt_from_a_stored_plan_give_the_same_deepspeed_config() -> None:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen2.5-7B"}, "dataset": {"source": "d"}})
    decision = decide(spec, node_groups(nodes_with_taint(), []))
    rebuilt = settings_from_plan(spec, api.Plan.model_validate(decision.plan.model_dump()))
    assert rebuilt == decision.candidate.settings


def test_nothing_allowed_explains_what_the_cluster_has() -> None:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen2.5-7B"}, "dataset": {"source": "d"},
                                               "resources": {"gpuTypes": ["B200-180GB"]}})
    decision = decide(spec, node_groups(nodes_with_taint(), []))
    assert decision.plan is None
    assert "B200-180GB" in decision.message and "NVIDIA-H100-80GB-HBM3" in decision.message


def test_a_replan_keeps_what_the_checkpoints_it_resumes_from_can_be_loaded_into() -> None:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen2.5-7B"}, "dataset": {"source": "d"}})
    groups = node_groups(nodes_with_taint(), [])
    unconstrained = decide(spec, groups, memory_scale=1.3).plan
    assert unconstrained is not None
    assert (unconstrained.method, unconstrained.zero_stage, unconstrained.precision) == (Method.LORA, 2, Precision.BF16)
    # The run that ran out of memory trained every weight under ZeRO-3 in fp16: its checkpoints hold full
    # fp16-run ZeRO-3 partitions, which neither a LoRA run, a bf16 one nor ZeRO-1/2 can resume from.
    failed = unconstrained.model_copy(update={"method": Method.FULL, "lora_rank": None,
                                              "zero_stage": ZeroStage.PARAMETERS, "precision": Precision.FP16})
    replan = decide(spec, groups, memory_scale=1.3, resuming=failed).plan
    assert replan is not None and (replan.method, replan.zero_stage, replan.precision) == (Method.FULL, 3, Precision.FP16)


def test_lora_targets_that_match_no_module_are_refused_before_any_pod_starts() -> None:
    """PEFT would refuse them only once the GPUs are held, and ignores one misspelt among good ones."""
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen2.5-7B"}, "dataset": {"source": "d"},
                                               "method": {"loraTargets": ["q_proj", "qv_proj"]}})
    decision = decide(spec, node_groups(nodes_with_taint(), []))
    assert decision.plan is None and decision.reason == "InvalidSpec"
    assert "qv_proj match no linear module" in decision.message and "gate_proj" in decision.message
    full = spec.model_copy(update={"method": spec.method.model_copy(update={"type": api.MethodType.FULL})})
    assert decide(full, node_groups(nodes_with_taint(), [])).plan is not None
