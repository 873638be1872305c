"""The planner: enumerate configurations per GPU type, keep those that fit, rank them by an objective and
explain the choice. Anything the request pins is honoured; a pinned choice that cannot work says why."""

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from kubetune.api.v1alpha1 import MemoryBreakdown
from kubetune.api.vocabulary import Attention, Method, Objective, Offload, Precision, ZeroStage
from kubetune.catalog.gpus import GpuType
from kubetune.planner import activations, memory, throughput
from kubetune.planner.architecture import Architecture
from kubetune.planner.settings import PURE_BF16_OFFLOAD, Buckets, Lora, Optimizer, TrainingSettings
from kubetune.planner.throughput import Cost, StepTime

GIB = 1024**3
# Candidates whose objective value is within this share of the best are equally good; the study's
# preferences (below) then decide between them.
EQUIVALENT_WITHIN = 0.02
RUNNERS_UP = 5
# (stage, offload) pairs worth trying, in the order the study prefers them when they tie: ZeRO-2 is the
# best balance of memory and runtime; ZeRO-3 and offload only when needed. ZeRO-1 with offload is left
# out: ZeRO-2 with offload holds less and moves the same bytes. So is ZeRO-0 unless pinned: ZeRO-1 holds
# less at the same communication volume, and ZeRO-0 keeps its optimizer states where DeepSpeed's universal
# checkpoint conversion cannot read them, so a replan onto another stage could not resume its checkpoints.
ZERO_CHOICES = (
    (ZeroStage.GRADIENTS, Offload.NONE),
    (ZeroStage.OPTIMIZER, Offload.NONE),
    (ZeroStage.PARAMETERS, Offload.NONE),
    (ZeroStage.GRADIENTS, Offload.OPTIMIZER),
    (ZeroStage.PARAMETERS, Offload.OPTIMIZER),
    (ZeroStage.PARAMETERS, Offload.ALL),
)


class Request(BaseModel):
    """What the user asked for. `None` means the planner chooses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    seq_len: int = Field(gt=0)
    global_batch: int = Field(default=32, gt=0)  # sequences per optimizer step
    micro_batch: int | None = Field(default=None, gt=0)
    method: Method | None = None
    lora: Lora = Lora()
    zero_stage: ZeroStage | None = None
    # A replan whose run resumes from checkpoints DeepSpeed can load only at this stage or above.
    min_zero_stage: ZeroStage = ZeroStage.DISABLED
    offload: Offload | None = None
    # A replan after the kernel killed a run for host memory: no more offload than this.
    max_offload: Offload = Offload.ALL
    gradient_checkpointing: bool | None = None
    attention: Attention | None = None
    precision: Precision | None = None
    optimizer: Optimizer = Optimizer.ADAMW
    buckets: Buckets | None = None  # None: kubetune's defaults for the model (Buckets.for_hidden_size)
    num_gpus: int | None = Field(default=None, gt=0)
    num_nodes: int | None = Field(default=None, gt=0)
    objective: Objective = Objective.CHEAPEST
    # Measured over predicted memory from a run that ran out of memory, for what depends on the configuration
    # (all but the CUDA context and NCCL's buffers, which no setting shrinks): that part of every prediction is
    # scaled by it before the fit check, so a replan picks only configurations that would have fitted.
    memory_scale: float = Field(default=1.0, ge=1.0)


class GpuPool(BaseModel):
    """GPUs of one type the plan may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gpu: GpuType
    gpus_per_node: int = Field(default=8, gt=0)
    nodes: int = Field(default=1, gt=0)
    host_memory_bytes: int | None = None  # allocatable host memory per node, when known
    usd_per_hour: float | None = None  # overrides the catalog's price

    @property
    def price(self) -> float:
        return self.usd_per_hour if self.usd_per_hour is not None else self.gpu.usd_per_hour


@dataclass(frozen=True, slots=True)
class Candidate:
    gpu: str
    settings: TrainingSettings
    memory: MemoryBreakdown
    time: StepTime | None  # None when it does not fit
    fits: bool
    reasons: list[str]
    usd_per_million_tokens: float

    @property
    def step(self) -> StepTime:
        """The step time of a candidate that fits: only those are ranked, chosen or runners-up."""
        if self.time is None:
            raise ValueError(f"a {self.gpu} candidate that does not fit has no step time")
        return self.time


@dataclass(frozen=True)
class SearchResult:
    model: str
    objective: Objective
    chosen: Candidate | None
    runners_up: list[tuple[Candidate, str]]
    explanation: list[str]
    candidates_evaluated: int
    smallest_need: Candidate | None  # when nothing fits: the configuration that needs the least memory


def _gpu_counts(pool: GpuPool, request: Request) -> list[int]:
    if request.num_gpus is not None:
        return [request.num_gpus]
    per_node = pool.gpus_per_node
    max_nodes = pool.nodes
    if request.num_nodes is not None:  # whole nodes' GPUs
        return [request.num_nodes * per_node]
    counts = [n for n in (1, 2, 4, 8, 16) if n <= per_node] + ([per_node] if per_node not in (1, 2, 4, 8, 16) else [])
    nodes = 2
    while nodes <= max_nodes:
        counts.append(nodes * per_node)
        nodes *= 2
    # Each GPU needs at least one sequence of the global batch.
    return sorted({n for n in counts if n <= request.global_batch})


def _per_node(gpus: int, pool: GpuPool, request: Request) -> int:
    if request.num_nodes is not None and request.num_gpus is not None:
        return request.num_gpus // request.num_nodes
    return min(gpus, pool.gpus_per_node)


def _pinned_problems(pool: GpuPool, request: Request) -> list[str]:
    gpu = pool.gpu
    capability = (gpu.compute_major, gpu.compute_minor)
    problems = []
    if request.attention is not None and capability < request.attention.min_compute_capability:
        problems.append(f"attention '{request.attention}' needs compute capability 8.0 or newer; "
                        f"{gpu.id} has {gpu.compute_capability}")
    if request.precision is not None and request.precision.is_bf16 and gpu.bf16_tflops is None:
        problems.append(f"{gpu.id} has no bf16 support (compute capability {gpu.compute_capability}); use fp16")
    if request.precision is Precision.PURE_BF16 and request.offload not in (None, Offload.NONE):
        problems.append(PURE_BF16_OFFLOAD)
    if (request.lora.adapters_fp32 and request.precision is None and gpu.bf16_tflops is None
            and request.method is not Method.FULL):
        problems.append(f"fp32 LoRA adapters need bf16 (fp16 needs DeepSpeed's loss scaling, which casts the adapters "
                        f"to fp16), and {gpu.id} has none (compute capability {gpu.compute_capability})")
    if request.num_gpus is not None and request.num_gpus > pool.gpus_per_node * pool.nodes:
        problems.append(f"{request.num_gpus} GPUs asked, {pool.gpus_per_node * pool.nodes} {gpu.id} available")
    if request.num_nodes is not None and request.num_gpus is not None:
        if request.num_gpus % request.num_nodes:
            problems.append(f"{request.num_gpus} GPUs do not split evenly over {request.num_nodes} nodes")
        elif request.num_gpus // request.num_nodes > pool.gpus_per_node:
            problems.append(f"{request.num_gpus // request.num_nodes} GPUs per node asked, {gpu.id} nodes have "
                            f"{pool.gpus_per_node}")
    if request.num_nodes is not None and request.num_nodes > pool.nodes:
        problems.append(f"{request.num_nodes} nodes asked, {pool.nodes} of {gpu.id} available")
    if (request.num_gpus is not None and request.num_nodes is None and request.num_gpus > pool.gpus_per_node
            and request.num_gpus % pool.gpus_per_node):
        problems.append(f"{request.num_gpus} GPUs do not fill whole nodes of {pool.gpus_per_node} {gpu.id}")
    return problems


def _choices(pool: GpuPool, request: Request) -> tuple[list[Any], ...]:
    gpu = pool.gpu
    modern = (gpu.compute_major, gpu.compute_minor) >= (8, 0)
    precision = request.precision or (Precision.BF16 if gpu.bf16_tflops else Precision.FP16)
    attention = request.attention or (Attention.FLASH_ATTENTION_2 if modern else Attention.SDPA)
    # Unpinned, LoRA and full fine-tuning only: QLoRA's adapters learn on a 4-bit copy of the model, which changes
    # the result, so it runs only when the spec asks for it.
    methods = [request.method] if request.method else [Method.LORA, Method.FULL]
    checkpointing = ([request.gradient_checkpointing] if request.gradient_checkpointing is not None
                     else [False, True])
    order = list(Offload)  # none < optimizer < all

    def within_bound(offload: Offload) -> bool:
        return order.index(offload) <= order.index(request.max_offload)

    # QLoRA's 4-bit base cannot be partitioned (settings.QLORA_ZERO3): a pinned ZeRO-3 is refused as it is built.
    zero = [(s, o) for s, o in ZERO_CHOICES
            if (request.zero_stage is None or s == request.zero_stage) and s >= request.min_zero_stage
            and (request.offload is None or o == request.offload) and within_bound(o)
            and not (request.method is Method.QLORA and s is ZeroStage.PARAMETERS)
            and not (precision is Precision.PURE_BF16 and o is not Offload.NONE)]  # settings.PURE_BF16_OFFLOAD
    fallback = request.offload or Offload.NONE
    if request.zero_stage is not None and not zero and within_bound(fallback):
        zero = [(request.zero_stage, fallback)]
    return [precision], [attention], methods, checkpointing, zero


class _Shape(NamedTuple):
    """What varies between the configurations of one plan, all but the micro-batch."""

    precision: Precision
    attention: Attention
    method: Method
    gradient_checkpointing: bool
    zero_stage: ZeroStage
    offload: Offload
    num_gpus: int
    gpus_per_node: int


class _Configuration:
    """A configuration with what it needs whatever the GPU type: its memory and (made when it first fits some
    type) its step's work."""

    def __init__(self, arch: Architecture, settings: TrainingSettings) -> None:
        self._arch = arch
        self.settings = settings
        self.memory = memory.estimate(arch, settings)

    @cached_property
    def work(self) -> throughput.StepWork:
        return throughput.step_work(self._arch, self.settings)


class _Configurations:
    """One plan's configurations, each made once however many GPU types try it: most are tried on every type
    in the cluster, and only whether one fits and how fast it runs depend on the type."""

    def __init__(self, arch: Architecture, request: Request) -> None:
        self._arch = arch
        self._request = request
        self._buckets = request.buckets or Buckets.for_hidden_size(arch.hidden_size)
        self._loss_chunk = memory.loss_chunk_tokens(arch)
        # Keyed on the shape, micro-batch and loss rather than on the settings: the request fixes the rest for the
        # whole plan, and hashing the settings would hash their pydantic LoRA and bucket fields every time.
        self._made: dict[tuple[_Shape, int, bool], _Configuration] = {}

    def get(self, shape: _Shape, micro_batch: int, chunked_loss: bool = False) -> _Configuration:
        made = self._made.get((shape, micro_batch, chunked_loss))
        if made is None:
            request = self._request
            settings = TrainingSettings(
                seq_len=request.seq_len, micro_batch=micro_batch,
                gradient_accumulation=request.global_batch // (micro_batch * shape.num_gpus),
                precision=shape.precision, optimizer=request.optimizer, method=shape.method, lora=request.lora,
                gradient_checkpointing=shape.gradient_checkpointing, attention=shape.attention,
                zero_stage=shape.zero_stage, offload=shape.offload, buckets=self._buckets,
                num_gpus=shape.num_gpus, gpus_per_node=shape.gpus_per_node,
                loss_chunk_tokens=self._loss_chunk if chunked_loss else None)
            made = self._made[(shape, micro_batch, chunked_loss)] = _Configuration(self._arch, settings)
        return made


def _evaluate(pool: GpuPool, configuration: _Configuration, memory_scale: float = 1.0) -> Candidate:
    settings, estimate = configuration.settings, configuration.memory
    capacity = pool.gpu.memory_bytes
    usable = int(capacity * (1 - memory.coefficients().fit_headroom_fraction))
    reasons = []
    needed = estimate.overhead_bytes + (estimate.total_bytes - estimate.overhead_bytes) * memory_scale
    if needed > usable:
        scaled = f" (all but the CUDA context x{memory_scale:.2f}, as measured)" if memory_scale > 1 else ""
        reasons.append(f"needs {needed / GIB:.1f} GiB per GPU{scaled}, more than "
                       f"{usable / GIB:.1f} GiB usable of {capacity / GIB:.1f} GiB on {pool.gpu.id}")
    if pool.host_memory_bytes is not None and estimate.host_bytes_per_node > pool.host_memory_bytes:
        reasons.append(f"offload needs {estimate.host_bytes_per_node / GIB:.0f} GiB of host memory per node, "
                       f"{pool.host_memory_bytes / GIB:.0f} GiB allocatable")
    if reasons:
        # Throughput is only worth computing for configurations that can run.
        return Candidate(gpu=pool.gpu.id, settings=settings, memory=estimate, time=None, fits=False,
                         reasons=reasons, usd_per_million_tokens=float("inf"))
    time = throughput.time_on(configuration.work, settings, pool.gpu)
    cost = settings.num_gpus * pool.price / 3600 / time.tokens_per_second * 1e6
    return Candidate(gpu=pool.gpu.id, settings=settings, memory=estimate, time=time, fits=True,
                     reasons=["fits"], usd_per_million_tokens=cost)


def _metric(candidate: Candidate, objective: Objective) -> float:
    """Lower is better."""
    match objective:
        case Objective.CHEAPEST:
            return candidate.usd_per_million_tokens
        case Objective.FASTEST:
            return -candidate.step.tokens_per_second
        case Objective.FEWEST_GPUS:
            return candidate.settings.num_gpus + candidate.usd_per_million_tokens * 1e-6


def _preference(candidate: Candidate) -> tuple[Any, ...]:
    s = candidate.settings
    # A pinned pair outside the preference list (ZeRO-1 with offload, say) is all there is to rank it against.
    zero = (s.zero_stage, s.offload)
    # Micro-batches last, on the modelled step time: a larger one saves per-micro-step overhead, but the
    # trainer pads every sequence to seqLen, so it never saves padding.
    return (ZERO_CHOICES.index(zero) if zero in ZERO_CHOICES else len(ZERO_CHOICES), s.gradient_checkpointing,
            s.method is Method.FULL,
            s.num_gpus, candidate.step.step_seconds)


def _rank(candidates: list[Candidate], objective: Objective) -> list[Candidate]:
    by_metric = sorted(candidates, key=lambda c: _metric(c, objective))
    best = _metric(by_metric[0], objective)
    tolerance = abs(best) * EQUIVALENT_WITHIN if objective is not Objective.FEWEST_GPUS else 0.5
    equivalent: list[Candidate] = []
    rest: list[Candidate] = []
    for c in by_metric:
        # Split by the test itself: a membership test (`c not in equivalent`) compares whole dataclasses,
        # quadratic in the candidates.
        (equivalent if _metric(c, objective) - best <= tolerance else rest).append(c)
    return sorted(equivalent, key=_preference) + rest


def plan(arch: Architecture, request: Request, pools: list[GpuPool]) -> SearchResult:
    candidates: list[Candidate] = []
    rejected: list[Candidate] = []
    pinned_problems: list[str] = []
    configurations = _Configurations(arch, request)
    for pool in pools:
        problems = _pinned_problems(pool, request)
        if problems:
            pinned_problems += problems
            continue
        precisions, attentions, methods, checkpointing, zero = _choices(pool, request)
        # Largest GPU count first: per-GPU memory only shrinks as GPUs are added (the one-GPU case aside,
        # which has no NCCL), so a configuration that fails on N GPUs is not tried on fewer.
        counts = sorted(_gpu_counts(pool, request), reverse=True)
        for precision, attention, method in product(precisions, attentions, methods):
            # Checkpointing and offload only trade speed for memory, so unless pinned they are tried only
            # where the configuration does not fit without them. Offload, by GPU count with or without
            # checkpointing: a checkpointed shape skipped because it fits without checkpointing fits without
            # offload too (else checkpointing and offload together could win by running fewer micro-steps).
            fits_without_checkpointing: set[tuple[Any, ...]] = set()
            fits_without_offload: set[int] = set()
            for ckpt, (stage, offload) in product(checkpointing, zero):
                failed_on_more_gpus = False
                for n in counts:
                    if failed_on_more_gpus and n > 1:
                        continue  # fewer GPUs need more memory; one GPU has no NCCL, so it is still tried
                    if n == 1 and stage in (ZeroStage.OPTIMIZER, ZeroStage.PARAMETERS) and offload is Offload.NONE \
                            and request.zero_stage is None:
                        continue  # nothing to partition on one GPU, unless the stage is pinned: DeepSpeed runs it
                    if ckpt and request.gradient_checkpointing is None and (stage, offload, n) in fits_without_checkpointing:
                        continue
                    if offload is not Offload.NONE and request.offload is None and n in fits_without_offload:
                        continue
                    shape = _Shape(precision, attention, method, ckpt, stage, offload, n, _per_node(n, pool, request))
                    if not _micro_batches(pool, request, shape, configurations, candidates, rejected):
                        failed_on_more_gpus = True
                        continue
                    if not ckpt:
                        fits_without_checkpointing.add((stage, offload, n))
                    if offload is Offload.NONE:
                        fits_without_offload.add(n)
    evaluated = len(candidates) + len(rejected)
    if not candidates:
        smallest = min(rejected, key=lambda c: c.memory.total_bytes) if rejected else None
        explanation = _nothing_fits(pinned_problems, smallest, request)
        if request.method is None and smallest is not None:
            explanation += _qlora_would_fit(arch, request, pools)
        return SearchResult(model=arch.name, objective=request.objective, chosen=None, runners_up=[],
                    explanation=explanation, candidates_evaluated=evaluated, smallest_need=smallest)
    ranked = _rank(candidates, request.objective)
    chosen = ranked[0]
    runners_up = [(c, _why_lost(c, chosen, request.objective)) for c in _distinct(ranked[1:])[:RUNNERS_UP]]
    return SearchResult(model=arch.name, objective=request.objective, chosen=chosen, runners_up=runners_up,
                explanation=_explain(arch, chosen, request, pinned_problems), candidates_evaluated=evaluated,
                smallest_need=None)


def _qlora_would_fit(arch: Architecture, request: Request, pools: list[GpuPool]) -> list[str]:
    """What an unpinned method that fits nothing learns: whether QLoRA, which the planner never picks, would fit."""
    chosen = plan(arch, request.model_copy(update={"method": Method.QLORA}), pools).chosen
    if chosen is None:
        return []
    return [f"QLoRA would fit: {chosen.memory.total_bytes / GIB:.1f} GiB per GPU with {describe(chosen.settings)} on "
            f"{chosen.gpu}. The planner does not choose it by itself, as its adapters learn on a 4-bit copy of the "
            "model: ask for method QLoRA to run it."]


def _micro_batches(pool: GpuPool, request: Request, shape: _Shape, configurations: _Configurations,
                   candidates: list[Candidate], rejected: list[Candidate]) -> bool:
    """Evaluate growing micro-batches until one does not fit; True when at least one fits.

    Each with Hugging Face's loss, and where its logits do not fit, with the chunked cross-entropy: that costs one
    more forward of the LM head (a few per cent of the step), far less than checkpointing, a higher ZeRO stage,
    offload or a smaller micro-batch, which are what the search would otherwise take to fit."""
    n = shape.num_gpus
    micro_batches = [request.micro_batch] if request.micro_batch else [
        b for b in (1, 2, 4, 8, 16, 32, 64) if b * n <= request.global_batch]
    fitted = False
    chunked = False  # once the stock loss does not fit, a larger micro-batch needs the chunked one too
    for micro_batch in micro_batches:
        if request.global_batch % (micro_batch * n):
            continue
        candidate = _evaluate(pool, configurations.get(shape, micro_batch, chunked), request.memory_scale)
        if not candidate.fits and not chunked:
            chunked = True
            candidate = _evaluate(pool, configurations.get(shape, micro_batch, chunked), request.memory_scale)
        if not candidate.fits:
            rejected.append(candidate)
            break  # a larger micro-batch only needs more memory
        candidates.append(candidate)
        fitted = True
    return fitted


def _distinct(candidates: list[Candidate]) -> list[Candidate]:
    """One runner-up per (GPU, method, stage, offload, checkpointing): micro-batch variants add nothing."""
    seen, kept = set(), []
    for c in candidates:
        s = c.settings
        key = (c.gpu, s.method, s.zero_stage, s.offload, s.gradient_checkpointing)
        if key not in seen:
            seen.add(key)
            kept.append(c)
    return kept


def describe(settings: TrainingSettings) -> str:
    s = settings
    fp32 = " (fp32 adapters)" if s.lora.adapters_fp32 else ""
    method = f"{s.method} r={s.lora.rank}{fp32}" if s.method.trains_adapters else "full fine-tuning"
    offload = "" if s.offload is Offload.NONE else f" + {s.offload} offload"
    ckpt = "gradient checkpointing" if s.gradient_checkpointing else "no checkpointing"
    loss = "" if s.loss_chunk_tokens is None else f", chunked cross-entropy ({s.loss_chunk_tokens} tokens a chunk)"
    return (f"{method}, ZeRO-{int(s.zero_stage)}{offload}, {ckpt}{loss}, {s.attention}, {s.precision}, "
            f"micro-batch {s.micro_batch} x {s.gradient_accumulation} accumulation on {s.num_gpus} GPU(s)")


def _why_lost(candidate: Candidate, chosen: Candidate, objective: Objective) -> str:
    tps = candidate.step.tokens_per_second / chosen.step.tokens_per_second - 1
    cost = candidate.usd_per_million_tokens / chosen.usd_per_million_tokens - 1
    if objective is Objective.FASTEST and tps < -EQUIVALENT_WITHIN:
        return f"{-tps:.0%} fewer tokens/s"
    if objective is Objective.CHEAPEST and cost > EQUIVALENT_WITHIN:
        return f"{cost:.0%} more per token"
    if objective is Objective.FEWEST_GPUS and candidate.settings.num_gpus > chosen.settings.num_gpus:
        return f"{candidate.settings.num_gpus} GPUs instead of {chosen.settings.num_gpus}"
    return "as good on the objective; the study's default (ZeRO-2, LoRA, no checkpointing) is preferred on ties"


def _explain(arch: Architecture, chosen: Candidate, request: Request, pinned_problems: list[str]) -> list[str]:
    s, m = chosen.settings, chosen.memory
    lines = [
        f"Chose {chosen.gpu} x {s.num_gpus}: {describe(s)}.",
        f"Peak {m.total_bytes / GIB:.1f} GiB per GPU at {m.peak_phase}; {chosen.step.tokens_per_second:,.0f} tokens/s; "
        f"${chosen.usd_per_million_tokens:.2f} per million tokens (objective: {request.objective}).",
    ]
    if s.method is Method.LORA and s.zero_stage is ZeroStage.GRADIENTS and not s.gradient_checkpointing:
        lines.append("ZeRO-2 with LoRA is the best balance of memory and runtime (Singh et al., 2024).")
    if s.zero_stage is ZeroStage.PARAMETERS:
        lines.append("ZeRO-3 partitions the weights themselves: the model does not fit otherwise.")
    if s.gradient_checkpointing and request.gradient_checkpointing is None:
        lines.append("Gradient checkpointing is on: activations do not fit otherwise (costs one extra forward).")
    if s.loss_chunk_tokens is not None:
        stock = activations.logits_peak(arch, dataclasses.replace(s, loss_chunk_tokens=None))
        lines.append(f"Cross-entropy in chunks of {s.loss_chunk_tokens} tokens: Hugging Face's loss would hold "
                     f"{stock / GIB:.1f} GiB of fp32 logits and their gradients per GPU, this one "
                     f"{activations.logits_peak(arch, s) / GIB:.2f} GiB, for one more forward of the LM head.")
    if s.precision is Precision.PURE_BF16:
        lines.append("Pure bf16: weights, gradients and AdamW states in bf16 with no fp32 master, so an update smaller "
                     "than 1/512-1/256 of a weight is lost; watch the loss against a mixed-precision run.")
    if s.method is Method.QLORA:
        lines.append("QLoRA: the step time leaves out dequantising the 4-bit weights (once in forward, again in "
                     "backward and in the recomputation), so expect slower steps than predicted.")
    if s.attention is Attention.SDPA and request.attention is None:
        lines.append(f"{chosen.gpu} has compute capability below 8.0: FlashAttention-2 is unavailable, using SDPA.")
    lines.append(_time_split(chosen.step))
    if arch.is_moe:
        lines.append(f"{arch.name} is a mixture of experts ({arch.num_experts} experts, {arch.experts_per_token} per "
                     "token), which the time model cannot time well: transformers runs the experts one after "
                     "another in Python, each on its share of the tokens, and no measured MoE run has checked the "
                     "prediction; step time and tokens/s may be several times off.")
    lines += [f"Not considered: {p}." for p in pinned_problems]
    return lines


def _time_split(step: StepTime) -> str:
    shares = step.shares
    split = ", ".join(f"{cost} {share:.0%}" for cost, share in shares.items() if share >= 0.005)
    dominant = step.dominant
    why = {Cost.COMPUTE: "the GPU's kernels", Cost.OVERHEAD: "the GPU waits on the host (Python op dispatch, "
           "DeepSpeed's hooks): larger micro-steps would amortise it", Cost.ZERO: "exposed ZeRO communication",
           Cost.OFFLOAD: "PCIe traffic and the CPU's optimizer step"}[dominant]
    return f"Step time {step.step_seconds:.2f} s: {split}; dominated by {dominant} ({why})."


def _nothing_fits(pinned_problems: list[str], smallest: Candidate | None, request: Request) -> list[str]:
    lines = [f"Cannot plan: {p}." for p in pinned_problems]
    if smallest is not None:
        lines.append(f"Nothing fits. The smallest need is {smallest.memory.total_bytes / GIB:.1f} GiB per GPU, with "
                     f"{describe(smallest.settings)} on {smallest.gpu}: {smallest.reasons[0]}.")
    elif not lines:
        # Nothing was even tried: no GPU count splits the global batch into whole micro-batches.
        micro = f"the pinned micro-batch {request.micro_batch}" if request.micro_batch else "any micro-batch"
        lines.append(f"Cannot plan: the global batch of {request.global_batch} sequences does not split into "
                     f"{micro} x a number of GPUs the cluster offers; make the global batch a multiple of "
                     "micro-batch x GPUs.")
    return lines
