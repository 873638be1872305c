"""Each term of the time model moves the way the physics does, and the ratios published measurements show
come out in the right direction and size."""

import pytest

from kubetune.api.vocabulary import Attention, Method, Offload, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, search, throughput
from kubetune.planner.settings import Lora, TrainingSettings
from kubetune.planner.throughput import Cost

A100 = gpus.by_id("A100-SXM4-80GB")
H100 = gpus.by_id("H100-SXM-80GB")
ATTENTION_ONLY = Lora(target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))


def run(model: str = "Llama-3.1-8B", gpu: gpus.GpuType = A100, **settings) -> throughput.StepTime:
    defaults = {"seq_len": 2048, "gradient_accumulation": 8, "attention": Attention.FLASH_ATTENTION_2}
    return throughput.step_time(architecture.load(model), TrainingSettings(**(defaults | settings)), gpu)


def tokens_per_second(**settings) -> float:
    return run(**settings).tokens_per_second


def test_tokens_per_second_rises_with_sequence_length_at_short_lengths() -> None:
    """Below ~1k tokens per micro-step the fixed cost per layer per micro-step dominates (the Qwen README:
    1.4-4.7x more tokens/s from 256 to 8,192 tokens)."""
    short = [tokens_per_second(model="Qwen2.5-1.5B", seq_len=s) for s in (256, 512, 1024, 2048)]
    assert short == sorted(short) and short[-1] > 2 * short[0]
    assert run(model="Qwen2.5-1.5B", seq_len=256).dominant is Cost.OVERHEAD
    assert run(model="Qwen2.5-1.5B", seq_len=8192).dominant is Cost.COMPUTE


def test_the_fixed_cost_weighs_less_on_wider_models() -> None:
    """At short lengths the small model loses more of its long-length speed than the large one."""
    def short_over_long(model: str) -> float:
        return tokens_per_second(model=model, seq_len=256) / tokens_per_second(model=model, seq_len=4096)
    assert short_over_long("Qwen2.5-0.5B") < short_over_long("Qwen2.5-7B") < short_over_long("Qwen2.5-72B")


def test_more_tokens_take_longer_and_better_gpus_are_faster() -> None:
    times = [run(seq_len=s).step_seconds for s in (256, 1024, 4096, 16384)]
    assert times == sorted(times)
    batches = [run(micro_batch=b).step_seconds for b in (1, 2, 4, 8)]
    assert batches == sorted(batches)
    assert run(gpu=H100).step_seconds < run(gpu=A100).step_seconds
    slow_memory = A100.model_copy(update={"memory_bandwidth_gb_per_second": A100.memory_bandwidth_gb_per_second / 2})
    assert run(gpu=slow_memory).step_seconds > run(gpu=A100).step_seconds


def test_flash_attention_2_is_about_1_4x_faster_than_eager_at_long_length() -> None:
    ratio = run(seq_len=4096, attention=Attention.EAGER).step_seconds / run(seq_len=4096).step_seconds
    assert 1.25 < ratio < 1.8
    # Eager's score matrix grows with the square of the length, the rest of the step linearly.
    assert run(seq_len=8192, attention=Attention.EAGER).step_seconds / run(seq_len=8192).step_seconds > ratio
    sdpa = run(seq_len=4096, attention=Attention.SDPA).step_seconds
    assert run(seq_len=4096).step_seconds < sdpa < run(seq_len=4096, attention=Attention.EAGER).step_seconds
    # At short length the score matrix is small: the kernels barely differ.
    assert run(seq_len=256, attention=Attention.EAGER).step_seconds / run(seq_len=256).step_seconds < 1.1


def test_all_linear_lora_is_slower_than_attention_only() -> None:
    for seq_len in (256, 4096):
        assert run(seq_len=seq_len).step_seconds > 1.05 * run(seq_len=seq_len, lora=ATTENTION_ONLY).step_seconds


def test_lora_rank_and_gradient_accumulation_barely_matter() -> None:
    assert tokens_per_second(lora=Lora(rank=64)) == pytest.approx(tokens_per_second(lora=Lora(rank=8)), rel=0.05)
    assert tokens_per_second(gradient_accumulation=16) == pytest.approx(tokens_per_second(gradient_accumulation=2),
                                                                        rel=0.03)


def test_lora_dropout_costs_memory_traffic() -> None:
    assert run(lora=Lora(dropout=0.05)).step_seconds > run().step_seconds


def test_checkpointing_costs_about_a_third() -> None:
    for method in Method:
        ratio = run(seq_len=4096, method=method, gradient_checkpointing=True).step_seconds / run(
            seq_len=4096, method=method).step_seconds
        assert 1.2 < ratio < 1.45, method


def test_full_fine_tuning_is_slower_than_lora() -> None:
    assert run(method=Method.FULL).step_seconds > run().step_seconds


def test_zero3_is_much_slower_than_zero2_at_small_micro_steps_and_close_at_large_ones() -> None:
    """ZeRO-3 gathers every module's parameters in every pass: latency per layer per micro-step, not just
    bytes over the link."""
    def ratio(seq_len: int) -> float:
        common = {"seq_len": seq_len, "num_gpus": 8, "gpus_per_node": 8, "gradient_accumulation": 4}
        return (run(zero_stage=ZeroStage.PARAMETERS, **common).step_seconds
                / run(zero_stage=ZeroStage.GRADIENTS, **common).step_seconds)
    assert ratio(256) > 1.5
    assert ratio(8192) < 1.3
    zero3 = run(zero_stage=ZeroStage.PARAMETERS, seq_len=256, num_gpus=8, gpus_per_node=8)
    assert zero3.dominant is Cost.ZERO


def test_zero3_latency_is_per_layer_per_micro_step() -> None:
    common = {"zero_stage": ZeroStage.PARAMETERS, "num_gpus": 8, "gpus_per_node": 8, "seq_len": 256}
    few = run(gradient_accumulation=2, **common).communication_seconds
    many = run(gradient_accumulation=8, **common).communication_seconds
    assert many == pytest.approx(4 * few, rel=0.05)


def test_offload_is_slower_and_named_when_it_dominates() -> None:
    common = {"zero_stage": ZeroStage.PARAMETERS, "method": Method.FULL, "num_gpus": 8, "gpus_per_node": 8,
              "seq_len": 512, "gradient_accumulation": 1}
    none = run(**common)
    optimizer = run(offload=Offload.OPTIMIZER, **common)
    everything = run(offload=Offload.ALL, **common)
    assert none.step_seconds < optimizer.step_seconds < everything.step_seconds
    assert everything.dominant is Cost.OFFLOAD


def test_moe_expert_loops_cost_far_more_than_their_active_flops() -> None:
    """A 30B-A3B-class MoE (128 experts, 8 per token) against a dense model of about its active size:
    transformers loops over the experts in Python and reads every expert's weights."""
    moe = architecture.from_hf_config({
        "model_type": "mixtral", "hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
        "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 768, "vocab_size": 151936,
        "num_local_experts": 128, "num_experts_per_tok": 8}, name="moe-30b-a3b")
    dense = architecture.load("Llama-3.2-3B")
    settings = TrainingSettings(seq_len=2048, attention=Attention.FLASH_ATTENTION_2)
    flops = throughput.training_flops_per_token
    moe_speed = throughput.step_time(moe, settings, H100).tokens_per_second * flops(moe, settings)
    dense_speed = throughput.step_time(dense, settings, H100).tokens_per_second * flops(dense, settings)
    assert moe_speed < dense_speed / 3  # useful FLOP/s


def test_the_plan_names_its_dominant_cost_and_the_moe_caveat() -> None:
    pool = search.GpuPool(gpu=H100, gpus_per_node=8, nodes=1)
    dense = search.plan(architecture.load("Llama-3.1-8B"), search.Request(seq_len=4096, num_gpus=8), [pool])
    assert any(line.startswith("Step time") and "dominated by compute" in line for line in dense.explanation)
    assert not any("mixture of experts" in line for line in dense.explanation)
    mixtral = search.plan(architecture.load("Mixtral-8x7B-v0.1"), search.Request(seq_len=4096, num_gpus=8), [pool])
    assert any("mixture of experts" in line and "cannot time well" in line for line in mixtral.explanation)


def test_the_micro_batch_is_chosen_on_the_modelled_step_time() -> None:
    """Among configurations alike but for the micro-batch, the planner takes the fastest one modelled, not the
    largest that fits."""
    arch = architecture.load("Qwen2.5-7B")
    pool = search.GpuPool(gpu=A100, gpus_per_node=8, nodes=1)
    request = search.Request(seq_len=1024, num_gpus=8, global_batch=64, method=Method.LORA,
                             zero_stage=ZeroStage.GRADIENTS, gradient_checkpointing=False)
    chosen = search.plan(arch, request, [pool]).chosen
    assert chosen is not None
    pinned = {b: search.plan(arch, request.model_copy(update={"micro_batch": b}), [pool]).chosen for b in (1, 2, 4, 8)}
    fitting = {b: c.step.step_seconds for b, c in pinned.items() if c is not None}
    assert chosen.step.step_seconds == min(fitting.values())
    assert chosen.settings.micro_batch == min(fitting, key=fitting.__getitem__)


def test_gemms_on_few_tokens_are_memory_bound() -> None:
    """A GEMM reads its whole weight matrix whatever the tokens: under the GPU's ridge point (about 300 tokens
    on an H100) the kernels' time per token rises, more on a faster GPU than on a slower one."""
    def kernel_seconds_per_token(gpu: gpus.GpuType, seq_len: int) -> float:
        return run(gpu=gpu, seq_len=seq_len, gradient_accumulation=1).compute_seconds / seq_len
    for gpu in (A100, H100):
        assert kernel_seconds_per_token(gpu, 64) > 1.5 * kernel_seconds_per_token(gpu, 2048)
    h100 = kernel_seconds_per_token(H100, 64) / kernel_seconds_per_token(H100, 2048)
    assert h100 > kernel_seconds_per_token(A100, 64) / kernel_seconds_per_token(A100, 2048)
