"""Per-GPU peak memory: fixed overhead + model states + the largest of the forward-end, backward-end and
optimizer-step phases, with a breakdown of every term."""

from functools import cache, lru_cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from kubetune.api.v1alpha1 import MemoryBreakdown
from kubetune.api.vocabulary import Phase
from kubetune.planner import activations
from kubetune.planner.architecture import Architecture
from kubetune.planner.model_states import model_states
from kubetune.planner.settings import TrainingSettings


class Coefficients(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    cuda_context_bytes: int
    nccl_bytes: int
    allocator_fragmentation: float
    fit_headroom_fraction: float
    loss_chunk_entries: int


@cache
def coefficients() -> Coefficients:
    text = resources.files("kubetune.planner").joinpath("coefficients.yaml").read_text()
    return Coefficients.model_validate(yaml.safe_load(text))


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


def estimate(arch: Architecture, settings: TrainingSettings) -> MemoryBreakdown:
    coeff = coefficients()
    states = model_states(arch, settings)
    acts = activation_bytes(arch, settings)
    logits = activations.logits_peak(arch, settings)
    overhead = coeff.cuda_context_bytes + (coeff.nccl_bytes if settings.num_gpus > 1 else 0)
    fixed = states.weights + states.optimizer_states + states.buffers

    grads = {
        Phase.BACKWARD_START: states.gradients_persistent,
        Phase.BACKWARD_END: states.gradients_persistent + states.gradients_backward,
        Phase.OPTIMIZER_STEP: states.gradients_persistent + states.gradients_backward + states.gradients_step,
    }
    dynamic = {
        Phase.BACKWARD_START: acts + logits,
        Phase.BACKWARD_END: 0,
        Phase.OPTIMIZER_STEP: 0,
    }
    margin = {phase: int(coeff.allocator_fragmentation * (dynamic[phase] + states.buffers)) for phase in PHASES}
    totals = {phase: fixed + grads[phase] + dynamic[phase] + margin[phase] + overhead for phase in PHASES}
    peak = max(totals, key=totals.__getitem__)
    at_peak = peak is Phase.BACKWARD_START
    return MemoryBreakdown(
        weights_bytes=states.weights,
        gradients_bytes=grads[peak],
        optimizer_states_bytes=states.optimizer_states,
        activations_bytes=acts if at_peak else 0,
        logits_bytes=logits if at_peak else 0,
        buffers_bytes=states.buffers,
        overhead_bytes=overhead,
        allocator_margin_bytes=margin[peak],
        total_bytes=totals[peak],
        peak_phase=peak,
        host_bytes_per_node=states.cpu_per_gpu * min(settings.num_gpus, settings.gpus_per_node),
    )
