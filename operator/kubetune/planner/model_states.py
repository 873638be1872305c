"""Weights, gradients, optimizer states and DeepSpeed's own buffers on one GPU, per ZeRO stage and offload.

DeepSpeed's published rules (`estimate_zero2_model_states_mem_needs`, `estimate_zero3_model_states_mem_needs`)
count 2 bytes of 16-bit weights per parameter plus 18 bytes per parameter over the data-parallel size (16-bit
and fp32 gradients, fp32 master weights, two Adam moments). This module splits those 18 bytes by what holds
them and when, adds what the estimators leave out (stage 0 and 1, LoRA's frozen weights, buckets, gathered
ZeRO-3 layers, the offload gradient buffer) and keeps trainable and frozen parameters apart.
"""

from dataclasses import dataclass
from functools import lru_cache

from kubetune.api.vocabulary import Method, Offload, Precision, ZeroStage
from kubetune.planner import quantization
from kubetune.planner.architecture import Architecture
from kubetune.planner.settings import Lora, TrainingSettings

FP32 = 4


def trainable_params(arch: Architecture, settings: TrainingSettings) -> int:
    return _trainable(arch, settings.method, settings.lora)


@lru_cache(maxsize=256)
def _trainable(arch: Architecture, method: Method, lora: Lora) -> int:
    if method is Method.FULL:
        return arch.total_params
    modules = arch.lora_modules(lora.target_modules)
    per_layer = sum(lora.rank * (d_in + d_out) for d_in, d_out in modules.values())
    return per_layer * arch.num_layers


def persistent_params(arch: Architecture, settings: TrainingSettings) -> int:
    """Parameters ZeRO-3 also keeps whole on every GPU because their tensors are small (below
    stage3_param_persistence_threshold): norms, biases, small K/V projections, LoRA adapters."""
    return _persistent(arch, settings.buckets.param_persistence_threshold, settings.method, settings.lora)


@lru_cache(maxsize=256)
def _persistent(arch: Architecture, threshold: int, method: Method, lora: Lora) -> int:
    layer = sum(n for n in arch.layer_tensor_numels() if n < threshold)
    final_norm = arch.norm_params if arch.norm_params < threshold else 0
    adapters = 0
    if method.trains_adapters:
        rank = lora.rank
        for d_in, d_out in arch.lora_modules(lora.target_modules).values():
            adapters += sum(n for n in (rank * d_in, rank * d_out) if n < threshold)
    return (layer + adapters) * arch.num_layers + final_norm


@dataclass(frozen=True)
class ModelStates:
    """Bytes on one GPU. `gradients_*` differ by phase: DeepSpeed allocates some only in backward or at step."""

    weights: int
    optimizer_states: int
    gradients_persistent: int  # held from before the forward pass to the end of the step
    gradients_backward: int  # what backward adds by its end (16-bit grads not yet reduced away)
    gradients_step: int  # what the optimizer step adds (the fp32 gradient partition)
    buffers: int  # communication buckets, gathered ZeRO-3 parameters, offload staging, QLoRA's dequantised weight
    cpu_per_gpu: int  # host memory pinned per GPU process for offloaded states


def model_states(arch: Architecture, settings: TrainingSettings) -> ModelStates:
    total = arch.total_params
    trainable = trainable_params(arch, settings)
    adapters = trainable if settings.method.trains_adapters else 0  # what LoRA adds to the model: all it trains
    n = settings.num_gpus
    stage = settings.zero_stage
    mixed = settings.precision is not Precision.FP32
    w = settings.precision.bytes
    # fp32 master weights live with the optimizer states when training in 16 bits.
    optimizer_per_param = settings.optimizer.state_bytes + (FP32 if mixed else 0)
    offload_optimizer = settings.offload is not Offload.NONE
    offload_params = settings.offload is Offload.ALL

    if stage is ZeroStage.PARAMETERS:
        # Every parameter has its 1/N partition; small ones are also kept whole for compute.
        persistent = persistent_params(arch, settings) * w
        weights = persistent if offload_params else (total + adapters) * w // n + persistent
    elif settings.method is Method.QLORA:
        # The 4-bit layers' packed codes and constants; embeddings, LM head, norms and biases in the compute dtype.
        weights = quantization.quantized_bytes(arch) + (total - quantization.quantized_params(arch)) * w + adapters * w
    else:
        weights = (total + adapters) * w

    optimizer = 0 if offload_optimizer else optimizer_per_param * trainable
    if stage is not ZeroStage.DISABLED:
        optimizer //= n

    fp32_step = FP32 * trainable // n if mixed and not offload_optimizer else 0
    match stage:
        case ZeroStage.DISABLED:
            # DeepSpeed 0.19 without ZeRO keeps gradients in the model dtype (grad_accum_dtype defaults to it)
            # and wraps the optimizer in its FP16 optimizer even for bf16: 16-bit .grad tensors during
            # backward, flattened to fp32 for the master weights at the step. Nothing is partitioned.
            persistent_grads, backward_grads, step_grads = 0, w * trainable, FP32 * trainable if mixed else 0
        case ZeroStage.OPTIMIZER:
            # Full 16-bit gradients until the accumulation boundary, reduced into the fp32 partition at step.
            persistent_grads = w * trainable if settings.gradient_accumulation > 1 else 0
            backward_grads = 0 if persistent_grads else w * trainable
            step_grads = fp32_step
        case ZeroStage.GRADIENTS | ZeroStage.PARAMETERS if offload_optimizer:
            # Reduced gradients go straight to the host's fp32 partition, through the staging buffer.
            persistent_grads, backward_grads, step_grads = 0, 0, 0
        case ZeroStage.GRADIENTS:
            # The gradient partition is allocated at the start of backward and kept (contiguous_gradients).
            persistent_grads, backward_grads, step_grads = w * trainable // n, 0, fp32_step
        case ZeroStage.PARAMETERS:
            # As stage 2, but the fp32 gradient exists for one optimizer sub-group at a time.
            sub_group = min(trainable // n, settings.buckets.sub_group_elements)
            persistent_grads, backward_grads = w * trainable // n, 0
            step_grads = FP32 * sub_group if fp32_step else 0

    buffers = _buffers(arch, settings, trainable)
    cpu = 0
    if offload_optimizer:
        # Offloaded partition: fp32 master, optimizer moments and fp32 gradients, in pinned host memory.
        cpu += (optimizer_per_param + FP32) * trainable // n
    if offload_params:
        cpu += w * total // n
    return ModelStates(weights, optimizer, persistent_grads, backward_grads, step_grads, buffers, cpu)


def _buffers(arch: Architecture, settings: TrainingSettings, trainable: int) -> int:
    stage = settings.zero_stage
    w = settings.precision.bytes
    buckets = settings.buckets
    if stage is ZeroStage.DISABLED:
        reduce = 0
    else:
        # The gradient reduce bucket (IPG buffer), double-buffered when overlap_comm is on. DeepSpeed sizes
        # it from the config alone, however few parameters train (measured: LoRA under ZeRO-3).
        reduce = buckets.reduce_bucket_elements * w * (2 if buckets.overlaps(stage) else 1)
    buffers = reduce
    if stage is ZeroStage.PARAMETERS:
        # Parameters gathered for the module in flight plus the prefetch window; the embedding (or head)
        # must be gathered whole when it runs.
        largest_module = max(arch.layer_params, arch.embedding_params)
        gathered = min(largest_module + buckets.prefetch_bucket_elements, buckets.max_live_parameters)
        buffers += max(gathered, largest_module) * w
    elif settings.offload is Offload.OPTIMIZER:
        # Gradients are staged through a GPU buffer the size of the largest parameter tensor.
        buffers += arch.largest_param_numel * w if settings.method is Method.FULL else 0
    if settings.method is Method.QLORA:
        buffers += quantization.dequantization_bytes(arch, w)
    return buffers
