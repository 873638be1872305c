"""The operator's Prometheus metrics (kubetune_*), served on the operator's metrics port.

Per-job series carry `namespace` and `finetunejob` (not `job`, which Prometheus keeps for the scrape job), the
same labels the trainer's series carry, so the two join. The chart's ServiceMonitor honours these labels (the
operator says which namespace a job is in); a trainer's namespace is its pod's, set by the PodMonitor.
A job's series are dropped when the FineTuneJob is deleted, so the fleet's gauges count only what exists."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kubetune.api import v1alpha1 as api

JOB = ("namespace", "finetunejob")
PHASES = tuple(api.JobPhase)

registry = CollectorRegistry()
jobs = Gauge("kubetune_finetunejobs", "FineTuneJobs that exist, by namespace and phase.",
             ("namespace", "phase"), registry=registry)
job_phase = Gauge("kubetune_finetunejob_phase", "1 for the phase each FineTuneJob is in, 0 for the others.",
                  (*JOB, "phase"), registry=registry)
plans = Counter("kubetune_plans_total", "Plans made, by the choices in them.",
                ("gpu_type", "zero_stage", "offload", "method", "gradient_checkpointing", "attention"),
                registry=registry)
plan_failures = Counter("kubetune_plan_failures_total", "Plans that found no configuration, by reason.",
                        ("reason",), registry=registry)
predicted_peak = Gauge("kubetune_finetunejob_predicted_peak_bytes", "The plan's predicted per-GPU peak memory.",
                       JOB, registry=registry)
gpu_memory = Gauge("kubetune_finetunejob_gpu_memory_bytes", "Memory of one GPU of the planned type.",
                   JOB, registry=registry)
predicted_tokens = Gauge("kubetune_finetunejob_predicted_tokens_per_second",
                         "The plan's predicted training throughput of the whole job.", JOB, registry=registry)
gpus_requested = Gauge("kubetune_finetunejob_gpus_requested",
                       "GPUs a planned, unfinished FineTuneJob holds or waits for, by GPU type.",
                       (*JOB, "gpu_type"), registry=registry)
failures = Counter("kubetune_finetunejob_failures_total", "FineTuneJobs that ended Failed, by reason.",
                   ("namespace", "reason"), registry=registry)
time_to_running = Histogram("kubetune_finetunejob_time_to_running_seconds",
                            "Seconds from a FineTuneJob's creation to its workers running (planning and queueing).",
                            registry=registry, buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600))
reconcile_seconds = Histogram("kubetune_reconcile_duration_seconds", "Wall time of one reconcile of a FineTuneJob.",
                              registry=registry,
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
reconcile_errors = Counter("kubetune_reconcile_errors_total",
                           "Reconciles that raised (kopf retries them), by exception type.", ("reason",),
                           registry=registry)
reconcile_waits = Counter("kubetune_reconcile_waits_total",
                          "Reconciles that waited for another of the same FineTuneJob to finish (a periodic one "
                          "meeting a change): they run one at a time.", registry=registry)
reconcile_stale_skips = Counter("kubetune_reconcile_stale_skips_total",
                                "Reconciles skipped because the previous one's status write had not reached their "
                                "view of the FineTuneJob yet.", registry=registry)
reconcile_retries = Counter("kubetune_reconcile_retries_total", "Reconciles that were retries of a failed one.",
                            registry=registry)


class JobSeries:
    """The per-job gauges, kept in step with each FineTuneJob's phase and plan."""

    def __init__(self) -> None:
        self._phase: dict[tuple[str, str], api.JobPhase] = {}
        self._gpu_type: dict[tuple[str, str], str] = {}
        self._planned: set[tuple[str, str]] = set()

    def observe(self, namespace: str, name: str, phase: api.JobPhase, plan: api.Plan | None) -> None:
        key = (namespace, name)
        old = self._phase.get(key)
        if old != phase:
            if old is not None:
                jobs.labels(namespace, old).dec()
            jobs.labels(namespace, phase).inc()
            for each in PHASES:
                job_phase.labels(namespace, name, each).set(1 if each == phase else 0)
            self._phase[key] = phase
        if plan is None:
            return
        self._planned.add(key)
        predicted_peak.labels(namespace, name).set(plan.predicted_peak_bytes)
        gpu_memory.labels(namespace, name).set(plan.gpu_memory_bytes)
        predicted_tokens.labels(namespace, name).set(plan.predicted_tokens_per_second)
        if phase in (api.JobPhase.SUCCEEDED, api.JobPhase.FAILED):
            self._drop_gpus(key)
        elif key not in self._gpu_type:
            gpus_requested.labels(namespace, name, plan.gpu_type).set(plan.gpus)
            self._gpu_type[key] = plan.gpu_type

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        phase = self._phase.pop(key, None)
        if phase is None:
            return
        jobs.labels(namespace, phase).dec()
        for each in PHASES:
            job_phase.remove(namespace, name, each)
        if key in self._planned:
            self._planned.discard(key)
            for gauge in (predicted_peak, gpu_memory, predicted_tokens):
                gauge.remove(namespace, name)
        self._drop_gpus(key)

    def _drop_gpus(self, key: tuple[str, str]) -> None:
        gpu_type = self._gpu_type.pop(key, None)
        if gpu_type is not None:
            gpus_requested.remove(*key, gpu_type)


def serve(port: int) -> None:
    start_http_server(port, addr="0.0.0.0", registry=registry)
