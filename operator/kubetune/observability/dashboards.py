"""The fleet and job Grafana dashboards, built here and written as JSON into the chart
(`kubetune dashboards --write`; a test fails when the chart's copies are stale).

Built from code so that every panel states its unit, every query uses the same label scheme (`namespace`,
`finetunejob`, `rank`, `pod`; DCGM exporter's series joined on namespace and pod however they were scraped)
and the tests can run every query of every panel against a real Prometheus."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

CHART_DASHBOARDS = Path("charts/kubetune/dashboards")  # relative to the repository root, as the CRD paths
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
JOB = 'namespace="$namespace", finetunejob="$finetunejob"'
FLEET = 'namespace=~"$namespace"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: Literal["timeseries", "stat"] = "timeseries"
    width: int = 12
    height: int = 8
    # Series drawn dashed: predictions and limits beside what was measured.
    reference_series: tuple[str, ...] = field(default=())


def _tokens_per_second(selector: str) -> str:
    """All ranks' tokens per second, from the trainers' counters."""
    return f"sum(rate(kubetune_trainer_tokens_total{{{selector}}}[$__rate_interval]))"


def _on_training_gpus(aggregation: str, metric: str) -> str:
    """A DCGM exporter series of each GPU of the job's pods, joined on the training pod's namespace and pod.

    dcgm-exporter labels a GPU with the pod using it as `namespace` and `pod`. Scraped with honorLabels false (the
    GPU Operator's ServiceMonitor default) Prometheus keeps those as exported_namespace and exported_pod and sets
    namespace and pod to the exporter's own; scraped with honorLabels true they stay as they are. The first
    half gives the renamed series their pod back, the second takes the series that were never renamed."""
    renamed = (f'label_replace(label_replace({metric}{{exported_pod!=""}}, "pod", "$1", "exported_pod", "(.+)"), '
               f'"namespace", "$1", "exported_namespace", "(.+)")')
    return (f"{aggregation} by (pod, gpu) (({renamed} or {metric}{{exported_pod=\"\"}}) * on (namespace, pod) "
            f"group_left () group by (namespace, pod) (kubetune_trainer_step{{{JOB}}}))")


def _quantiles(metric: str, selector: str = "", window: str = "$__rate_interval") -> tuple[Query, ...]:
    """p50/p90/p99 of a histogram over `window`: the rate interval for frequent events, the dashboard's whole
    range for rare ones (a job starting), whose rate over a minute is mostly empty."""
    series = f"{metric}_bucket{{{selector}}}" if selector else f"{metric}_bucket"
    return tuple(Query(f"histogram_quantile({q}, sum by (le) (increase({series}[{window}])))", f"p{int(q * 100)}")
                 for q in (0.5, 0.9, 0.99))


FLEET_PANELS = (
    Panel("FineTuneJobs by phase", "FineTuneJobs that exist now, by phase.", "short",
          (Query(f"sum by (phase) (kubetune_finetunejobs{{{FLEET}}})", "{{phase}}"),)),
    Panel("GPUs in use by type", "GPUs held by Running FineTuneJobs, and those planned but not yet running "
          "(queued, pending or suspended).", "short",
          (Query("sum by (gpu_type) (kubetune_finetunejob_gpus_requested{" + FLEET + "} * on (namespace, finetunejob) "
                 'group_left () (kubetune_finetunejob_phase{phase="Running"} == 1))', "{{gpu_type}} running"),
           Query("sum by (gpu_type) (kubetune_finetunejob_gpus_requested{" + FLEET + "} * on (namespace, finetunejob) "
                 'group_left () (kubetune_finetunejob_phase{phase!="Running"} == 1))', "{{gpu_type}} waiting"))),
    Panel("Time from creation to running", "Planning plus queueing plus scheduling, per job that started.", "s",
          _quantiles("kubetune_finetunejob_time_to_running_seconds", window="$__range")),
    Panel("Failures by reason", "FineTuneJobs that ended Failed in the dashboard's time range, by reason.", "short",
          (Query(f"sum by (reason) (increase(kubetune_finetunejob_failures_total{{{FLEET}}}[$__range])) or vector(0)",
                 "{{reason}}"),), kind="stat"),
    Panel("Plan choices", "Plans made since the operator started, by GPU type, method, ZeRO stage and offload.",
          "short", (Query("sum by (gpu_type, method, zero_stage, offload) (kubetune_plans_total)",
                          "{{gpu_type}} {{method}} ZeRO-{{zero_stage}} offload {{offload}}"),)),
    Panel("Measured / predicted peak memory", "Each job's highest per-rank peak over the memory model's prediction: "
          "1 is a perfect prediction, above 1 an under-prediction.", "percentunit",
          (Query(f"finetunejob:kubetune_memory_measured_over_predicted:ratio{{{FLEET}}}",
                 "{{namespace}}/{{finetunejob}}"),)),
    Panel("Reconcile latency", "Wall time of the operator's reconciles.", "s",
          _quantiles("kubetune_reconcile_duration_seconds")),
    Panel("Reconcile errors and retries", "Reconciles that raised, by exception, and retries kopf made.", "ops",
          (Query("sum by (reason) (rate(kubetune_reconcile_errors_total[$__rate_interval])) or vector(0)",
                 "errors {{reason}}"),
           Query("sum(rate(kubetune_reconcile_retries_total[$__rate_interval]))", "retries"))),
)

JOB_PANELS = (
    Panel("Phase", "The FineTuneJob's phase.", "none",
          (Query(f"max by (phase) (kubetune_finetunejob_phase{{{JOB}}}) == 1", "{{phase}}"),), kind="stat", width=6,
          height=4),
    Panel("Progress", "Optimizer steps done over steps planned (rank 0).", "percentunit",
          (Query(f'max(kubetune_trainer_step{{{JOB}, rank="0"}}) / max(kubetune_trainer_total_steps{{{JOB}, rank="0"}})',
                 "progress"),), kind="stat", width=6, height=4),
    Panel("ETA", "Steps left times the recent mean step time.", "s",
          (Query(f'(max(kubetune_trainer_total_steps{{{JOB}, rank="0"}}) - max(kubetune_trainer_step{{{JOB}, rank="0"}}))'
                 f' * sum(rate(kubetune_trainer_step_duration_seconds_sum{{{JOB}, rank="0"}}[$__rate_interval]))'
                 f' / sum(rate(kubetune_trainer_step_duration_seconds_count{{{JOB}, rank="0"}}[$__rate_interval]))',
                 "ETA"),), kind="stat", width=6, height=4),
    Panel("Tokens per second", "Training throughput of all ranks against the plan's prediction.", "short",
          (Query(_tokens_per_second(JOB), "measured"),
           Query(f"kubetune_finetunejob_predicted_tokens_per_second{{{JOB}}}", "predicted")),
          kind="stat", width=6, height=4),
    Panel("Memory per rank", "Allocated, reserved and peak memory of each rank, against the plan's predicted peak "
          "and the GPU's size.", "bytes",
          (Query(f"kubetune_trainer_memory_allocated_bytes{{{JOB}}}", "allocated rank {{rank}}"),
           Query(f"kubetune_trainer_memory_reserved_bytes{{{JOB}}}", "reserved rank {{rank}}"),
           Query(f"kubetune_trainer_memory_peak_allocated_bytes{{{JOB}}}", "peak rank {{rank}}"),
           Query(f"kubetune_finetunejob_predicted_peak_bytes{{{JOB}}}", "predicted peak"),
           Query(f"max(kubetune_trainer_memory_device_total_bytes{{{JOB}}})", "device memory")),
          width=24, reference_series=("predicted peak", "device memory")),
    Panel("Measured / predicted peak memory", "The highest per-rank peak over the prediction: above 1 means the "
          "memory model under-predicted this job.", "percentunit",
          (Query(f"finetunejob:kubetune_memory_measured_over_predicted:ratio{{{JOB}}}", "measured / predicted"),)),
    Panel("Throughput", "Tokens per second, all ranks, against the prediction.", "short",
          (Query(_tokens_per_second(JOB), "measured"),
           Query(f"kubetune_finetunejob_predicted_tokens_per_second{{{JOB}}}", "predicted")),
          reference_series=("predicted",)),
    Panel("Model FLOPs utilisation", "Model FLOPs per second over the planned GPU's dense peak, per rank.",
          "percentunit", (Query(f"kubetune_trainer_model_flops_utilization_ratio{{{JOB}}}", "rank {{rank}}"),)),
    Panel("Loss", "Training loss of each optimizer step (rank 0).", "none",
          (Query(f'kubetune_trainer_loss{{{JOB}, rank="0"}}', "loss"),)),
    Panel("Learning rate", "The schedule's learning rate (rank 0).", "none",
          (Query(f'kubetune_trainer_learning_rate{{{JOB}, rank="0"}}', "learning rate"),)),
    Panel("Step time", "Quantiles of the optimizer step's wall time over all ranks.", "s",
          _quantiles("kubetune_trainer_step_duration_seconds", JOB)),
    Panel("Checkpoint save time", "Mean wall time of a checkpoint save, per rank.", "s",
          (Query(f"kubetune_trainer_checkpoint_save_seconds_sum{{{JOB}}} / kubetune_trainer_checkpoint_save_seconds_count"
                 f"{{{JOB}}}", "rank {{rank}}"),)),
    Panel("GPU utilisation (DCGM)", "DCGM exporter's utilisation of each GPU of the job's pods, joined on the "
          "training pod; empty where DCGM exporter does not run.", "percent",
          (Query(_on_training_gpus("avg", "DCGM_FI_DEV_GPU_UTIL"), "{{pod}} GPU {{gpu}}"),)),
    Panel("GPU memory used (DCGM)", "Framebuffer memory in use on each GPU of the job's pods, as the driver sees "
          "it (torch's allocations, its cache, the CUDA context, communication buffers), against the plan's "
          "predicted peak and the GPU's size.", "bytes",
          (Query(f'{_on_training_gpus("max", "DCGM_FI_DEV_FB_USED")} * 2^20', "{{pod}} GPU {{gpu}}"),
           Query(f"kubetune_finetunejob_predicted_peak_bytes{{{JOB}}}", "predicted peak"),
           Query(f"kubetune_finetunejob_gpu_memory_bytes{{{JOB}}}", "GPU memory")),
          reference_series=("predicted peak", "GPU memory")),
)


def _variable(name: str, label: str, query: str, include_all: bool) -> dict[str, Any]:
    variable = {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "refresh": 2,
                "query": {"query": query, "refId": name}, "definition": query, "sort": 1, "hide": 0,
                "includeAll": include_all, "multi": include_all, "current": {}}
    if include_all:
        variable["allValue"] = ".*"
    return variable


def _panel(index: int, panel: Panel, x: int, y: int) -> dict[str, Any]:
    overrides = [{"matcher": {"id": "byName", "options": name},
                  "properties": [{"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}}]}
                 for name in panel.reference_series]
    return {
        "id": index, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE, "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": overrides},
        "targets": [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend}
                    for i, q in enumerate(panel.queries)],
    }


def dashboard(uid: str, title: str, panels: tuple[Panel, ...], fleet: bool) -> dict[str, Any]:
    variables = [{"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
                  "current": {}, "hide": 0}]
    variables.append(_variable("namespace", "Namespace", "label_values(kubetune_finetunejob_phase, namespace)", fleet))
    if not fleet:
        variables.append(_variable("finetunejob", "FineTuneJob", 'label_values(kubetune_finetunejob_phase'
                                   '{namespace="$namespace"}, finetunejob)', False))
    laid_out, x, y, row_height = [], 0, 0, 0
    for index, panel in enumerate(panels, start=1):
        if x + panel.width > 24:
            x, y, row_height = 0, y + row_height, 0
        laid_out.append(_panel(index, panel, x, y))
        x, row_height = x + panel.width, max(row_height, panel.height)
    return {"uid": uid, "title": title, "tags": ["kubetune"], "editable": True, "schemaVersion": 39, "version": 1,
            "refresh": "30s", "time": {"from": "now-6h", "to": "now"}, "timezone": "browser",
            "templating": {"list": variables}, "panels": laid_out}


def all_dashboards() -> dict[str, dict[str, Any]]:
    return {"kubetune-fleet.json": dashboard("kubetune-fleet", "kubetune / Fleet", FLEET_PANELS, fleet=True),
            "kubetune-job.json": dashboard("kubetune-job", "kubetune / FineTuneJob", JOB_PANELS, fleet=False)}


def render(content: dict[str, Any]) -> str:
    return json.dumps(content, indent=2) + "\n"


def write(directory: Path = CHART_DASHBOARDS) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in all_dashboards().items():
        (directory / name).write_text(render(content))
        written.append(directory / name)
    return written
