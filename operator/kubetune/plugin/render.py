"""A plan and a FineTuneJob as rich renderables: pure functions of what the API holds."""

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from kubetune.api import v1alpha1 as api
from kubetune.catalog import gpus
from kubetune.planner.decision import summary
from kubetune.planner.report import memory_bars
from kubetune.planner.search import GIB

# The most recent Events shown; `kubectl get events` has the rest.
EVENTS_SHOWN = 10


def warning_text(header: str) -> str:
    """A Warning header's text (RFC 7234: code, agent, quoted text), as kubectl prints it."""
    parts = header.split(" ", 2)
    if len(parts) == 3 and parts[0].isdigit():
        return parts[2].strip().removeprefix('"').removesuffix('"').replace('\\"', '"')
    return header


def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / GIB:.1f} GiB"


def _capacity(gpu_type: str) -> int | None:
    try:
        return gpus.by_id(gpu_type).memory_bytes
    except gpus.UnknownGpuError:  # planned from its node labels: the plan holds only the chosen type's memory
        return None


def _peak(peak_bytes: int, capacity_bytes: int | None) -> str:
    """As the plan's peakSummary reads."""
    return _gib(peak_bytes) if capacity_bytes is None else f"{peak_bytes / GIB:.1f}GiB/{capacity_bytes / GIB:.0f}GiB"


def _candidates(plan: api.Plan) -> Table:
    table = Table(title="chosen, and the runners-up")
    for column in ("", "GPU", "GPUs", "method", "ZeRO", "offload", "ckpt", "peak / GPU", "tokens/s", "why not chosen"):
        table.add_column(column)
    table.add_row("*", plan.gpu_type, str(plan.gpus), f"{plan.method} r={plan.lora_rank}" if plan.lora_rank
                  else str(plan.method), str(int(plan.zero_stage)), str(plan.offload),
                  "on" if plan.gradient_checkpointing else "off", plan.peak_summary,
                  f"{plan.predicted_tokens_per_second:,}", "")
    for index, r in enumerate(plan.runners_up, start=1):
        table.add_row(str(index), r.gpu_type, str(r.gpus), str(r.method), str(int(r.zero_stage)), str(r.offload),
                      "on" if r.gradient_checkpointing else "off",
                      _peak(r.predicted_peak_bytes, plan.gpu_memory_bytes if r.gpu_type == plan.gpu_type
                            else _capacity(r.gpu_type)),
                      f"{r.tokens_per_second:,}", r.why_not_chosen)
    return table


def plan_view(plan: api.Plan, title: str, measured: Sequence[tuple[str, int]] = ()) -> RenderableType:
    """The plan as the operator chose it: one line, the runners-up, the memory breakdown as bars (with any
    measured peaks beside the prediction), and why."""
    return Group(
        Text(title, style="bold"),
        Text(summary(plan)),
        Text(f"on {plan.nodes} x {plan.gpus_per_node} {plan.gpu_product}; attention {plan.attention}, "
             f"{plan.precision}, a step in {plan.predicted_step_milliseconds / 1000:.2f} s"),
        _candidates(plan),
        memory_bars(plan.memory, plan.gpu_memory_bytes, f"GiB per GPU at {plan.memory.peak_phase}", measured),
        *(Text(f"  {line}") for line in plan.explanation),
    )


def _progress(status: api.FineTuneJobStatus) -> str:
    p = status.progress
    if p is None:
        return "no steps yet"
    done = f"step {p.summary or p.step}"
    if p.total_steps:
        done += f" ({100 * p.step / p.total_steps:.0f}%)"
    return done + (f", about {p.eta_seconds // 60} min {p.eta_seconds % 60} s to go" if p.eta_seconds is not None
                   else "")


def _conditions(status: api.FineTuneJobStatus) -> Table:
    table = Table(title="conditions")
    for column in ("type", "status", "reason", "message"):
        table.add_column(column)
    for c in status.conditions:
        table.add_row(c.type, c.status, c.reason, c.message)
    return table


def _attempts(status: api.FineTuneJobStatus) -> Table:
    table = Table(title="attempts that ended")
    for column in ("#", "reason", "plan", "predicted", "measured", "then", "at"):
        table.add_column(column)
    for a in status.attempts:
        table.add_row(str(a.number), a.reason, a.plan_summary, _gib(a.predicted_peak_bytes),
                      _gib(a.measured_peak_bytes), a.action, a.finished_at)
    return table


def _events(events: list[dict[str, Any]]) -> Table:
    table = Table(title=f"events (the last {EVENTS_SHOWN})")
    for column in ("last seen", "type", "reason", "count", "message"):
        table.add_column(column)
    for e in sorted(events, key=_seen)[-EVENTS_SHOWN:]:
        table.add_row(_seen(e), e.get("type", ""), e.get("reason", ""), str(e.get("count") or 1),
                      e.get("message", ""))
    return table


def _seen(event: dict[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp", ""))


def job_view(ftj: dict[str, Any], events: list[dict[str, Any]], live_peak_bytes: int | None) -> RenderableType:
    """A FineTuneJob on one screen: its phase and progress, the plan with predicted against measured memory,
    the attempts and why they ended, the conditions, and the latest Events."""
    meta = ftj["metadata"]
    status = api.FineTuneJobStatus.model_validate(ftj.get("status") or {})
    header = Table.grid(padding=(0, 2))
    header.add_row("FineTuneJob", f"{meta['namespace']}/{meta['name']}")
    header.add_row("phase", str(status.phase or "Pending"))
    header.add_row("progress", _progress(status))
    header.add_row("model", str(ftj.get("spec", {}).get("model", {}).get("name", "")))
    if status.start_time:
        header.add_row("started", status.start_time)
    if status.completion_time:
        header.add_row("finished", status.completion_time)
    if status.memory_scale:
        header.add_row("memory scale", f"{status.memory_scale} (measured over predicted, after running out)")
    parts: list[RenderableType] = [header]
    if status.plan is not None:
        # Earlier attempts' peaks belong to their own plans: the attempts table holds them.
        live = [("measured peak, rank 0", live_peak_bytes)] if live_peak_bytes is not None else []
        parts.append(plan_view(status.plan, "plan", live))
    else:
        parts.append(Text("no plan yet", style="yellow"))
    if status.attempts:
        parts.append(_attempts(status))
    parts.append(_conditions(status))
    if events:
        parts.append(_events(events))
    return Group(*parts)
