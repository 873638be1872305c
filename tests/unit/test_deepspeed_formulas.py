"""Model states against DeepSpeed's published rules (deepspeed/runtime/zero/stage_1_and_2.py and stage3.py,
`estimate_zero2_model_states_mem_needs` / `estimate_zero3_model_states_mem_needs`, and docs memory.rst):

  ZeRO-2:                       GPU 2P + 18P/N            CPU (offload, one node) 16P before the 1.5 buffer factor
  ZeRO-2 + optimizer offload:   GPU 2P
  ZeRO-3:                       GPU 18P/N + largest layer (16-bit parameter partitions left out; see below)
  ZeRO-3 + optimizer offload:   GPU 2P/N + largest layer
  ZeRO-3 + full offload:        GPU largest layer         CPU (one node) 18P before the 1.5 buffer factor

for full fine-tuning with Adam in 16-bit mixed precision. DeepSpeed's "largest layer" (4 bytes x the largest
module's own parameters: gathered 16-bit weights and their gradients) is our gathered-parameter buffer.

ZeRO-3's 18 bytes count fp32 gradients for the whole partition and no 16-bit parameter partition. Stage 3
keeps the 16-bit partition (2P/N) but runs the optimizer one sub-group at a time (sub_group_size, 1e9
elements), so its fp32 gradients are at most 4 x sub_group_size: the model matches DeepSpeed's rule plus the
2P/N partition while P/N fits one sub-group, and falls below it beyond.

Both rules leave out what the step's peak measured on the CPU shows (tests/measured/test_step_peak_vs_deepspeed.py):
the optimizer step flattens the 16-bit gradient partition (ZeRO-3: one sub-group) into a new tensor before casting it
to fp32, both alive at once (2P/N more); ZeRO-1/2's gradient partition holds every parameter that overlaps it
whole, up to one more parameter at each partition boundary.
"""

import pytest

from kubetune.api.vocabulary import Method, Offload, ZeroStage
from kubetune.memprobe import tiny_models
from kubetune.planner import architecture
from kubetune.planner.model_states import model_states, trainable_params
from kubetune.planner.settings import Buckets, TrainingSettings

MODEL = architecture.load("Llama-3.1-8B")
P = MODEL.total_params
# DeepSpeed's estimators partition every parameter and count no buckets beyond the largest layer.
ESTIMATOR_BUCKETS = Buckets(param_persistence_threshold=0)


def states(stage: ZeroStage, offload: Offload = Offload.NONE, gpus: int = 8, method: Method = Method.FULL):
    settings = TrainingSettings(seq_len=2048, method=method, zero_stage=stage, offload=offload,
                                num_gpus=gpus, gpus_per_node=min(gpus, 8), buckets=ESTIMATOR_BUCKETS)
    return model_states(MODEL, settings)


def at_optimizer_step(s) -> int:
    return s.weights + s.optimizer_states + s.gradients_persistent + s.gradients_backward + s.gradients_step


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_zero2_gpu_model_states_are_2p_plus_18p_over_n_and_the_flattened_partition(gpus: int) -> None:
    boundaries = {1: 0, 2: 1, 8: 2}[gpus] * 2 * MODEL.largest_param_numel
    expected = 2 * P + 18 * P / gpus + 2 * P / gpus + boundaries
    assert at_optimizer_step(states(ZeroStage.GRADIENTS, gpus=gpus)) == pytest.approx(expected, abs=8)


def test_zero2_optimizer_offload_keeps_only_16_bit_weights_on_gpu() -> None:
    s = states(ZeroStage.GRADIENTS, Offload.OPTIMIZER)
    assert at_optimizer_step(s) == 2 * P
    # The staging buffer DeepSpeed allocates for offloaded gradients: the largest parameter (the embedding).
    assert s.buffers >= 2 * MODEL.largest_param_numel


def test_zero2_optimizer_offload_host_memory_is_16p_per_node_and_the_16_bit_copies() -> None:
    """DeepSpeed's 16P, and what its estimator leaves out: each rank's 16-bit copy of its updated partition on
    the way back to the GPU (2P over the node) and a host staging buffer of the largest parameter."""
    s = states(ZeroStage.GRADIENTS, Offload.OPTIMIZER)
    assert s.cpu_per_gpu * 8 == pytest.approx(16 * P + 2 * P + 8 * 2 * MODEL.largest_param_numel, abs=8 * 8)


def test_zero3_gpu_model_states_are_18p_over_n_plus_the_16_bit_partition_and_its_flattened_copy() -> None:
    gpus = 16  # P/N = 0.5e9, within one optimizer sub-group
    deepspeed_rule = 18 * P / gpus
    expected = deepspeed_rule + 2 * P / gpus + 2 * P / gpus
    assert at_optimizer_step(states(ZeroStage.PARAMETERS, gpus=gpus)) == pytest.approx(expected, abs=16)


def test_zero3_step_gradients_are_bounded_by_the_optimizer_sub_group() -> None:
    s = states(ZeroStage.PARAMETERS, gpus=2)  # P/N = 4e9, four sub-groups
    assert s.gradients_step == (2 + 4) * 1_000_000_000  # the sub-group's flattened 16-bit copy and its fp32 cast
    assert at_optimizer_step(s) < 18 * P / 2


def zero3(arch: architecture.Architecture, buckets: Buckets, checkpointing: bool):
    return model_states(arch, TrainingSettings(
        seq_len=2048, method=Method.FULL, zero_stage=ZeroStage.PARAMETERS, num_gpus=8, gpus_per_node=8,
        buckets=buckets, gradient_checkpointing=checkpointing))


def test_zero3_gathers_the_largest_module_and_a_whole_layer_under_checkpointing() -> None:
    """DeepSpeed's "largest layer" is the largest module gathered at once: a leaf (here the embedding) without
    checkpointing; with it, the recomputed decoder layer stays gathered through its backward. Without prefetch
    nothing is gathered while the loss's backward runs."""
    falcon = architecture.load("falcon-180B")  # a decoder layer larger than its embedding
    assert falcon.layer_params > falcon.embedding_params
    no_prefetch = ESTIMATOR_BUCKETS.model_copy(update={"prefetch_bucket_elements": 0})
    for checkpointing, largest in ((False, falcon.embedding_params), (True, falcon.layer_params)):
        s = zero3(falcon, no_prefetch, checkpointing)
        assert (s.gathered, s.gathered_at_loss) == (2 * largest, 0)


def test_zero3_prefetch_runs_ahead_to_the_live_parameter_cap() -> None:
    """With prefetch every hooked module asks for another bucket, so DeepSpeed keeps up to
    stage3_max_live_parameters gathered into backward (1e9 in kubetune's config as in Hugging Face's: 2 GB in bf16),
    and the module in use on top; a head larger than the cap stops the look-ahead, so the loss's backward holds it
    alone. A model smaller than the cap is gathered whole but for its frozen input embedding."""
    buckets = Buckets.for_hidden_size(MODEL.hidden_size)
    cap = buckets.max_live_parameters
    assert MODEL.embedding_params < cap
    for checkpointing in (False, True):  # the largest module is the head either way (a layer is 218M)
        s = zero3(MODEL, buckets, checkpointing)
        assert s.gathered == s.gathered_at_loss == 2 * (cap + MODEL.embedding_params)
    llama = architecture.load("Llama-3.1-70B")
    assert llama.embedding_params > cap
    assert zero3(llama, Buckets.for_hidden_size(llama.hidden_size), False).gathered_at_loss == 2 * llama.embedding_params
    tiny = architecture.from_hf_config(tiny_models.tiny_config("llama", 3))
    s = model_states(tiny, TrainingSettings(seq_len=64, zero_stage=ZeroStage.PARAMETERS, num_gpus=2, gpus_per_node=2,
                                            buckets=Buckets.for_hidden_size(tiny.hidden_size)))
    assert s.gathered == s.gathered_at_loss < 2 * (tiny.total_params + trainable_params(tiny, TrainingSettings(
        seq_len=64)) - tiny.embedding_params)


def test_zero3_optimizer_offload_keeps_2p_over_n() -> None:
    assert at_optimizer_step(states(ZeroStage.PARAMETERS, Offload.OPTIMIZER)) == pytest.approx(2 * P / 8, abs=8)


def test_zero3_full_offload_keeps_no_model_states_and_18p_and_the_16_bit_gradients_on_the_host() -> None:
    """DeepSpeed's 18P, and the 16-bit gradient partition its estimator leaves out, which lives on the
    optimizer's device (stage3.py, grad_partitions_flat_buffer): 2P over the node."""
    s = states(ZeroStage.PARAMETERS, Offload.ALL)
    assert at_optimizer_step(s) == 0
    assert s.cpu_per_gpu * 8 == pytest.approx(18 * P + 2 * P, abs=8 * 8)


def test_lora_partitions_only_trainable_states_and_keeps_frozen_weights_whole_below_zero3() -> None:
    s = states(ZeroStage.GRADIENTS, method=Method.LORA)
    t = trainable_params(MODEL, TrainingSettings(seq_len=1, method=Method.LORA))
    assert s.weights == 2 * (P + t)  # frozen base weights are replicated on every GPU in stages 1 and 2
    assert s.optimizer_states == 12 * t // 8
    assert states(ZeroStage.PARAMETERS, method=Method.LORA).weights == 2 * (P + t) // 8


def test_stage_0_bf16_keeps_full_master_weights_and_fp32_gradients_at_the_step() -> None:
    """DeepSpeed 0.19 without ZeRO: bf16 gradients (grad_accum_dtype defaults to the model dtype), an
    unpartitioned fp32 master and moments, fp32 gradients built at the step (engine.get_data_types and
    _do_optimizer_sanity_check choose the FP16-style optimizer for bf16)."""
    s = states(ZeroStage.DISABLED)
    assert s.optimizer_states == 12 * P
    assert (s.gradients_persistent, s.gradients_backward, s.gradients_step) == (0, 2 * P, 4 * P)
