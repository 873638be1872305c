"""Step time and tokens per second, from what a step makes the GPU, its host and its links do.

A micro-step's GPU time is its GEMMs (each the longer of its FLOPs at a share of peak and its bytes at the
memory bandwidth), its attention kernel (FLOPs, or eager's score-matrix traffic) and its memory-bound
elementwise kernels (norms, rotary, activations, LoRA adapters, the loss). Meanwhile the host dispatches
every op from Python; a micro-step takes the smooth maximum of the two, so small micro-steps are host-bound.
On top: DeepSpeed's per-tensor gradient hooks (ZeRO-1/2) and per-module gathers (ZeRO-3), ZeRO traffic over
the node's or the fabric's links, offload over PCIe with the CPU's Adam, and the optimizer step. Every
constant is in time_coefficients.yaml with its source; docs/time-model.md checks the whole against
published step times."""

from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from kubetune.api.vocabulary import Attention, Method, Offload, Precision, ZeroStage
from kubetune.catalog.gpus import GpuType
from kubetune.planner.architecture import Architecture
from kubetune.planner.model_states import trainable_params, trained_bytes
from kubetune.planner.settings import TrainingSettings


class TimeCoefficients(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gemm_efficiency: float
    memory_bandwidth_efficiency: float
    attention_forward_efficiency: float
    attention_backward_efficiency: float
    attention_backward_flops_ratio: float
    sdpa_relative_efficiency: float
    eager_score_bytes_forward: float
    eager_score_bytes_backward: float
    elementwise_bytes_per_hidden: float
    elementwise_bytes_per_qk: float
    elementwise_bytes_per_attention_output: float
    elementwise_bytes_per_intermediate: float
    backward_traffic_ratio: float
    logits_bytes_per_entry: float
    chunked_loss_recompute_bytes_per_entry: float
    chunked_loss_ops_per_chunk: int
    lora_forward_bytes_per_input: float
    lora_forward_bytes_per_output: float
    lora_backward_bytes_per_input: float
    lora_backward_bytes_per_output: float
    lora_dropout_bytes_per_input: float
    host_seconds_per_op: float
    layer_forward_ops: int
    lora_forward_ops: int
    moe_expert_forward_ops: int
    backward_ops_per_forward_op: float
    micro_step_ops: int
    host_gpu_overlap_norm: float
    zero12_hook_seconds_per_tensor: float
    zero3_seconds_per_module_pass: float
    step_host_seconds: float
    comm_overlap_fraction: float
    cpu_adam_params_per_second: float
    optimizer_step_passes: int


@cache
def coefficients() -> TimeCoefficients:
    text = resources.files("kubetune.planner").joinpath("time_coefficients.yaml").read_text()
    return TimeCoefficients.model_validate(yaml.safe_load(text))


class Cost(StrEnum):
    """What a step's time goes to, as the plan's explanation names it."""

    COMPUTE = "compute"  # the GPU's kernels
    OVERHEAD = "fixed overhead"  # the GPU waiting on the host: op dispatch, DeepSpeed's hooks, step bookkeeping
    ZERO = "ZeRO traffic"  # exposed ZeRO communication and ZeRO-3's per-module gathers
    OFFLOAD = "offload"  # PCIe traffic and the CPU's optimizer step


@dataclass(frozen=True, slots=True)
class StepTime:
    step_seconds: float  # one optimizer step (all gradient-accumulation micro-steps)
    compute_seconds: float
    overhead_seconds: float
    communication_seconds: float  # exposed, after overlap
    offload_seconds: float
    tokens_per_second: float  # across all GPUs

    @property
    def shares(self) -> dict[Cost, float]:
        parts = {Cost.COMPUTE: self.compute_seconds, Cost.OVERHEAD: self.overhead_seconds,
                 Cost.ZERO: self.communication_seconds, Cost.OFFLOAD: self.offload_seconds}
        return {cost: seconds / self.step_seconds for cost, seconds in parts.items()}

    @property
    def dominant(self) -> Cost:
        shares = self.shares
        return max(shares, key=shares.__getitem__)


def peak_tflops(gpu: GpuType, precision: Precision) -> float:
    match precision:
        case Precision.BF16 | Precision.PURE_BF16:
            return gpu.bf16_tflops or 0.0
        case Precision.FP16:
            return gpu.fp16_tflops
        case Precision.FP32:
            return gpu.fp32_tflops


def forward_flops_per_token(arch: Architecture, settings: TrainingSettings) -> float:
    """Model FLOPs (for MFU, as the trainer reports it): 2 per active weight, plus attention scores and
    values. Causal kernels (SDPA, FlashAttention-2) skip the masked half of the score matrix; eager
    computes all of it."""
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


@dataclass(frozen=True, slots=True)
class StepWork:
    """What one optimizer step makes each GPU, its host and its links do, whatever the GPU: the planner works
    it out once per configuration and times it on every GPU type the configuration fits. Sums over all
    micro-steps; terms that do not apply are 0."""

    gemms: tuple[tuple[float, float], ...]  # (FLOPs, bytes) of each kind of GEMM
    attention_flops: float  # FLOPs over their kernels' share of peak: seconds at 1 FLOP/s of peak
    memory_bytes: float  # memory-bound kernels' traffic
    host_seconds: float  # the host's dispatch and DeepSpeed's ZeRO-1/2 hooks, overlapping the GPU
    zero3_latency_seconds: float  # ZeRO-3's per-module gathers, on the critical path
    communication_bytes: float  # ZeRO traffic, before overlap
    overlap: float  # the share of the communication hidden behind compute
    offload_bytes: float  # gradients down (every micro-step) and updated parameters up over PCIe
    offload_parameter_bytes: float  # parameters streamed up in every micro-step (offload 'all')
    cpu_optimizer_seconds: float  # the update on the CPU
    optimizer_bytes: float  # what the optimizer step on the GPU reads and writes
    micro_steps: int
    tokens: int  # across all GPUs


def _passes(settings: TrainingSettings) -> tuple[int, int]:
    """Forward passes over each layer (two with checkpointing's recompute), and GEMMs its backward runs per
    forward GEMM of a frozen (1: the input's gradient) or trainable (2: and the weight's) matrix."""
    return (2 if settings.gradient_checkpointing else 1), (2 if settings.method is Method.FULL else 1)


def _gemm(tokens: float, d_in: int, d_out: int, weights: int, w: int, count: float) -> tuple[float, float]:
    """`count` GEMMs of `tokens` x `d_in` by `d_in` x `d_out`, over `weights` such matrices (experts)."""
    return (count * 2 * tokens * d_in * d_out,
            count * w * (tokens * (d_in + d_out) + weights * d_in * d_out))


MicroStepWork = tuple[tuple[tuple[float, float], ...], float, float, float]


def _micro_step_work(arch: Architecture, settings: TrainingSettings) -> MicroStepWork:
    """One micro-step's GEMMs, attention FLOPs (over efficiency), memory traffic and host seconds. They depend
    on neither the ZeRO stage nor the GPU count, so the planner's many configurations share a few."""
    s = settings
    return _cached_micro_step_work(arch, (s.seq_len, s.micro_batch, s.method, s.lora, s.gradient_checkpointing,
                                          s.attention, s.precision, s.loss_chunk_tokens))


@lru_cache(maxsize=2048)
def _cached_micro_step_work(arch: Architecture, key: tuple[Any, ...]) -> MicroStepWork:
    seq_len, micro_batch, method, lora, checkpointing, attention_kernel, precision, loss_chunk = key
    settings = TrainingSettings(seq_len=seq_len, micro_batch=micro_batch, method=method, lora=lora,
                                gradient_checkpointing=checkpointing, attention=attention_kernel, precision=precision,
                                loss_chunk_tokens=loss_chunk)
    c = coefficients()
    w = settings.precision.bytes
    tokens = settings.tokens_per_micro_batch
    forwards, backward_gemms = _passes(settings)
    layers = arch.num_layers
    gemm_count = forwards + backward_gemms
    shapes = arch.linear_shapes
    attention_names = ("q_proj", "k_proj", "v_proj", "o_proj")
    gemms = []
    for name, (d_in, d_out) in shapes.items():
        if name in attention_names or not arch.is_moe:
            gemms.append(_gemm(tokens, d_in, d_out, 1, w, layers * gemm_count))
        else:
            # Each expert runs on its share of the routed tokens, and its weights are read whatever that share.
            routed = tokens * arch.experts_per_token
            gemms.append(_gemm(routed, d_in, d_out, arch.num_experts, w, layers * gemm_count))
    # The LM head runs outside the checkpointed layers: once forward, and again in backward under the chunked loss.
    head_forwards = 1 if loss_chunk is None else 2
    gemms.append(_gemm(tokens, arch.hidden_size, arch.vocab_size, 1, w, head_forwards + backward_gemms))

    lora = settings.lora
    adapters = arch.lora_modules(lora.target_modules) if settings.method.trains_adapters else {}
    lora_in = sum(d_in for d_in, _ in adapters.values())
    lora_out = sum(d_out for _, d_out in adapters.values())
    if adapters:
        # A and B: forward, then each one's input and weight gradients.
        flops = 2 * tokens * lora.rank * (lora_in + lora_out) * layers * (forwards + 2)
        gemms.append((flops, 0.0))

    seq, causal = settings.seq_len, settings.attention is Attention.FLASH_ATTENTION_2
    score_elements = settings.micro_batch * arch.num_heads * seq * seq
    forward_flops = 4 * settings.micro_batch * seq * seq * arch.q_size * (0.5 if causal else 1.0)
    memory = 0.0
    if settings.attention is Attention.EAGER:
        # Two batched GEMMs (QK^T, PV) at GEMM speed, and the score matrix through memory in between.
        gemms.append((layers * forward_flops * (forwards + 2), 0.0))
        memory += layers * score_elements * (c.eager_score_bytes_forward * forwards + c.eager_score_bytes_backward)
        attention = 0.0
    else:
        scale = 1.0 if causal else c.sdpa_relative_efficiency
        attention = layers * forward_flops / scale * (forwards / c.attention_forward_efficiency
                                                      + c.attention_backward_flops_ratio / c.attention_backward_efficiency)

    traffic_passes = forwards + c.backward_traffic_ratio
    intermediate = arch.intermediate_size * (arch.experts_per_token if arch.is_moe else 1)
    elementwise = (c.elementwise_bytes_per_hidden * arch.hidden_size
                   + c.elementwise_bytes_per_qk * (arch.q_size + arch.kv_size)
                   + c.elementwise_bytes_per_attention_output * arch.q_size
                   + c.elementwise_bytes_per_intermediate * intermediate) * w / 2
    adapter_bytes = (forwards * (c.lora_forward_bytes_per_input * lora_in + c.lora_forward_bytes_per_output * lora_out)
                     + c.lora_backward_bytes_per_input * lora_in + c.lora_backward_bytes_per_output * lora_out)
    if lora.dropout > 0:
        adapter_bytes += (forwards + 1) * c.lora_dropout_bytes_per_input * lora_in
    memory += tokens * layers * (elementwise * traffic_passes + adapter_bytes * w / 2)
    memory += tokens * arch.vocab_size * c.logits_bytes_per_entry
    if loss_chunk is not None:
        memory += tokens * arch.vocab_size * c.chunked_loss_recompute_bytes_per_entry

    layer_ops = c.layer_forward_ops + c.lora_forward_ops * len(adapters)
    if arch.is_moe:
        layer_ops += c.moe_expert_forward_ops * arch.num_experts
    ops = layers * layer_ops * (forwards + c.backward_ops_per_forward_op) + c.micro_step_ops
    if loss_chunk is not None:
        ops += -(-tokens // loss_chunk) * c.chunked_loss_ops_per_chunk
    host = ops * c.host_seconds_per_op
    return tuple(gemms), attention, memory, host


def _trainable_tensors(arch: Architecture, settings: TrainingSettings) -> int:
    """Trainable parameter tensors, each with its own DeepSpeed gradient hook."""
    if settings.method.trains_adapters:
        return 2 * len(arch.lora_modules(settings.lora.target_modules)) * arch.num_layers
    embeddings = 1 if arch.tie_word_embeddings else 2
    return len(arch.layer_tensor_numels()) * arch.num_layers + embeddings + 1


def _zero3_modules(arch: Architecture, settings: TrainingSettings) -> int:
    """Modules ZeRO-3 gathers parameters for, per layer: the linears (the experts' fused tensors as one),
    the norms, and LoRA's A and B."""
    linears = 4 + (2 if arch.is_moe else len(arch.linear_shapes) - 4)
    adapters = len(arch.lora_modules(settings.lora.target_modules)) if settings.method.trains_adapters else 0
    return linears + arch.norms_per_layer + 2 * adapters


def _optimizer_step_tensor_bytes(settings: TrainingSettings) -> int:
    """Bytes per trainable parameter of the tensors an Adam step touches on the GPU: the parameter, the gradient in
    the optimizer's dtype, the master when it is a copy, and the moments (36 bytes read and written in mixed bf16,
    16-20 in pure bf16)."""
    trained = trained_bytes(settings)
    return trained.parameter + trained.optimizer + trained.master + settings.optimizer.moments * trained.optimizer


def step_work(arch: Architecture, settings: TrainingSettings) -> StepWork:
    coeff = coefficients()
    n = settings.num_gpus
    w = settings.precision.bytes
    trainable = trainable_params(arch, settings)
    total = arch.total_params
    micro_steps = settings.gradient_accumulation

    gemms, attention, memory, host = _micro_step_work(arch, settings)
    if settings.zero_stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS):
        host += _trainable_tensors(arch, settings) * coeff.zero12_hook_seconds_per_tensor
    forwards, _ = _passes(settings)
    zero3 = 0.0
    if settings.zero_stage is ZeroStage.PARAMETERS:
        zero3 = arch.num_layers * _zero3_modules(arch, settings) * (forwards + 1) * coeff.zero3_seconds_per_module_pass

    ring = (n - 1) / n
    g = trained_bytes(settings).parameter  # trainable parameters and their gradients: fp32 LoRA adapters too
    gradient_sync = 2 * trainable * g * ring  # reduce-scatter + all-gather (or one all-reduce)
    if settings.zero_stage is ZeroStage.PARAMETERS:
        per_micro = ((forwards + 1) * total * w + trainable * g) * ring  # forward, backward (and recompute)
        comm_bytes = micro_steps * per_micro + trainable * g * ring
    elif settings.zero_stage is ZeroStage.GRADIENTS:
        comm_bytes = micro_steps * trainable * g * ring + trainable * g * ring
    else:
        comm_bytes = gradient_sync
    overlap = coeff.comm_overlap_fraction if settings.buckets.overlaps(settings.zero_stage) else 0.0

    offloaded = settings.offload is not Offload.NONE
    return StepWork(
        gemms=tuple((micro_steps * flops, micro_steps * nbytes) for flops, nbytes in gemms),
        attention_flops=micro_steps * attention,
        memory_bytes=micro_steps * memory,
        host_seconds=micro_steps * host,
        zero3_latency_seconds=micro_steps * zero3,
        communication_bytes=comm_bytes,
        overlap=overlap,
        # Gradients down in every micro-step (DeepSpeed accumulates offloaded gradients on the CPU), updated
        # parameters up once, and the update itself on the CPU.
        offload_bytes=(micro_steps + 1) * trainable * g / n if offloaded else 0.0,
        offload_parameter_bytes=micro_steps * 2 * total * w / n if settings.offload is Offload.ALL else 0.0,
        cpu_optimizer_seconds=trainable / n / coeff.cpu_adam_params_per_second if offloaded else 0.0,
        optimizer_bytes=0.0 if offloaded else coeff.optimizer_step_passes * _optimizer_step_tensor_bytes(settings)
        * trainable / n,
        micro_steps=micro_steps,
        tokens=n * micro_steps * settings.tokens_per_micro_batch,
    )


def step_time(arch: Architecture, settings: TrainingSettings, gpu: GpuType) -> StepTime:
    return time_on(step_work(arch, settings), settings, gpu)


def time_on(work: StepWork, settings: TrainingSettings, gpu: GpuType) -> StepTime:
    """The step time of `work` (the step work of `settings`) on `gpu`."""
    c = coefficients()
    peak = peak_tflops(gpu, settings.precision) * 1e12
    flops_rate = peak * c.gemm_efficiency
    memory_rate = gpu.memory_bandwidth_gb_per_second * 1e9 * c.memory_bandwidth_efficiency
    kernels = work.attention_flops / peak + work.memory_bytes / memory_rate
    for flops, nbytes in work.gemms:
        # The roofline: compute-bound above the GPU's ridge point, memory-bound below it.
        kernels += flops / flops_rate if flops * memory_rate > nbytes * flops_rate else nbytes / memory_rate
    p = c.host_gpu_overlap_norm
    micro_steps = (kernels**p + work.host_seconds**p) ** (1 / p)
    optimizer = work.optimizer_bytes / (gpu.memory_bandwidth_gb_per_second * 1e9)
    compute = kernels + optimizer
    overhead = micro_steps - kernels + c.step_host_seconds

    bandwidth = 1e9 * (gpu.intra_node_gb_per_second if settings.num_nodes == 1
                       else min(gpu.intra_node_gb_per_second, gpu.inter_node_gb_per_second))
    communication = work.communication_bytes / bandwidth * (1 - work.overlap) if settings.num_gpus > 1 else 0.0
    communication += work.zero3_latency_seconds
    host = gpu.host_link_gb_per_second * 1e9
    offload = work.offload_bytes / host + work.cpu_optimizer_seconds + work.offload_parameter_bytes / host
    step = compute + overhead + communication + offload
    return StepTime(step, compute, overhead, communication, offload, work.tokens / step)
