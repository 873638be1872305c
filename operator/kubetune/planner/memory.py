"""Per-GPU peak memory: fixed overhead + model states + the largest of the forward-end, backward-end and
optimizer-step phases, with a breakdown of every term."""

from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from kubetune.api import contract
from kubetune.api.v1alpha1 import MemoryBreakdown
from kubetune.api.vocabulary import Attention, Phase, ZeroStage
from kubetune.planner import activations
from kubetune.planner.architecture import Architecture
from kubetune.planner.model_states import ModelStates, held_head_gradient, model_states, offload_norm_copy
from kubetune.planner.settings import TrainingSettings


class Coefficients(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cuda_context_bytes: int
    nccl_bytes: int
    cublas_workspace_bytes: int
    flash_backward_bytes_per_query_element: int
    flash_backward_gqa_bytes_per_query_element: int
    flash_backward_bytes_per_head: int
    allocator_conf: str
    allocator_large_page_bytes: int
    allocator_small_page_bytes: int
    allocator_streams: int
    fit_headroom_fraction: float
    loss_chunk_entries: int


@cache
def coefficients() -> Coefficients:
    text = resources.files("kubetune.planner").joinpath("coefficients.yaml").read_text()
    coeff = Coefficients.model_validate(yaml.safe_load(text))
    if coeff.allocator_conf != contract.ALLOCATOR_CONF:
        raise ValueError(f"the allocator margin was derived for {coeff.allocator_conf!r}, but the training pods run "
                         f"{contract.ALLOCATOR_CONF!r}: derive it again (coefficients.yaml)")
    return coeff


def loss_chunk_tokens(arch: Architecture) -> int:
    """Tokens per chunk of the chunked cross-entropy: the largest power of two whose logits stay within
    `loss_chunk_entries` (at least one token)."""
    fitting = max(1, coefficients().loss_chunk_entries // arch.vocab_size)
    return 1 << (fitting.bit_length() - 1)


def activation_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """Saved activations at the start of backward (logits excluded).

    Every term is affine in the micro-batch (per-token tensors, plus per-position rotary tables), so the
    inventory is built once per shape of the run and extrapolated: the planner asks for many micro-batches.
    """
    key = (settings.seq_len, settings.method, settings.lora, settings.attention, settings.precision,
           settings.gradient_checkpointing)
    one, two = _activation_line(arch, key)
    return one + (settings.micro_batch - 1) * (two - one)


def recomputed_layer_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """Under gradient checkpointing, the one layer backward recomputes, counted in `activation_bytes`: its full
    set of saved activations (0 without checkpointing)."""
    return layer_bytes(arch, settings) if settings.gradient_checkpointing else 0


def layer_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """One layer's full set of saved activations, as without checkpointing."""
    key = (settings.seq_len, settings.method, settings.lora, settings.attention, settings.precision, False)
    one, two = _layer_line(arch, key)
    return one + (settings.micro_batch - 1) * (two - one)


@lru_cache(maxsize=2048)
def _layer_line(arch: Architecture, key: tuple[Any, ...]) -> tuple[int, int]:
    seq_len, method, lora, attention, precision, checkpointing = key
    return tuple(activations.layer(arch, TrainingSettings(  # type: ignore[return-value]
        seq_len=seq_len, micro_batch=micro_batch, method=method, lora=lora, attention=attention, precision=precision,
        gradient_checkpointing=checkpointing)).total for micro_batch in (1, 2))


@lru_cache(maxsize=2048)
def _activation_line(arch: Architecture, key: tuple[Any, ...]) -> tuple[int, int]:
    """The saved activations at micro-batches 1 and 2: one cache look-up per estimate, not two."""
    return _activation_bytes(arch, key, 1), _activation_bytes(arch, key, 2)


def _activation_bytes(arch: Architecture, key: tuple[Any, ...], micro_batch: int) -> int:
    seq_len, method, lora, attention, precision, checkpointing = key
    settings = TrainingSettings(seq_len=seq_len, micro_batch=micro_batch, method=method, lora=lora,
                                attention=attention, precision=precision, gradient_checkpointing=checkpointing)
    per_layer = activations.layer(arch, settings).total
    outside = activations.outside_layers(arch, settings).total
    if settings.gradient_checkpointing:
        # Every layer keeps its input; backward recomputes one layer at a time, which then holds its full set.
        return arch.num_layers * activations.checkpointed_layer(arch, settings) + per_layer + outside
    first = activations.first_layer(arch, settings).total
    return first + (arch.num_layers - 1) * per_layer + outside


# In the enum's order, which breaks ties for the peak; a tuple because iterating the enum itself is slower
# and an estimate is made for every configuration the planner tries.
PHASES = tuple(Phase)


@dataclass(frozen=True)
class _Phases:
    """What each phase holds, as estimate() adds it up."""

    fixed: int  # weights, optimizer states, buffers
    grads: dict[Phase, int]
    dynamic: dict[Phase, int]
    at_start: dict[str, int]  # what the start of backward holds besides the model states, by breakdown field
    margin: dict[Phase, int]

    @property
    def allocated(self) -> dict[Phase, int]:
        return {phase: self.fixed + self.grads[phase] + self.dynamic[phase] for phase in PHASES}


def _phases(arch: Architecture, settings: TrainingSettings, states: ModelStates) -> _Phases:
    acts = activation_bytes(arch, settings)
    logits = activations.logits_peak(arch, settings)
    grads = {
        Phase.BACKWARD_START: states.gradients_persistent,
        Phase.BACKWARD_END: states.gradients_persistent + states.gradients_backward + states.gradients_reduction,
        Phase.OPTIMIZER_STEP: states.gradients_persistent + states.gradients_backward + states.gradients_step,
    }
    # The loss's backward runs first, before any layer is recomputed, any ZeRO-3 module gathered again (but what
    # the prefetch gathered for the head's backward) or, under ZeRO-1/2, the gradient partition allocated at the
    # first bucket's reduction; by then the loss's buffers are freed while the other layers' activations are still
    # held (measured on the CPU, tests/measured/test_step_peak_vs_deepspeed.py). So the start of backward holds the
    # loss, or the recomputed layer's backward with its gathered parameters, the gradient partition and the head's
    # gradient where it is still held, whichever is larger.
    recomputed = recomputed_layer_bytes(arch, settings)
    partition = states.gradients_backward if settings.zero_stage in (ZeroStage.OPTIMIZER, ZeroStage.GRADIENTS) else 0
    gradients = partition + held_head_gradient(arch, settings)
    transient = activations.adapter_input_gradient(arch, settings) + offload_norm_copy(arch, settings)
    loss_first = logits + states.gathered_at_loss >= recomputed + transient + states.gathered + gradients
    at_start = {"activations": acts - recomputed if loss_first else acts + transient,
                "logits": logits if loss_first else 0,
                "gathered": states.gathered_at_loss if loss_first else states.gathered,
                "gradients": 0 if loss_first else gradients}
    dynamic = {Phase.BACKWARD_START: sum(at_start.values()), Phase.BACKWARD_END: 0, Phase.OPTIMIZER_STEP: 0}
    # While activations are held, one layer's worth of holes (coefficients.yaml, allocator_*); the segments'
    # last pages are a fixed overhead.
    margin = {phase: 0 for phase in PHASES}
    margin[Phase.BACKWARD_START] = layer_bytes(arch, settings)
    return _Phases(states.weights + states.optimizer_states + states.buffers, grads, dynamic, at_start, margin)


def allocated_peak_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """The peak of what torch's allocator hands out in a step that the CPU measures too: every phase without what
    only a GPU holds (the CUDA context, NCCL, kernel workspaces: `gpu_only_bytes`) and the caching allocator's
    margin. torch.cuda.max_memory_allocated also counts the workspaces."""
    return max(_phases(arch, settings, model_states(arch, settings)).allocated.values())


def kernel_workspace_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """Kernels' workspaces, allocated through the caching allocator on a GPU and invisible on the CPU
    (coefficients.yaml): cuBLAS's, and FlashAttention-2's backward buffers for one layer (SDPA runs the same
    kernel on GPUs that have it; eager attention runs GEMMs)."""
    c = coefficients()
    workspace = c.cublas_workspace_bytes
    if settings.attention is not Attention.EAGER:
        query = arch.num_heads * arch.head_dim
        per_token = c.flash_backward_bytes_per_query_element * query + c.flash_backward_bytes_per_head * arch.num_heads
        if arch.num_kv_heads != arch.num_heads:
            per_token += c.flash_backward_gqa_bytes_per_query_element * query
        workspace += per_token * settings.tokens_per_micro_batch
    return workspace


def gpu_only_bytes(arch: Architecture, settings: TrainingSettings) -> int:
    """What no configuration's tensors hold and the CPU cannot show: the CUDA context, NCCL's buffers when more
    than one GPU trains, the unfilled last page of each allocating stream's segments, kernels' workspaces."""
    c = coefficients()
    pages = c.allocator_streams * (c.allocator_large_page_bytes + c.allocator_small_page_bytes)
    nccl = c.nccl_bytes if settings.num_gpus > 1 else 0
    return c.cuda_context_bytes + nccl + pages + kernel_workspace_bytes(arch, settings)


def estimate(arch: Architecture, settings: TrainingSettings) -> MemoryBreakdown:
    states = model_states(arch, settings)
    overhead = gpu_only_bytes(arch, settings)
    phases = _phases(arch, settings, states)
    grads, at_start, margin = phases.grads, phases.at_start, phases.margin
    totals = {phase: allocated + margin[phase] + overhead for phase, allocated in phases.allocated.items()}
    peak = max(totals, key=totals.__getitem__)
    at_peak = peak is Phase.BACKWARD_START
    return MemoryBreakdown(
        weights_bytes=states.weights,
        gradients_bytes=grads[peak] + (at_start["gradients"] if at_peak else 0),
        optimizer_states_bytes=states.optimizer_states,
        activations_bytes=at_start["activations"] if at_peak else 0,
        logits_bytes=at_start["logits"] if at_peak else 0,
        buffers_bytes=states.buffers + (at_start["gathered"] if at_peak else 0),
        overhead_bytes=overhead,
        allocator_margin_bytes=margin[peak],
        total_bytes=totals[peak],
        peak_phase=peak,
        host_bytes_per_node=states.cpu_per_gpu * min(settings.num_gpus, settings.gpus_per_node),
    )
