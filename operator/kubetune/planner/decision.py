"""A FineTuneJob's spec and the cluster's GPU nodes -> the planner's request -> the plan in status."""

import dataclasses
from dataclasses import dataclass
from typing import Literal, TypeVar

from kubetune.api import v1alpha1 as api
from kubetune.api.conditions import Reason
from kubetune.api.vocabulary import AdapterPrecision, Attention, Method, Offload, Precision, ZeroStage
from kubetune.catalog.cluster_gpus import GpuNodeGroup, allowed
from kubetune.planner import architecture, search
from kubetune.planner.settings import ALL_LINEAR, Buckets, Lora, TrainingSettings

GIB = 1024**3


@dataclass(frozen=True)
class Decision:
    plan: api.Plan | None
    group: GpuNodeGroup | None  # where the pods go
    candidate: search.Candidate | None
    message: str  # why, in one paragraph
    # Why there is no plan: the model is unknown, its config is unusable, or nothing fits the cluster.
    reason: Literal[Reason.MODEL_UNKNOWN, Reason.INVALID_MODEL_CONFIG, Reason.INVALID_SPEC,
                    Reason.UNSCHEDULABLE] | None = None


Hinted = TypeVar("Hinted", Method, Attention)


def _hint(value: api.MethodType | api.AttentionType, kind: type[Hinted]) -> Hinted | None:
    """A spec hint in the vocabulary's terms (the same names): Auto is the planner's to choose."""
    return None if value in (api.MethodType.AUTO, api.AttentionType.AUTO) else kind(value)


def request_for(spec: api.FineTuneJobSpec) -> search.Request:
    m = spec.method
    lora = Lora(rank=m.lora_rank or api.DEFAULT_LORA_RANK, target_modules=tuple(m.lora_targets or ALL_LINEAR),
                dropout=(m.lora_dropout_percent or 0) / 100,
                adapters_fp32=m.lora_adapter_precision is AdapterPrecision.FP32)
    toggles = {api.Toggle.ENABLED: True, api.Toggle.DISABLED: False, api.Toggle.AUTO: None}
    return search.Request(
        seq_len=spec.training.seq_len, global_batch=spec.training.global_batch, micro_batch=m.micro_batch,
        method=_hint(m.type, Method), lora=lora, zero_stage=ZeroStage(m.zero_stage) if m.zero_stage is not None else None,
        offload=m.offload, gradient_checkpointing=toggles[m.gradient_checkpointing],
        attention=_hint(m.attention, Attention), objective=spec.resources.objective,
        precision=None if m.precision is api.PrecisionType.AUTO else Precision(m.precision),
        num_gpus=spec.resources.gpus, num_nodes=spec.resources.nodes,
    )


def gpus_per_pod(resources: api.Resources) -> int | None:
    """GPUs per training pod when the spec pins both counts; None when the planner fills whole nodes."""
    if resources.gpus is None or resources.nodes is None:
        return None
    return resources.gpus // resources.nodes


def _slots(group: GpuNodeGroup, resources: api.Resources, whole: bool) -> int:
    """How many of the plan's nodes the group holds: whole nodes, or pods of a pinned size; of its free GPUs
    now, or (`whole`) of all of them, busy or not, with the nodes an autoscaler may add."""
    per_pod = gpus_per_pod(resources)
    if per_pod is None:
        return group.nodes + group.autoscaled_nodes if whole else group.free_nodes
    return group.pod_slots(per_pod, whole)


def _pool(group: GpuNodeGroup, resources: api.Resources, usd_per_hour: float | None, whole: bool) -> search.GpuPool:
    per_pod = gpus_per_pod(resources)
    if per_pod is not None:
        # Pods that share a machine share its host memory too.
        host = (group.host_memory_bytes * per_pod // group.gpus_per_node
                if group.host_memory_bytes is not None else None)
        # Only groups that hold at least one such pod get here (decide's `present`).
        return search.GpuPool(gpu=group.gpu, gpus_per_node=per_pod, nodes=_slots(group, resources, whole),
                              host_memory_bytes=host, usd_per_hour=usd_per_hour)
    per_node = group.gpus_per_node
    nodes = _slots(group, resources, whole)
    if resources.max_nodes is not None:
        nodes = min(nodes, resources.max_nodes)
    if resources.max_gpus is not None and resources.nodes is not None:
        per_node = min(per_node, max(1, resources.max_gpus // resources.nodes))
    elif resources.max_gpus is not None:
        per_node = min(per_node, resources.max_gpus)
        nodes = min(nodes, max(1, resources.max_gpus // per_node))
    return search.GpuPool(gpu=group.gpu, gpus_per_node=per_node, nodes=max(nodes, 1),
                          host_memory_bytes=group.host_memory_bytes, usd_per_hour=usd_per_hour)


def waiting_for_capacity(plan: api.Plan, groups: list[GpuNodeGroup]) -> str | None:
    """Why the plan cannot start now, when its GPUs are busy; None when it can. Pods an autoscaled pool would
    hold start now too: the autoscaler adds nodes for pending pods, and sees none that kubetune holds back."""
    same = [g for g in groups if g.product == plan.gpu_product and g.unusable is None]
    now = sum(g.pod_slots(plan.gpus_per_node) for g in same)
    if now + sum(g.autoscaled_slots(plan.gpus_per_node) for g in same) >= plan.nodes:
        return None
    total = sum(g.pod_slots(plan.gpus_per_node, whole=True) for g in same)
    return (f"waiting for capacity: the plan needs {plan.nodes} pod(s) of {plan.gpus_per_node} {plan.gpu_type} GPUs; "
            f"the cluster's {plan.gpu_product} nodes hold {now} such pod(s) now and {total} when free")


def architecture_of(spec: api.FineTuneJobSpec) -> architecture.Architecture:
    """The inline config when the spec has one, else the catalog entry or config.json named."""
    if spec.model.config:
        return architecture.from_hf_config(spec.model.config, name=spec.model.name)
    return architecture.load(spec.model.name)


def unknown_lora_targets(spec: api.FineTuneJobSpec, arch: architecture.Architecture) -> list[str]:
    """Targets PEFT would find no module for: it refuses them only at start, after the GPUs were held, and
    ignores one misspelt among good ones."""
    targets = (spec.method.lora_targets or []) if spec.method.type is not api.MethodType.FULL else []
    return [t for t in targets if t not in arch.lora_modules(tuple(targets))]


def decide(spec: api.FineTuneJobSpec, groups: list[GpuNodeGroup], prices: dict[str, float] | None = None,
           memory_scale: float = 1.0, resuming: api.Plan | None = None, max_offload: Offload = Offload.ALL) -> Decision:
    """The plan for a spec on the cluster's GPU groups; `prices` (USD per GPU-hour by GPU id) replace the
    catalog's list prices where the platform team knows its own; `memory_scale` > 1 after a run needed more
    memory than predicted (recovery.memory_scale); `max_offload` < all after the kernel killed a run for host
    memory (recovery.less_offload).

    `resuming` is the plan of a run whose checkpoints the new plan's run continues from (a replan): it keeps
    that method (a LoRA checkpoint holds no full weights, a full one no adapters) and precision (DeepSpeed
    names and keeps bf16 and fp16 optimizer states apart), and never goes below its ZeRO stage (the trainer
    converts checkpoints to DeepSpeed's universal format, and ZeRO-1/2 cannot load a converted ZeRO-3 one).
    Every frugal step a replan takes (checkpointing, a higher stage, offload, smaller micro-batches, more
    GPUs) stays open."""
    try:
        arch = architecture_of(spec)
    except LookupError as error:
        return Decision(None, None, None, str(error).strip("'\""), Reason.MODEL_UNKNOWN)
    except ValueError as error:
        return Decision(None, None, None, str(error), Reason.INVALID_MODEL_CONFIG)
    if (unknown := unknown_lora_targets(spec, arch)):
        return Decision(None, None, None, f"method.loraTargets {', '.join(unknown)} match no linear module of "
                        f"{arch.name} (its modules: {', '.join(arch.lora_modules(ALL_LINEAR))})",
                        Reason.INVALID_SPEC)
    per_pod = gpus_per_pod(spec.resources)
    typed = [g for g in groups if allowed(g, spec.resources.gpu_types)]
    largest = max((g.gpus_per_node for g in typed), default=0)
    if per_pod is not None and typed and per_pod > largest:
        return Decision(None, None, None, f"{per_pod} GPUs per node asked (gpus / nodes); the allowed GPU nodes have "
                        f"at most {largest}", Reason.UNSCHEDULABLE)
    present = [g for g in typed if _slots(g, spec.resources, whole=True) > 0]
    if not present:
        wanted = ", ".join(spec.resources.gpu_types or ["any"])
        have = ", ".join(f"{g.nodes} x {g.gpus_per_node} {g.product} ({_state(g)})" for g in groups) or "none"
        return Decision(None, None, None, f"no GPU nodes of the allowed types ({wanted}); the cluster has: {have}",
                        Reason.UNSCHEDULABLE)
    update: dict[str, object] = {"memory_scale": memory_scale, "max_offload": max_offload}
    if resuming is not None:
        update |= {"method": resuming.method, "precision": resuming.precision, "min_zero_stage": resuming.zero_stage}
    request = request_for(spec).model_copy(update=update)
    try:
        # A job Kueue admits is planned on the whole cluster: Kueue, not kubetune, waits for the capacity.
        now = None if spec.queue_name else _search(arch, request, spec.resources, present, prices, whole=False)
        # With nothing busy the whole cluster is what is free: the same search.
        busy = any(_slots(g, spec.resources, whole=False) < _slots(g, spec.resources, whole=True) for g in present)
        best = _search(arch, request, spec.resources, present, prices, whole=True) if busy or now is None else now
    except ValueError as error:  # contradictory pins; the CRD's CEL rules refuse these at apply time
        return Decision(None, None, None, str(error), Reason.INVALID_SPEC)
    if best is None or best[0].chosen is None:
        return Decision(None, None, None, " ".join(best[0].explanation) if best else "no plan", Reason.UNSCHEDULABLE)
    result, by_type = now if now is not None and now[0].chosen is not None else best
    chosen = result.chosen
    assert chosen is not None  # `now` is taken only with a choice, `best` has one
    group = by_type[chosen.gpu]
    notes = [group.estimated] if group.estimated is not None else []
    if group.autoscaled_nodes:
        notes.append(f"{group.product} is an autoscaled pool ({group.nodes} node(s) now, up to "
                     f"{group.nodes + group.autoscaled_nodes}): pods that do not fit now wait pending while the "
                     "cluster autoscaler adds nodes")
    if result is not best[0] and best[0].chosen is not None and best[0].chosen.gpu != chosen.gpu:
        # The policy: a job starts on what is free rather than wait for what would suit it best.
        notes.append(f"{best[0].chosen.gpu} x {best[0].chosen.settings.num_gpus} would suit the objective better but "
                     f"has no free capacity now: starting on {chosen.gpu} instead of waiting")
    if notes:
        result = dataclasses.replace(result, explanation=[*notes, *result.explanation])
    plan = _status_plan(chosen, result, group).model_copy(update={"planned_for": spec.resources})
    return Decision(plan, group, chosen, " ".join(result.explanation))


def _search(arch: architecture.Architecture, request: search.Request, resources: api.Resources,
            groups: list[GpuNodeGroup], prices: dict[str, float] | None,
            whole: bool) -> tuple[search.SearchResult, dict[str, GpuNodeGroup]] | None:
    """The planner's search over one group per GPU type (the one holding the most of the plan's nodes), on the
    GPUs free now or (`whole`) on all of them; None when no group holds a node now."""
    by_type: dict[str, GpuNodeGroup] = {}
    for group in groups:
        if _slots(group, resources, whole) == 0:
            continue
        if group.gpu.id not in by_type or _slots(group, resources, whole) > _slots(by_type[group.gpu.id], resources,
                                                                                   whole):
            by_type[group.gpu.id] = group
    if not by_type:
        return None
    pools = [_pool(g, resources, (prices or {}).get(g.gpu.id), whole) for g in by_type.values()]
    return search.plan(arch, request, pools), by_type


def _state(group: GpuNodeGroup) -> str:
    if group.unusable is not None:
        return f"not for training: {group.unusable}"
    simulated = "; simulated, only for jobs that name it in resources.gpuTypes" if group.simulated else ""
    autoscaled = f"; the autoscaler may add {group.autoscaled_nodes}" if group.autoscaled_nodes else ""
    return f"{group.free_nodes} free{simulated}{autoscaled}"


def _status_plan(chosen: search.Candidate, result: search.SearchResult, group: GpuNodeGroup) -> api.Plan:
    s, m = chosen.settings, chosen.memory
    capacity = group.gpu.memory_bytes
    return api.Plan(
        gpu_type=chosen.gpu, gpu_product=group.product, gpu_memory_bytes=capacity, nodes=s.num_nodes,
        gpus_per_node=s.gpus_per_node, gpus=s.num_gpus,
        peak_summary=f"{m.total_bytes / GIB:.1f}GiB/{capacity / GIB:.0f}GiB", method=s.method,
        lora_rank=s.lora.rank if s.method.trains_adapters else None, zero_stage=s.zero_stage, offload=s.offload,
        gradient_checkpointing=s.gradient_checkpointing, attention=s.attention, precision=s.precision,
        lora_adapter_precision=(AdapterPrecision.FP32 if s.lora.adapters_fp32 else AdapterPrecision.MODEL)
        if s.method.trains_adapters else None,
        micro_batch=s.micro_batch, gradient_accumulation=s.gradient_accumulation, loss_chunk_tokens=s.loss_chunk_tokens,
        predicted_peak_bytes=m.total_bytes, memory=m, predicted_step_milliseconds=int(chosen.step.step_seconds * 1000),
        predicted_tokens_per_second=round(chosen.step.tokens_per_second),
        explanation=result.explanation[:16],
        runners_up=[api.RunnerUp(gpu_type=c.gpu, gpus=c.settings.num_gpus, method=c.settings.method,
                                 zero_stage=c.settings.zero_stage, offload=c.settings.offload,
                                 gradient_checkpointing=c.settings.gradient_checkpointing,
                                 predicted_peak_bytes=c.memory.total_bytes,
                                 tokens_per_second=int(c.step.tokens_per_second),
                                 why_not_chosen=why) for c, why in result.runners_up[:8]],
    )


def summary(plan: api.Plan) -> str:
    """The plan in one line, for conditions, Events and attempts."""
    return (f"{plan.gpu_type} x {plan.gpus} ({plan.nodes} node(s)): {plan.method}"
            f"{f' r={plan.lora_rank}' if plan.lora_rank else ''}, ZeRO-{int(plan.zero_stage)}, offload {plan.offload}, "
            f"checkpointing {'on' if plan.gradient_checkpointing else 'off'}"
            f"{', chunked cross-entropy' if plan.loss_chunk_tokens else ''}, {plan.attention}, "
            f"micro-batch {plan.micro_batch} x {plan.gradient_accumulation}; predicted peak {plan.peak_summary} "
            f"per GPU, {plan.predicted_tokens_per_second:,} tokens/s")


def settings_from_plan(spec: api.FineTuneJobSpec, plan: api.Plan) -> TrainingSettings:
    """The training settings a stored plan stands for: children are always built from status, so an operator
    restart between planning and creating them builds the same objects."""
    arch = architecture_of(spec)
    return TrainingSettings(
        seq_len=spec.training.seq_len, micro_batch=plan.micro_batch, gradient_accumulation=plan.gradient_accumulation,
        precision=plan.precision, method=plan.method, lora=request_for(spec).lora,
        gradient_checkpointing=plan.gradient_checkpointing, attention=plan.attention, zero_stage=plan.zero_stage,
        offload=plan.offload, buckets=Buckets.for_hidden_size(arch.hidden_size), num_gpus=plan.gpus,
        gpus_per_node=plan.gpus_per_node, loss_chunk_tokens=plan.loss_chunk_tokens,
    )
