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
FP64 = 8
NORM_CHUNK_ELEMENTS = 250_000_000  # stage3.py, _constant_buffered_norm2's buffer_size
# Without ZeRO, DeepSpeed all-reduces the gradients in flattened buckets of this many elements, not configurable
# (engine.py, MEMORY_OPT_ALLREDUCE_SIZE).
ALLREDUCE_BUCKET_ELEMENTS = 500_000_000


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
    return sum(_persistent(arch, settings.buckets.param_persistence_threshold, settings.method, settings.lora))


@lru_cache(maxsize=256)
def _persistent(arch: Architecture, threshold: int, method: Method, lora: Lora) -> tuple[int, int]:
    """The model's and LoRA's adapters' persistent parameters, apart: adapters may be fp32."""
    layer = sum(n for n in arch.layer_tensor_numels() if n < threshold)
    final_norm = arch.norm_params if arch.norm_params < threshold else 0
    adapters = 0
    if method.trains_adapters:
        rank = lora.rank
        for d_in, d_out in arch.lora_modules(lora.target_modules).values():
            adapters += sum(n for n in (rank * d_in, rank * d_out) if n < threshold)
    return layer * arch.num_layers + final_norm, adapters * arch.num_layers


@dataclass(frozen=True)
class ModelStates:
    """Bytes on one GPU. `gradients_*` differ by phase: DeepSpeed allocates some only in backward or at step."""

    weights: int
    optimizer_states: int
    gradients_persistent: int  # held from before the forward pass to the end of the step
    gradients_backward: int  # what backward adds by its end (16-bit grads not yet reduced away)
    gradients_step: int  # what the optimizer step adds (the fp32 gradient partition)
    gradients_reduction: int  # what only the end of backward adds: ZeRO-0's flattened copy for the all-reduce
    buffers: int  # communication buckets, offload staging, QLoRA's dequantised weight: forward, backward and step
    gathered: int  # ZeRO-3's whole parameters gathered in the layers' backward (the module in flight, prefetch)
    gathered_at_loss: int  # what ZeRO-3 has gathered while the loss's backward runs, before the layers'
    cpu_per_gpu: int  # host memory pinned per GPU process for offloaded states


@dataclass(frozen=True)
class TrainedBytes:
    """Bytes per trainable parameter of what the optimizer works with, by DeepSpeed's code path."""

    parameter: int  # the trainable parameter, and its gradient
    optimizer: int  # what the optimizer updates and keeps its states (moments) in
    master: int  # a separate copy the optimizer updates, in its dtype (0: it updates the parameter itself)

    @property
    def step_gradient(self) -> int:
        """The gradient in the optimizer's dtype, built at the step when it is not the parameter's."""
        return self.optimizer if self.optimizer != self.parameter else 0


def trained_bytes(settings: TrainingSettings) -> TrainedBytes:
    """The dtypes DeepSpeed 0.19 trains with, for the ds_config kubetune writes (planner/ds_config.py).

    The optimizer's dtype is fp32 except in pure bf16 (bf16_master_weights_and_grads with bf16_optimizer_states, or
    at ZeRO-0 no DeepSpeed bf16 mode at all). Trainable parameters are 16-bit unless the precision is FP32 or LoRA's
    adapters are kept fp32. Whether the optimizer keeps its own copy of them:
    - ZeRO-0: in 16-bit mixed precision the FP16 optimizer's fp32 master (engine.py, _do_optimizer_sanity_check:
      DDP_BFLOAT16); otherwise the basic optimizer (torch's AdamW) updates the parameters themselves.
    - ZeRO-1/2/3: always, even when the dtypes agree (pure bf16, fp32). stage_1_and_2.py clones this rank's
      partition of the flat 16-bit group `.to(master_weights_and_grads_dtype)`. stage3.py (_create_fp32_partitions)
      means to reuse the 16-bit partition when it already has the master's dtype and device, but compares the
      tensor's torch.device with the accelerator's device name, a str, which is never equal: it copies too
      (measured, tests/measured/test_model_states_vs_deepspeed.py).
    """
    fp32_adapters = settings.method.trains_adapters and settings.lora.adapters_fp32
    return _trained_bytes(settings.precision, fp32_adapters, settings.zero_stage is ZeroStage.DISABLED)


@lru_cache(maxsize=64)
def _trained_bytes(precision: Precision, fp32_adapters: bool, without_zero: bool) -> TrainedBytes:
    """Cached: every estimate asks several times, and the planner makes thousands."""
    optimizer_dtype = 2 if precision is Precision.PURE_BF16 else FP32
    parameter = FP32 if precision is Precision.FP32 or fp32_adapters else 2
    separate = not without_zero or parameter != optimizer_dtype
    return TrainedBytes(parameter=parameter, optimizer=optimizer_dtype, master=optimizer_dtype if separate else 0)


def model_states(arch: Architecture, settings: TrainingSettings) -> ModelStates:
    total = arch.total_params
    trainable = trainable_params(arch, settings)
    adapters = trainable if settings.method.trains_adapters else 0  # what LoRA adds to the model: all it trains
    n = settings.num_gpus
    stage = settings.zero_stage
    w = settings.precision.bytes
    trained = trained_bytes(settings)
    g = trained.parameter  # the trainable parameters' gradients are in their dtype
    optimizer_per_param = settings.optimizer.moments * trained.optimizer + trained.master
    offload_optimizer = settings.offload is not Offload.NONE
    offload_params = settings.offload is Offload.ALL

    if stage is ZeroStage.PARAMETERS:
        # Every parameter has its 1/N partition; small ones are also kept whole for compute.
        base_persistent, adapters_persistent = _persistent(
            arch, settings.buckets.param_persistence_threshold, settings.method, settings.lora)
        persistent = base_persistent * w + adapters_persistent * g
        weights = persistent if offload_params else (total * w + adapters * g) // n + persistent
    elif settings.method is Method.QLORA:
        # The 4-bit layers' packed codes and constants; embeddings, LM head, norms and biases in the compute dtype.
        weights = quantization.quantized_bytes(arch) + (total - quantization.quantized_params(arch)) * w + adapters * g
    else:
        weights = total * w + adapters * g

    optimizer = 0 if offload_optimizer else optimizer_per_param * trainable
    if stage is not ZeroStage.DISABLED:
        optimizer //= n

    fp32_step = trained.step_gradient * trainable // n if not offload_optimizer else 0
    reduction = 0
    match stage:
        case ZeroStage.DISABLED:
            # DeepSpeed 0.19 without ZeRO keeps gradients in the model dtype (grad_accum_dtype defaults to it)
            # and wraps the optimizer in its FP16 optimizer even for bf16: 16-bit .grad tensors during
            # backward, flattened to fp32 for the master weights at the step. Nothing is partitioned. In pure
            # bf16 and with fp32 adapters (no DeepSpeed bf16 mode) torch's AdamW steps on the .grad tensors.
            # Accumulation keeps the .grad tensors from the first micro-batch on. At the boundary the all-reduce
            # flattens them into one new tensor per bucket (engine.py, allreduce_no_retain), even on one GPU
            # (measured on the CPU: the step's peak in pure bf16).
            accumulates = settings.gradient_accumulation > 1
            persistent_grads = g * trainable if accumulates else 0
            backward_grads = 0 if accumulates else g * trainable
            step_grads = trained.step_gradient * trainable
            reduction = g * min(trainable, ALLREDUCE_BUCKET_ELEMENTS + _largest_trainable_tensor(arch, settings))
        case ZeroStage.OPTIMIZER if settings.gradient_accumulation > 1 or offload_optimizer:
            # Full 16-bit gradients until the accumulation boundary, reduced into the fp32 partition at step.
            persistent_grads = g * trainable if settings.gradient_accumulation > 1 else 0
            backward_grads = 0 if persistent_grads else g * trainable
            step_grads = fp32_step
        case ZeroStage.GRADIENTS | ZeroStage.PARAMETERS if offload_optimizer:
            # Reduced gradients go straight to the host's fp32 partition, through the staging buffer.
            persistent_grads, backward_grads, step_grads = 0, 0, 0
        case ZeroStage.GRADIENTS | ZeroStage.OPTIMIZER:
            # Stage 1 without accumulation runs stage 2's code (measured: the same bytes at every moment). The
            # gradient partition is allocated in backward, when the first bucket is reduced, from the whole of
            # every parameter that overlaps this rank's partition (stage_1_and_2.py, copy_grads_in_partition):
            # up to one parameter more at each partition boundary; it is freed after the step. At the step the
            # partition is flattened into a new 16-bit tensor and that one cast to the optimizer's dtype, both
            # alive at once (stage_1_and_2.py, step: self.flatten(...).to(...)).
            boundaries = 0 if n == 1 else 1 if n == 2 else 2
            backward_grads = g * (trainable // n + boundaries * _largest_trainable_tensor(arch, settings))
            persistent_grads, step_grads = 0, g * trainable // n + fp32_step
        case ZeroStage.PARAMETERS:
            # As stage 2, but the gradient partition is kept between steps, and the step flattens and casts one
            # optimizer sub-group at a time (stage3.py, _prepare_fp32_grad_for_sub_group: a 16-bit copy and its
            # cast alive at once).
            sub_group = min(trainable // n, settings.buckets.sub_group_elements)
            persistent_grads, backward_grads = g * trainable // n, 0
            step_grads = (g + trained.step_gradient) * sub_group if fp32_step else 0

    buffers = _buffers(arch, settings, trainable)
    cpu = 0
    if offload_optimizer:
        # Offloaded partition: fp32 master, optimizer moments and fp32 gradients, in pinned host memory; and a
        # 16-bit partition beside them: ZeRO-1/2's copy of the updated parameters on their way back to the GPU
        # (stage_1_and_2.py, param_buffer_of_bit16_for_cpu_offload_groups) with a host staging buffer of the largest
        # parameter (temp_grad_buffer_for_cpu_offload), ZeRO-3's 16-bit gradient partition (stage3.py,
        # grad_partitions_flat_buffer, on the optimizer's device). Measured on the CPU, where host and device are
        # one memory (tests/measured/test_step_peak_vs_deepspeed.py).
        cpu += (settings.optimizer.moments * trained.optimizer + 2 * trained.master + g) * trainable // n
        if stage is not ZeroStage.PARAMETERS:
            cpu += g * _largest_trainable_tensor(arch, settings)
    if offload_params:
        cpu += w * total // n
    return ModelStates(weights, optimizer, persistent_grads, backward_grads, step_grads, reduction, buffers,
                       *_gathered(arch, settings), cpu)


def held_head_gradient(arch: Architecture, settings: TrainingSettings) -> int:
    """The LM head's 16-bit weight gradient, made by the loss's backward and still held when the layers' backward
    begins: without ZeRO it is the head's .grad; with tied embeddings autograd keeps it in the shared weight's
    input buffer until the embedding's backward adds its part (the very end), so no ZeRO stage reduces it away
    before that (measured on the CPU: tied Qwen2 under ZeRO-2). Only full fine-tuning trains the head."""
    held = arch.tie_word_embeddings or settings.zero_stage is ZeroStage.DISABLED
    if settings.method is not Method.FULL or not held:
        return 0
    return trained_bytes(settings).parameter * arch.embedding_params


def offload_norm_copy(arch: Architecture, settings: TrainingSettings) -> int:
    """With offload the gradient norm is taken on the GPU, gradient by gradient as each is reduced in backward,
    each cast to fp64 first (stage_1_and_2.py, set_norm_for_param_grad_in_gpu: the rank's part of the gradient;
    stage3.py, _constant_buffered_norm2: its partition, 250M elements at a time): the largest such copy, alive
    beside the layers' backward, not the loss's (which comes before any reduction)."""
    if settings.offload is Offload.NONE:
        return 0
    largest = _largest_trainable_tensor(arch, settings)
    if settings.zero_stage is ZeroStage.PARAMETERS:
        largest = min(-(-largest // settings.num_gpus), NORM_CHUNK_ELEMENTS)
    return FP64 * largest


def _largest_trainable_tensor(arch: Architecture, settings: TrainingSettings) -> int:
    if not settings.method.trains_adapters:
        return arch.largest_param_numel
    return max(settings.lora.rank * max(d_in, d_out) for d_in, d_out in
               arch.lora_modules(settings.lora.target_modules).values())


def _reduce_bucket(settings: TrainingSettings) -> int:
    """The gradient reduce bucket (IPG buffer), double-buffered when overlap_comm is on, in the gradients' dtype
    (DeepSpeed's communication dtype follows its bf16/fp16 mode, fp32 without one). DeepSpeed sizes it from the
    config alone, however few parameters train (measured: LoRA under ZeRO-3)."""
    buckets = settings.buckets
    g = trained_bytes(settings).parameter
    return buckets.reduce_bucket_elements * g * (2 if buckets.overlaps(settings.zero_stage) else 1)


def _gathered(arch: Architecture, settings: TrainingSettings) -> tuple[int, int]:
    """ZeRO-3's whole parameters gathered at the start of the layers' backward, and while the loss's backward
    runs before it.

    Without prefetch one module is gathered at a time and released after use (stage3_max_reuse_distance 0): a leaf
    with parameters of its own (a linear, the embedding or head, an MoE block's fused experts); under gradient
    checkpointing the recomputed layer's parameters stay gathered until its backward is done
    (partitioned_param_coordinator.py, release_sub_module: ds_recompute_parameters), so a whole layer is; and
    nothing while the loss's backward runs (the head was released after forward). With prefetch every hooked
    module prefetches another bucket, so the look-ahead runs ahead of the layers until stage3_max_live_parameters
    are gathered, and what it passes that backward uses again stays gathered into backward (settings.Buckets
    .for_hidden_size): up to that many from the turn to backward, the loss's backward included, and the module in
    use, which the cap does not hold back (measured on the CPU: with 1e9 the whole tiny model but its frozen input
    embedding, from early in forward to the start of backward). That the look-ahead outruns the layers is certain with LoRA's five
    hooked modules a linear; without LoRA at real sizes it may not, and the cap is then a bound. On one GPU the
    partition is the whole parameter and nothing is gathered (partition_parameters.py, all_gather_coalesced:
    _no_gather_coalesced)."""
    if settings.zero_stage is not ZeroStage.PARAMETERS or settings.num_gpus == 1:
        return 0, 0
    buckets = settings.buckets
    leaf = max(arch.largest_param_numel, arch.mlp_params if arch.is_moe else 0)
    largest_module = max(arch.layer_params if settings.gradient_checkpointing else leaf, arch.embedding_params)
    if buckets.prefetch_bucket_elements == 0:
        return largest_module * settings.precision.bytes, 0
    cap, gatherable, head = buckets.max_live_parameters, _gatherable(arch, settings), arch.embedding_params
    layers = min(cap + largest_module, max(gatherable, largest_module))
    # A head at or above the cap stops the look-ahead until it is released: nothing else is kept beside it.
    loss = head if head >= cap else min(cap + head, gatherable)
    return layers * settings.precision.bytes, loss * settings.precision.bytes


def _gatherable(arch: Architecture, settings: TrainingSettings) -> int:
    """What the prefetch can keep gathered into backward: every parameter ZeRO-3 gathers (all but the small ones it
    keeps whole) that backward uses again, so all but a frozen, untied input embedding, unless checkpointing makes
    its output require a gradient (trainer/model_setup.py, enable_input_require_grads), which puts its module in
    backward's trace too."""
    base, adapters = _persistent(arch, settings.buckets.param_persistence_threshold, settings.method, settings.lora)
    frozen_input = settings.method.trains_adapters and not arch.tie_word_embeddings
    used_once = arch.embedding_params if frozen_input and not settings.gradient_checkpointing else 0
    return arch.total_params + (trainable_params(arch, settings) if settings.method.trains_adapters else 0) \
        - base - adapters - used_once


def _buffers(arch: Architecture, settings: TrainingSettings, trainable: int) -> int:
    """What DeepSpeed holds besides the model states. Stage 1-2's reduce bucket exists in backward only, but is
    counted in every phase: h^2 elements in kubetune's config, 32 MiB at h = 4096."""
    stage = settings.zero_stage
    w = settings.precision.bytes
    # ZeRO-3 keeps its reduce bucket between steps too (measured).
    buffers = 0 if stage is ZeroStage.DISABLED else _reduce_bucket(settings)
    if stage is not ZeroStage.PARAMETERS and settings.offload is Offload.OPTIMIZER:
        # Gradients are staged through a GPU buffer the size of the largest parameter tensor.
        buffers += arch.largest_param_numel * w if settings.method is Method.FULL else 0
    if settings.method is Method.QLORA:
        buffers += quantization.dequantization_bytes(arch, w)
    return buffers
