"""The planner's choices agree with the study's guidance where it holds, honour pins, and explain failures."""

import pytest

from kubetune.api.vocabulary import Attention, Method, Objective, Offload, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, search


def plan(model: str, gpu: str, **request) -> search.SearchResult:
    pool = search.GpuPool(gpu=gpus.by_id(gpu), gpus_per_node=8, nodes=request.pop("nodes", 1))
    return search.plan(architecture.load(model), search.Request(**request), [pool])


def test_lora_with_zero2_is_the_default_when_it_fits() -> None:
    chosen = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=8).chosen
    assert chosen.settings.method is Method.LORA
    assert chosen.settings.zero_stage is ZeroStage.GRADIENTS
    assert not chosen.settings.gradient_checkpointing and chosen.settings.offload is Offload.NONE


@pytest.mark.parametrize("model", ["Llama-3.1-70B", "Qwen2.5-72B", "falcon-180B"])
def test_70b_to_180b_on_one_8x80gb_node_needs_zero3_lora_and_checkpointing(model: str) -> None:
    chosen = plan(model, "H100-SXM-80GB", seq_len=2048, num_gpus=8).chosen
    assert chosen is not None
    s = chosen.settings
    assert (s.method, s.zero_stage, s.gradient_checkpointing) == (Method.LORA, ZeroStage.PARAMETERS, True)


def test_flash_attention_2_only_on_compute_capability_8_or_newer() -> None:
    assert plan("Qwen2.5-7B", "A100-SXM4-80GB", seq_len=2048).chosen.settings.attention is Attention.FLASH_ATTENTION_2
    v100 = plan("Qwen2.5-7B", "V100-SXM2-32GB", seq_len=2048, num_gpus=8)
    assert v100.chosen.settings.attention is Attention.SDPA
    assert v100.chosen.settings.precision is Precision.FP16  # no bf16 before Ampere
    assert any("FlashAttention-2 is unavailable" in line for line in v100.explanation)


def test_pinned_flash_attention_on_v100_is_refused_with_the_reason() -> None:
    result = plan("Qwen2.5-7B", "V100-SXM2-32GB", seq_len=2048, attention=Attention.FLASH_ATTENTION_2)
    assert result.chosen is None
    assert any("compute capability 8.0" in line and "7.0" in line for line in result.explanation)


def test_long_context_leans_on_checkpointing() -> None:
    chosen = plan("Llama-3.1-8B", "A100-SXM4-80GB", seq_len=16384, num_gpus=8, global_batch=8).chosen
    assert chosen.settings.gradient_checkpointing
    assert chosen.settings.attention is Attention.FLASH_ATTENTION_2


def test_pinned_choices_are_honoured() -> None:
    s = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=4, method=Method.FULL,
             zero_stage=ZeroStage.PARAMETERS, micro_batch=2, gradient_checkpointing=True).chosen.settings
    assert (s.num_gpus, s.method, s.zero_stage, s.micro_batch, s.gradient_checkpointing) == (
        4, Method.FULL, ZeroStage.PARAMETERS, 2, True)
    assert s.gradient_accumulation == 32 // (2 * 4)


def test_a_pinned_choice_that_cannot_fit_says_so_with_the_smallest_need() -> None:
    result = plan("Llama-3.1-70B", "L4-24GB", seq_len=4096, num_gpus=1, zero_stage=ZeroStage.GRADIENTS,
                  offload=Offload.NONE)
    assert result.chosen is None
    assert result.smallest_need is not None
    assert result.smallest_need.memory.total_bytes > gpus.by_id("L4-24GB").memory_bytes
    assert "Nothing fits. The smallest need is" in result.explanation[-1]


def test_more_memory_per_gpu_never_makes_a_fitting_plan_stop_fitting() -> None:
    small = plan("Qwen2.5-14B", "A100-SXM4-40GB", seq_len=4096, num_gpus=8).chosen
    large = plan("Qwen2.5-14B", "A100-SXM4-80GB", seq_len=4096, num_gpus=8).chosen
    assert small is not None and large is not None
    assert large.time.tokens_per_second >= small.time.tokens_per_second * 0.98


def test_objectives_change_the_choice() -> None:
    fastest = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, nodes=2, objective=Objective.FASTEST).chosen
    fewest = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, nodes=2, objective=Objective.FEWEST_GPUS).chosen
    assert fastest.settings.num_gpus == 16
    assert fewest.settings.num_gpus == 1


def test_runners_up_say_why_they_lost() -> None:
    result = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=8)
    assert result.runners_up
    assert all(why for _, why in result.runners_up)


def test_deepspeed_bucket_settings_change_the_prediction() -> None:
    from kubetune.planner.settings import Buckets

    small = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=8, method=Method.FULL,
                 zero_stage=ZeroStage.GRADIENTS, micro_batch=1,
                 buckets=Buckets(reduce_bucket_elements=50_000_000, overlap_comm=False)).chosen
    large = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=8, method=Method.FULL,
                 zero_stage=ZeroStage.GRADIENTS, micro_batch=1,
                 buckets=Buckets(reduce_bucket_elements=500_000_000, overlap_comm=True)).chosen
    # 500M elements, double-buffered, in bf16 is 2 GB; 50M single-buffered is 100 MB.
    assert large.memory.buffers_bytes - small.memory.buffers_bytes == 2 * 2 * 500_000_000 - 2 * 50_000_000


def test_zero_0_only_when_pinned() -> None:
    # ZeRO-1 holds less at the same communication volume, and its checkpoints convert to other layouts. (With
    # ZeRO-0 among the free choices, this was the one case of 500 that chose it.)
    free = plan("Llama-2-13b-hf", "V100-SXM2-32GB", seq_len=512, nodes=2)
    assert free.chosen.settings.zero_stage is not ZeroStage.DISABLED
    pinned = plan("Llama-2-13b-hf", "V100-SXM2-32GB", seq_len=512, nodes=2, zero_stage=ZeroStage.DISABLED)
    assert pinned.chosen.settings.zero_stage is ZeroStage.DISABLED


def test_long_context_fits_one_gpu_only_with_the_chunked_cross_entropy() -> None:
    """Llama-3.1-8B at 64k tokens: Hugging Face's loss alone holds 12 B x 65,536 x 128,256 = 94 GiB per sequence,
    so not even LoRA with ZeRO-3, full offload and checkpointing on 8 H100s fits; chunked, one H100 is enough."""
    import dataclasses

    from kubetune.planner import memory
    from kubetune.planner.settings import Buckets, TrainingSettings

    result = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=65536, global_batch=8)
    chosen = result.chosen
    assert chosen is not None and chosen.settings.num_gpus == 1
    assert chosen.settings.loss_chunk_tokens == 256  # 2^25 logits / 128,256 entries, down to a power of two
    assert any("Cross-entropy in chunks of 256 tokens" in line for line in result.explanation)

    arch = architecture.load("Llama-3.1-8B")
    usable = gpus.by_id("H100-SXM-80GB").memory_bytes * (1 - memory.coefficients().fit_headroom_fraction)
    most_frugal = TrainingSettings(seq_len=65536, method=Method.LORA, gradient_checkpointing=True,
                                   zero_stage=ZeroStage.PARAMETERS, offload=Offload.ALL, num_gpus=8, gpus_per_node=8,
                                   buckets=Buckets.for_hidden_size(arch.hidden_size))
    assert memory.estimate(arch, most_frugal).total_bytes > usable
    assert memory.estimate(arch, dataclasses.replace(chosen.settings, loss_chunk_tokens=None)).total_bytes > usable


def test_the_stock_loss_where_its_logits_fit() -> None:
    # The chunked loss recomputes the LM head's forward: only worth it where the stock loss does not fit.
    chosen = plan("Llama-3.1-8B", "H100-SXM-80GB", seq_len=2048, num_gpus=8, micro_batch=1).chosen
    assert chosen.settings.loss_chunk_tokens is None


def test_the_chunked_loss_costs_one_more_forward_of_the_lm_head() -> None:
    import dataclasses

    from kubetune.planner import throughput
    from kubetune.planner.settings import TrainingSettings

    arch = architecture.load("Llama-3.1-8B")
    stock = TrainingSettings(seq_len=8192)
    chunked = dataclasses.replace(stock, loss_chunk_tokens=256)
    gpu = gpus.by_id("H100-SXM-80GB")
    slower = throughput.step_time(arch, chunked, gpu).step_seconds / throughput.step_time(arch, stock, gpu).step_seconds
    # The head is 0.5B of the 8B parameters: one more forward of it is a few per cent of a LoRA step.
    assert 1.01 < slower < 1.06
