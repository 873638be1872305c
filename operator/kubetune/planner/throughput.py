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


@dataclass(frozen=True)
class StepWork:
    """What one optimizer step moves and computes on each GPU, whatever the GPU: the planner works it out once
    per configuration and times it on every GPU type the configuration fits. Terms that do not apply are 0."""

    flops: float  # all micro-steps
    communication_bytes: float  # ZeRO traffic, before overlap
    overlap: float  # the share of the communication hidden behind compute
    offload_bytes: float  # gradients down and updated parameters up over PCIe, once per step
    offload_parameter_bytes: float  # parameters streamed up in every micro-step (offload 'all')
    cpu_optimizer_seconds: float  # the update on the CPU
    optimizer_bytes: float  # what the optimizer step on the GPU reads and writes
    tokens: int  # across all GPUs


def step_work(arch: Architecture, settings: TrainingSettings) -> StepWork:
    coeff = coefficients()
    n = settings.num_gpus
    w = settings.precision.bytes
    trainable = trainable_params(arch, settings)
    total = arch.total_params
    micro_steps = settings.gradient_accumulation

    flops = training_flops_per_token(arch, settings) * settings.tokens_per_micro_batch

    ring = (n - 1) / n
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

    offloaded = settings.offload is not Offload.NONE
    return StepWork(
        flops=micro_steps * flops,
        communication_bytes=comm_bytes,
        overlap=overlap,
        # Gradients down and updated parameters up over PCIe, and the update itself on the CPU.
        offload_bytes=2 * trainable * w / n if offloaded else 0.0,
        offload_parameter_bytes=micro_steps * 2 * total * w / n if settings.offload is Offload.ALL else 0.0,
        cpu_optimizer_seconds=trainable / n / coeff.cpu_adam_params_per_second if offloaded else 0.0,
        optimizer_bytes=0.0 if offloaded else coeff.optimizer_step_bytes_per_param * trainable / n,
        tokens=n * micro_steps * settings.tokens_per_micro_batch,
    )


def step_time(arch: Architecture, settings: TrainingSettings, gpu: GpuType) -> StepTime:
    return time_on(step_work(arch, settings), settings, gpu)


def time_on(work: StepWork, settings: TrainingSettings, gpu: GpuType) -> StepTime:
    """The step time of `work` (the step work of `settings`) on `gpu`."""
    compute = work.flops / (peak_tflops(gpu, settings.precision) * 1e12 * coefficients().achievable_flops_fraction)
    bandwidth = 1e9 * (gpu.intra_node_gb_per_second if settings.num_nodes == 1
                       else min(gpu.intra_node_gb_per_second, gpu.inter_node_gb_per_second))
    communication = work.communication_bytes / bandwidth * (1 - work.overlap) if settings.num_gpus > 1 else 0.0
    host = gpu.host_link_gb_per_second * 1e9
    offload = work.offload_bytes / host + work.cpu_optimizer_seconds + work.offload_parameter_bytes / host
    optimizer = work.optimizer_bytes / (gpu.memory_bandwidth_gb_per_second * 1e9)
    step = compute + communication + offload + optimizer
    return StepTime(step, compute, communication, offload, work.tokens / step)
