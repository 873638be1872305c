"""Random FineTuneJob specs, sensible and absurd, thrown at the operator's pure core: validation, the planner
and the child builders. Nothing raises except pydantic's ValidationError on invalid input; every plan the
planner returns fits its GPU and builds children that serialise."""

import json

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kubetune.api import v1alpha1 as api
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.config import DEFAULT_TRAINER_IMAGE
from kubetune.devcluster import profile
from kubetune.planner.decision import decide, settings_from_plan
from kubetune.resources.config_map import config_map
from kubetune.resources.job import job as job_manifest

GROUPS = node_groups(profile.load("default").node_manifests(), [])
MODELS = ["Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "mistralai/Mixtral-8x7B-v0.1",
          "tiiuae/falcon-7b", "unknown/model", ""]


def mostly(valid: list, invalid: list) -> st.SearchStrategy:
    """Values a user could mean, and now and then one that is absurd or of the wrong type."""
    return st.integers(0, 9).flatmap(lambda i: st.sampled_from(invalid if i == 0 else valid))


ints = st.integers(0, 9).flatmap(lambda i: st.sampled_from([0, -1, 2**40]) if i == 0 else
                                 st.integers(min_value=-3, max_value=70000) if i == 1 else
                                 st.sampled_from([1, 2, 3, 4, 8, 16, 32, 48, 64, 512, 2048, 8192]))
text = st.text(max_size=40)


def maybe(strategy: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(st.none(), strategy)


def without_none(value: dict) -> dict:
    return {k: v for k, v in value.items() if v is not None}


inline_config = st.fixed_dictionaries({}, optional={
    "model_type": st.sampled_from(["llama", "qwen2", "mixtral", "falcon", "gpt9", ""]),
    "hidden_size": ints, "num_hidden_layers": ints, "num_attention_heads": ints, "num_key_value_heads": ints,
    "intermediate_size": ints, "vocab_size": ints, "num_local_experts": ints, "num_experts_per_tok": ints,
})
specs = st.builds(
    lambda model, config, method, training, resources, extra: without_none({
        "model": without_none({"name": model, "config": config}), "dataset": {"source": "org/data"},
        "method": without_none(method), "training": without_none(training), "resources": without_none(resources),
        **extra}),
    st.integers(0, 9).flatmap(lambda i: text if i == 0 else st.sampled_from(MODELS)),
    st.integers(0, 3).flatmap(lambda i: inline_config if i == 0 else st.none()),
    st.fixed_dictionaries({
        "type": maybe(mostly(["Auto", "LoRA", "Full"], ["QLoRA"])), "loraRank": maybe(ints),
        "zeroStage": maybe(mostly([0, 1, 2, 3], [4, -1])), "offload": maybe(mostly(["None", "Optimizer", "All"], ["GPU"])),
        "gradientCheckpointing": maybe(mostly(["Auto", "Enabled", "Disabled"], [True])),
        "attention": maybe(st.sampled_from(["Auto", "Eager", "SDPA", "FlashAttention2"])), "microBatch": maybe(ints),
        "precision": maybe(mostly(["Auto", "BF16", "FP16", "FP32", "PureBF16"], ["INT8"])),
        "loraAdapterPrecision": maybe(mostly(["Model", "FP32"], ["FP8"])),
    }),
    st.fixed_dictionaries({"seqLen": maybe(ints), "globalBatch": maybe(ints), "maxSteps": maybe(ints),
                           "learningRate": maybe(mostly(["2e-4", "0.1", "1e999", "0"], ["x"]))}),
    st.fixed_dictionaries({
        "gpuTypes": maybe(st.lists(st.sampled_from(["H100-SXM-80GB", "L4-24GB", "NVIDIA-A100-SXM4-80GB", "Z9000"]),
                                   max_size=3)),
        "maxGPUs": maybe(ints), "maxNodes": maybe(ints),
        "objective": maybe(st.sampled_from(["Cheapest", "Fastest", "FewestGPUs"])),
    }),
    st.integers(0, 9).flatmap(lambda i: st.just({"unknown": "x"}) if i == 0 else st.fixed_dictionaries(
        {}, optional={"suspend": st.booleans(), "checkpointIntervalSteps": ints, "queueName": st.text(max_size=10)})),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_random_specs_are_refused_planned_or_explained_never_a_crash(raw: dict) -> None:
    try:
        spec = api.FineTuneJobSpec.model_validate(raw)
    except ValidationError:
        event("refused by validation")
        return
    decision = decide(spec, GROUPS)
    event(f"planned: {decision.plan is not None}")
    if decision.plan is None:
        assert decision.reason in ("ModelUnknown", "InvalidModelConfig", "InvalidSpec", "Unschedulable")
        assert decision.message
        return
    plan = decision.plan
    assert 0 < plan.predicted_peak_bytes <= plan.gpu_memory_bytes
    assert plan.gpus == plan.nodes * plan.gpus_per_node
    assert plan.micro_batch * plan.gradient_accumulation * plan.gpus == spec.training.global_batch
    configs = config_map("job", spec, plan, settings_from_plan(spec, plan))
    json.loads(configs["data"]["trainer.json"])
    json.loads(configs["data"]["ds_config.json"])
    job = job_manifest("job", spec, plan, decision.group, DEFAULT_TRAINER_IMAGE, configs["metadata"]["name"])
    assert job["spec"]["completions"] == plan.nodes
    json.dumps(job)
