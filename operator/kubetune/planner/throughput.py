"""Step time and tokens per second: compute at a realistic share of peak, plus ZeRO traffic over the node's
or the fabric's links, plus offload traffic over PCIe and CPU optimizer time."""

from dataclasses import dataclass

from kubetune.api.vocabulary import Attention, Method, Offload, Precision, ZeroStage
from kubetune.catalog.gpus import GpuType
from kubetune.planner.architecture import Architecture
from kubetune.planner.memory import coefficients
from kubetune.planner.model_states import trainable_params
from kubetune.planner.settings import TrainingSettings


@dataclass(frozen=True)
class StepTime:
    step_seconds: float  # one optimizer step (all gradient-accumulation micro-steps)
    compute_seconds: float
    communication_seconds: float  # exposed, after overlap
    offload_seconds: float
    tokens_per_second: float  # across all GPUs


def peak_tflops(gpu: GpuType, precision: Precision) -> float:
    match precision:
        case Precision.BF16:
            return gpu.bf16_tflops or 0.0
        case Precision.FP16:
            return gpu.fp16_tflops
        case Precision.FP32:
            return gpu.fp32_tflops


def forward_flops_per_token(arch: Architecture, settings: TrainingSettings) -> float:
    """2 FLOPs per active weight, plus attention scores and values. Causal kernels (SDPA, FlashAttention-2)
    skip the masked half of the score matrix; eager computes all of it."""
    active_mlp = arch.experts_per_token * arch.expert_params if arch.is_moe else arch.mlp_params
    per_layer = arch.attention_params + active_mlp
    matmul = 2 * (arch.num_layers * per_layer + arch.vocab_size * arch.hidden_size)
    causal = 0.5 if settings.attention is not Attention.EAGER else 1.0
    attention = arch.num_layers * 4 * settings.seq_len * arch.q_size * causal
    return matmul + attention


def training_flops_per_token(arch: Architecture, settings: TrainingSettings) -> float:
    """Forward plus backward: backward costs two forwards with weight gradients (full), one without them
    (LoRA's frozen base); checkpointing adds one more forward."""
    passes = (3 if settings.method is Method.FULL else 2) + (1 if settings.gradient_checkpointing else 0)
    return forward_flops_per_token(arch, settings) * passes


def step_time(arch: Architecture, settings: TrainingSettings, gpu: GpuType) -> StepTime:
    coeff = coefficients()
    n = settings.num_gpus
    w = settings.precision.bytes
    trainable = trainable_params(arch, settings)
    total = arch.total_params
    micro_steps = settings.gradient_accumulation

    flops = training_flops_per_token(arch, settings) * settings.tokens_per_micro_batch
    compute = micro_steps * flops / (peak_tflops(gpu, settings.precision) * 1e12 * coeff.achievable_flops_fraction)

    ring = (n - 1) / n
    bandwidth = 1e9 * (gpu.intra_node_gb_per_second if settings.num_nodes == 1
                       else min(gpu.intra_node_gb_per_second, gpu.inter_node_gb_per_second))
    gradient_sync = 2 * trainable * w * ring  # reduce-scatter + all-gather (or one all-reduce)
    if settings.zero_stage is ZeroStage.PARAMETERS:
        gathers = 3 if settings.gradient_checkpointing else 2  # forward, backward (and recompute)
        per_micro = (gathers * total * w + trainable * w) * ring
        comm_bytes = micro_steps * per_micro + trainable * w * ring
    elif settings.zero_stage is ZeroStage.GRADIENTS:
        comm_bytes = micro_steps * trainable * w * ring + trainable * w * ring
    else:
        comm_bytes = gradient_sync
    overlap = coeff.comm_overlap_fraction if settings.buckets.overlaps(settings.zero_stage) else 0.0
    communication = comm_bytes / bandwidth * (1 - overlap) if n > 1 else 0.0

    offload = 0.0
    host = gpu.host_link_gb_per_second * 1e9
    if settings.offload is not Offload.NONE:
        # Gradients down and updated parameters up over PCIe, and the update itself on the CPU.
        offload += 2 * trainable * w / n / host + trainable / n / coeff.cpu_adam_params_per_second
    if settings.offload is Offload.ALL:
        offload += micro_steps * 2 * total * w / n / host
    optimizer = 0.0 if settings.offload is not Offload.NONE else (
        coeff.optimizer_step_bytes_per_param * trainable / n / (gpu.memory_bandwidth_gb_per_second * 1e9))

    step = compute + communication + offload + optimizer
    tokens = n * micro_steps * settings.tokens_per_micro_batch
    return StepTime(step, compute, communication, offload, tokens / step)
