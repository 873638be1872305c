"""The precisions users run: pure bf16 (bf16 weights, gradients and AdamW states, no fp32 master) and fp32 LoRA
adapters, planned from the spec, written into the DeepSpeed config and trainer.json, and refused where DeepSpeed
cannot run them. tests/measured/test_model_states_vs_deepspeed.py checks the byte counts against DeepSpeed."""

import json

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import Reason
from kubetune.api.vocabulary import AdapterPrecision, Method, Offload, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.catalog.cluster_gpus import node_groups
from kubetune.devcluster import profile
from kubetune.planner import architecture, decision, search
from kubetune.planner.ds_config import ds_config
from kubetune.planner.model_states import model_states, trainable_params
from kubetune.planner.settings import Buckets, Lora, TrainingSettings
from kubetune.resources.config_map import config_map

MODEL = architecture.load("Llama-3.1-8B")
P = MODEL.total_params
NO_PERSISTENCE = Buckets(param_persistence_threshold=0)


def states(stage: ZeroStage, precision: Precision, gpus: int = 8, method: Method = Method.FULL, lora: Lora = Lora()):
    settings = TrainingSettings(seq_len=2048, method=method, zero_stage=stage, precision=precision, lora=lora,
                                num_gpus=gpus, gpus_per_node=min(gpus, 8), buckets=NO_PERSISTENCE)
    return model_states(MODEL, settings)


def held(s) -> int:
    """Weights, gradients and optimizer states at the optimizer step."""
    return s.weights + s.optimizer_states + s.gradients_persistent + s.gradients_backward + s.gradients_step


def test_pure_bf16_without_zero_is_8_bytes_per_parameter_and_mixed_20() -> None:
    """torch's AdamW on bf16 weights: 2 (weight) + 2 (gradient) + 2 x 2 (moments); mixed adds the fp32 master and
    moments and builds fp32 gradients at the step."""
    assert held(states(ZeroStage.DISABLED, Precision.PURE_BF16)) == 8 * P
    assert held(states(ZeroStage.DISABLED, Precision.BF16)) == 20 * P


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_pure_bf16_under_zero2_keeps_a_bf16_master_copy_of_its_partition(gpus: int) -> None:
    """16-bit weights whole and, per rank, a bf16 copy of the weights' partition and two bf16 moments (6P/N, mixed
    bf16: 12P/N); the step casts no fp32 gradient (mixed: 4P/N)."""
    pure, mixed = states(ZeroStage.GRADIENTS, Precision.PURE_BF16, gpus), states(ZeroStage.GRADIENTS, Precision.BF16, gpus)
    assert pure.weights == mixed.weights == 2 * P
    assert pure.optimizer_states == pytest.approx(6 * P / gpus, abs=8)
    assert mixed.optimizer_states == pytest.approx(12 * P / gpus, abs=8)
    assert mixed.gradients_step - pure.gradients_step == pytest.approx(4 * P / gpus, abs=8)


def test_pure_bf16_under_zero3_is_10_bytes_over_n() -> None:
    s = states(ZeroStage.PARAMETERS, Precision.PURE_BF16, 16)
    assert s.weights + s.optimizer_states + s.gradients_persistent == pytest.approx(10 * P / 16, abs=16)
    assert s.gradients_step == 0  # no fp32 gradient for the optimizer's sub-group


def test_fp32_adapters_hold_fp32_weights_gradients_and_states_beside_the_16_bit_model() -> None:
    lora = Lora(adapters_fp32=True)
    t = trainable_params(MODEL, TrainingSettings(seq_len=1, method=Method.LORA))
    without_zero = states(ZeroStage.DISABLED, Precision.BF16, 1, Method.LORA, lora)
    assert without_zero.weights == 2 * P + 4 * t
    assert without_zero.gradients_backward == 4 * t and without_zero.gradients_step == 0
    assert without_zero.optimizer_states == 8 * t  # torch's AdamW updates the fp32 adapters themselves
    zero2 = states(ZeroStage.GRADIENTS, Precision.BF16, 8, Method.LORA, lora)
    assert zero2.optimizer_states == (8 + 4) * t // 8  # ZeRO clones the partition as its master, fp32 or not
    assert zero2.buffers == states(ZeroStage.GRADIENTS, Precision.BF16, 8, Method.LORA).buffers * 2  # fp32 bucket


def test_deepspeed_config_for_each_precision() -> None:
    def config(stage: ZeroStage, precision: Precision, **kwargs) -> dict:
        return ds_config(TrainingSettings(seq_len=512, zero_stage=stage, precision=precision, **kwargs))

    mixed = config(ZeroStage.GRADIENTS, Precision.BF16)
    assert mixed["bf16"] == {"enabled": True} and "communication_data_type" not in mixed
    for stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS, ZeroStage.PARAMETERS):
        assert config(stage, Precision.PURE_BF16)["bf16"] == {
            "enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True}
    # DeepSpeed refuses bf16 master weights without ZeRO: there, no bf16 mode, the model loaded in bf16.
    zero0 = config(ZeroStage.DISABLED, Precision.PURE_BF16)
    assert zero0["bf16"] == {"enabled": False} and zero0["communication_data_type"] == "bf16"
    # Its bf16 mode would cast fp32 adapters to bf16.
    fp32_adapters = config(ZeroStage.GRADIENTS, Precision.BF16, method=Method.LORA, lora=Lora(adapters_fp32=True))
    assert not fp32_adapters["bf16"]["enabled"] and not fp32_adapters["fp16"]["enabled"]


def test_what_deepspeed_cannot_run_is_refused_as_it_is_built() -> None:
    with pytest.raises(ValueError, match="runs without offload"):
        TrainingSettings(seq_len=512, precision=Precision.PURE_BF16, offload=Offload.OPTIMIZER)
    with pytest.raises(ValueError, match="needs precision BF16"):
        TrainingSettings(seq_len=512, precision=Precision.FP16, lora=Lora(adapters_fp32=True))


def plan(gpu: str = "H100-SXM-80GB", **request) -> search.SearchResult:
    pool = search.GpuPool(gpu=gpus.by_id(gpu), gpus_per_node=8, nodes=1)
    return search.plan(MODEL, search.Request(**request), [pool])


def test_pure_bf16_fits_an_8b_full_fine_tune_on_one_80gb_gpu_where_mixed_needs_twice_that() -> None:
    """torchtune's single-device recipe: Llama-3.1-8B full fine-tuning in pure bf16 without ZeRO on one H100."""
    one_gpu = {"seq_len": 2048, "method": Method.FULL, "num_gpus": 1, "zero_stage": ZeroStage.DISABLED}
    pure = plan(precision=Precision.PURE_BF16, **one_gpu)
    mixed = plan(precision=Precision.BF16, offload=Offload.NONE, **one_gpu)
    assert pure.chosen is not None and pure.chosen.settings.precision is Precision.PURE_BF16
    assert mixed.chosen is None and mixed.smallest_need is not None
    assert mixed.smallest_need.memory.total_bytes > 2 * 0.9 * pure.chosen.memory.total_bytes
    assert any("update smaller than" in line for line in pure.explanation)


def test_pure_bf16_never_offloads_and_says_why_when_offload_is_pinned() -> None:
    unpinned = plan(seq_len=4096, method=Method.FULL, precision=Precision.PURE_BF16)
    assert unpinned.chosen is not None and unpinned.chosen.settings.offload is Offload.NONE
    pinned = plan(seq_len=4096, method=Method.FULL, precision=Precision.PURE_BF16, offload=Offload.OPTIMIZER)
    assert pinned.chosen is None and "runs without offload" in " ".join(pinned.explanation)


def test_bf16_precisions_and_fp32_adapters_are_refused_on_gpus_without_bf16() -> None:
    pure = plan("V100-SXM2-32GB", seq_len=1024, precision=Precision.PURE_BF16)
    assert pure.chosen is None and "no bf16 support" in " ".join(pure.explanation)
    adapters = plan("V100-SXM2-32GB", seq_len=1024, method=Method.LORA, lora=Lora(adapters_fp32=True))
    assert adapters.chosen is None and "fp32 LoRA adapters need bf16" in " ".join(adapters.explanation)


def decide(method: dict) -> decision.Decision:
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"},
                                               "dataset": {"source": "tatsu-lab/alpaca"}, "method": method})
    return decision.decide(spec, node_groups(profile.load("default").node_manifests(), []))


def test_the_spec_asks_and_status_and_the_trainer_get_it() -> None:
    auto = decide({"type": "LoRA"})
    assert auto.plan is not None
    assert (auto.plan.precision, auto.plan.lora_adapter_precision) == (Precision.BF16, AdapterPrecision.MODEL)

    asked = decide({"type": "LoRA", "loraAdapterPrecision": "FP32"})
    assert asked.plan is not None and asked.plan.lora_adapter_precision is AdapterPrecision.FP32
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"},
                                               "dataset": {"source": "tatsu-lab/alpaca"},
                                               "method": {"type": "LoRA", "loraAdapterPrecision": "FP32"}})
    data = config_map("j", spec, asked.plan, decision.settings_from_plan(spec, asked.plan))["data"]
    assert json.loads(data["trainer.json"])["lora"]["adapterPrecision"] == "FP32"
    assert json.loads(data["ds_config.json"])["bf16"]["enabled"] is False

    pure = decide({"type": "Full", "precision": "PureBF16"})
    assert pure.plan is not None and pure.plan.precision is Precision.PURE_BF16
    assert pure.plan.lora_adapter_precision is None and pure.plan.offload is Offload.NONE


def test_a_replan_keeps_the_precision_its_checkpoints_were_written_in() -> None:
    pure = decide({"type": "Full", "precision": "PureBF16"})
    assert pure.plan is not None
    spec = api.FineTuneJobSpec.model_validate({"model": {"name": "Qwen/Qwen2.5-0.5B"},
                                               "dataset": {"source": "tatsu-lab/alpaca"}, "method": {"type": "Full"}})
    replanned = decision.decide(spec, node_groups(profile.load("default").node_manifests(), []), memory_scale=1.5,
                                resuming=pure.plan)
    assert replanned.plan is not None and replanned.plan.precision is Precision.PURE_BF16


def test_contradictory_pins_are_an_invalid_spec() -> None:
    refused = decide({"type": "Full", "precision": "PureBF16", "zeroStage": 2, "offload": "Optimizer"})
    assert refused.plan is None and "runs without offload" in refused.message
    assert refused.reason in (Reason.INVALID_SPEC, Reason.UNSCHEDULABLE)
