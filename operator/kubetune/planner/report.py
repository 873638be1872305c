"""A plan as JSON (the stable interface other tools read), as rich tables, and as an SVG chart."""

from collections.abc import Sequence
from html import escape
from typing import Any

from rich.console import Console
from rich.table import Table

from kubetune.api.v1alpha1 import MemoryBreakdown
from kubetune.api.vocabulary import AdapterPrecision
from kubetune.planner.search import GIB, Candidate, Request, SearchResult, describe
from kubetune.planner.throughput import StepTime

# The breakdown's terms, in the order they stack.
MEMORY_KEYS = ("weights_bytes", "gradients_bytes", "optimizer_states_bytes", "activations_bytes", "logits_bytes",
               "buffers_bytes", "overhead_bytes", "allocator_margin_bytes")
COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _configuration(candidate: Candidate, request: Request) -> dict[str, Any]:
    s = candidate.settings
    return {
        "gpu": candidate.gpu,
        "num_gpus": s.num_gpus,
        "num_nodes": s.num_nodes,
        "gpus_per_node": s.gpus_per_node,
        "seq_len": s.seq_len,
        "micro_batch": s.micro_batch,
        "gradient_accumulation": s.gradient_accumulation,
        "global_batch": request.global_batch,
        "method": s.method.value,
        "lora_rank": s.lora.rank if s.method.trains_adapters else None,
        "lora_target_modules": list(s.lora.target_modules) if s.method.trains_adapters else None,
        "lora_dropout": s.lora.dropout if s.method.trains_adapters else None,
        "lora_adapter_precision": (AdapterPrecision.FP32 if s.lora.adapters_fp32 else AdapterPrecision.MODEL).value
        if s.method.trains_adapters else None,
        "zero_stage": int(s.zero_stage),
        "offload": s.offload.value,
        "gradient_checkpointing": s.gradient_checkpointing,
        "attention": s.attention.value,
        "precision": s.precision.value,
        "optimizer": s.optimizer.value,
    }


def _split(step: StepTime) -> dict[str, float]:
    """The step's shares by what it goes to (compute, fixed overhead, ZeRO traffic, offload)."""
    return {cost.value: round(share, 4) for cost, share in step.shares.items()}


def _memory(candidate: Candidate, capacity_bytes: int) -> dict[str, Any]:
    return {**candidate.memory.model_dump(mode="json"), "capacity_bytes": capacity_bytes}


def _candidate(candidate: Candidate, request: Request, capacities: dict[str, int]) -> dict[str, Any]:
    return {
        "configuration": _configuration(candidate, request),
        "memory": _memory(candidate, capacities[candidate.gpu]),
        "step_time_seconds": candidate.time.step_seconds if candidate.time else None,
        "step_time_split": _split(candidate.time) if candidate.time else None,
        "tokens_per_second": candidate.time.tokens_per_second if candidate.time else None,
        "usd_per_million_tokens": candidate.usd_per_million_tokens if candidate.time else None,
        "reasons": candidate.reasons,
    }


def to_json(plan: SearchResult, request: Request, capacities: dict[str, int]) -> dict[str, Any]:
    chosen = plan.chosen
    body: dict[str, Any] = {"model": plan.model, "objective": plan.objective.value, "fits": chosen is not None,
                            "reasons": plan.explanation, "candidates_evaluated": plan.candidates_evaluated}
    if chosen is not None:
        body |= {"chosen": _configuration(chosen, request), "memory": _memory(chosen, capacities[chosen.gpu]),
                 "step_time_seconds": chosen.step.step_seconds, "step_time_split": _split(chosen.step),
                 "dominant_cost": chosen.step.dominant.value, "tokens_per_second": chosen.step.tokens_per_second,
                 "usd_per_million_tokens": chosen.usd_per_million_tokens,
                 "runners_up": [_candidate(c, request, capacities) | {"why_not_chosen": why}
                                for c, why in plan.runners_up]}
    elif plan.smallest_need is not None:
        body["smallest_need"] = _candidate(plan.smallest_need, request, capacities)
    return body


def print_plan(console: Console, plan: SearchResult, capacities: dict[str, int]) -> None:
    if plan.chosen is None:
        for line in plan.explanation:
            console.print(f"[red]{line}[/red]")
        return
    table = Table(title=f"plan for {plan.model} (objective: {plan.objective})")
    for column in ("", "GPU", "GPUs", "method", "ZeRO", "offload", "ckpt", "attention", "micro x accum",
                   "peak / GPU", "tokens/s", "$/M tokens", "why not chosen"):
        table.add_column(column)
    rows = [(plan.chosen, "chosen")] + plan.runners_up
    for index, (c, why) in enumerate(rows):
        s = c.settings
        table.add_row(
            "*" if index == 0 else str(index), c.gpu, str(s.num_gpus),
            f"{s.method} r={s.lora.rank}" if s.method.trains_adapters else "Full", str(int(s.zero_stage)), s.offload.value,
            "on" if s.gradient_checkpointing else "off", s.attention.value,
            f"{s.micro_batch} x {s.gradient_accumulation}",
            f"{c.memory.total_bytes / GIB:.1f} / {capacities[c.gpu] / GIB:.0f} GiB",
            f"{c.step.tokens_per_second:,.0f}", f"{c.usd_per_million_tokens:.2f}", "" if index == 0 else why,
        )
    console.print(table)
    console.print(memory_bars(plan.chosen.memory, capacities[plan.chosen.gpu],
                              f"chosen: GiB per GPU at {plan.chosen.memory.peak_phase}"))
    for line in plan.explanation:
        console.print(line)


BAR_WIDTH = 40
_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(value: int, scale: int, width: int = BAR_WIDTH) -> str:
    """`value` as a bar of block characters, `scale` filling `width` (to an eighth of a character)."""
    eighths = round(max(value, 0) / max(scale, 1) * width * 8)
    return "█" * (eighths // 8) + (_EIGHTHS[eighths % 8] if eighths % 8 else "")


def memory_bars(memory: MemoryBreakdown, capacity_bytes: int, title: str,
                measured: Sequence[tuple[str, int]] = ()) -> Table:
    """The breakdown as a bar per term, the total, any measured peaks, and the GPU's capacity, all to one
    scale; the host memory that offload needs per node under it."""
    scale = max(capacity_bytes, memory.total_bytes, *(value for _, value in measured))
    table = Table(title=title, caption=f"host memory per node: {memory.host_bytes_per_node / GIB:.2f} GiB"
                  if memory.host_bytes_per_node else None)
    table.add_column("term")
    table.add_column("GiB", justify="right")
    table.add_column("", no_wrap=True)
    for key in MEMORY_KEYS:
        table.add_row(_term(key), f"{getattr(memory, key) / GIB:.2f}", bar(getattr(memory, key), scale))
    table.add_section()
    table.add_row("predicted peak", f"{memory.total_bytes / GIB:.2f}", f"[bold]{bar(memory.total_bytes, scale)}[/bold]")
    for label, value in measured:
        table.add_row(label, f"{value / GIB:.2f}", f"[cyan]{bar(value, scale)}[/cyan]")
    table.add_row("GPU capacity", f"{capacity_bytes / GIB:.2f}", f"[dim]{bar(capacity_bytes, scale)}[/dim]")
    return table


def _term(key: str) -> str:
    return key.removesuffix("_bytes").replace("_", " ")


def svg_chart(plan: SearchResult, capacities: dict[str, int]) -> str:
    """Stacked bars of the memory breakdown of the chosen plan and its runners-up, against capacity."""
    rows = ([plan.chosen] if plan.chosen else []) + [c for c, _ in plan.runners_up]
    if not rows and plan.smallest_need is not None:
        rows = [plan.smallest_need]
    scale_max = max(max(c.memory.total_bytes, capacities[c.gpu]) for c in rows)
    left, width, bar, gap = 360, 560, 22, 14
    height = 70 + len(rows) * (bar + gap) + 40
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<text x="10" y="20" font-size="15">Per-GPU memory: {escape(plan.model)}</text>']
    for index, c in enumerate(rows):
        y = 40 + index * (bar + gap)
        label = f"{'chosen: ' if index == 0 and plan.chosen else ''}{c.gpu} x{c.settings.num_gpus}, {describe(c.settings)}"
        parts.append(f'<text x="10" y="{y + 15}">{escape(label[:58])}</text>')
        x = left
        for key, colour in zip(MEMORY_KEYS, COLOURS, strict=True):
            w = getattr(c.memory, key) / scale_max * width
            if w > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar}" fill="{colour}">'
                             f'<title>{_term(key)}: {getattr(c.memory, key) / GIB:.2f} GiB</title></rect>')
                x += w
        cap = left + capacities[c.gpu] / scale_max * width
        parts.append(f'<line x1="{cap:.1f}" y1="{y - 3}" x2="{cap:.1f}" y2="{y + bar + 3}" stroke="black" '
                     'stroke-width="2"/>')
        parts.append(f'<text x="{x + 4:.1f}" y="{y + 15}">{c.memory.total_bytes / GIB:.1f} GiB</text>')
    legend_y = height - 20
    for index, (key, colour) in enumerate(zip(MEMORY_KEYS, COLOURS, strict=True)):
        x = 10 + index * 115
        parts.append(f'<rect x="{x}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{legend_y}">{_term(key)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
