"""A real Prometheus scrapes the operator running against the local cluster and a real trainer (two CPU
ranks under torchrun, the two GPUs of the job's one pod) that runs with the configuration the operator generated
for a FineTuneJob, through the chart's PodMonitor as Prometheus Operator would scrape the job's pod
(scrape_configs.py), and DCGM exporter as the GPU Operator's ServiceMonitor scrapes it by default; the chart's
rules are loaded. Every operator and trainer metric is there with its type and labels, every query of every
dashboard panel (and template variable) returns data, promtool finds both endpoints clean, and the job
dashboard's key series are drawn into a picture."""

import json
import math
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import contract
from kubetune.devcluster.cluster import LONG_RUNNING_NAMESPACE, LocalCluster
from tests.integration.ftj import ROOT, apply, example, get, in_phase, operator_running, trainer_pods
from tests.integration.waiting import wait_until
from tests.observability import dcgm
from tests.observability.panels import boards, job_panel_queries, substitute
from tests.observability.prometheus import Prometheus, free_consecutive_ports, free_port
from tests.observability.rendering import render_rules
from tests.observability.scrape_configs import chart_pod_monitor, dcgm_exporter_job, pod_monitor_job, static_job
from tests.trainer.conftest import kill, launch, model_config, world  # noqa: F401  (world is a fixture)

pytestmark = pytest.mark.cluster

JOB = "tiny"
OPERATOR_SCRAPE_JOB = "kubetune-metrics"  # what the chart's ServiceMonitor names it: the OperatorDown alert's job

JOB_LABELS = {"namespace", "finetunejob"}
# namespace, pod and container are the target's (the PodMonitor's), the others the trainer's.
TRAINER_LABELS = {"namespace", "pod", "container", "finetunejob", "rank", "gpu_type"}
# metric -> (type, labels besides Prometheus's own job and instance)
OPERATOR_METRICS = {
    "kubetune_finetunejobs": ("gauge", {"namespace", "phase"}),
    "kubetune_finetunejob_phase": ("gauge", JOB_LABELS | {"phase"}),
    "kubetune_plans_total": ("counter", {"gpu_type", "zero_stage", "offload", "method", "gradient_checkpointing",
                                         "attention"}),
    "kubetune_plan_failures_total": ("counter", {"reason"}),
    "kubetune_finetunejob_predicted_peak_bytes": ("gauge", JOB_LABELS),
    "kubetune_finetunejob_gpu_memory_bytes": ("gauge", JOB_LABELS),
    "kubetune_finetunejob_predicted_tokens_per_second": ("gauge", JOB_LABELS),
    "kubetune_finetunejob_gpus_requested": ("gauge", JOB_LABELS | {"gpu_type"}),
    "kubetune_finetunejob_failures_total": ("counter", {"namespace", "reason"}),
    "kubetune_finetunejob_time_to_running_seconds": ("histogram", set()),
    "kubetune_reconcile_duration_seconds": ("histogram", set()),
    "kubetune_reconcile_retries_total": ("counter", set()),
}
# Present once a reconcile has raised; the test run has none, so only its metadata is checked.
OPERATOR_METRICS_ON_ERROR = {"kubetune_reconcile_errors_total": "counter"}
TRAINER_METRICS = {name: ("gauge", TRAINER_LABELS) for name in (
    "kubetune_trainer_memory_allocated_bytes", "kubetune_trainer_memory_reserved_bytes",
    "kubetune_trainer_memory_peak_allocated_bytes", "kubetune_trainer_memory_device_total_bytes",
    "kubetune_trainer_memory_predicted_peak_bytes", "kubetune_trainer_loss", "kubetune_trainer_learning_rate",
    "kubetune_trainer_model_flops_utilization_ratio", "kubetune_trainer_step", "kubetune_trainer_total_steps",
    "kubetune_trainer_last_step_timestamp_seconds")} | {
    "kubetune_trainer_step_duration_seconds": ("histogram", TRAINER_LABELS),
    "kubetune_trainer_checkpoint_save_seconds": ("histogram", TRAINER_LABELS),
    "kubetune_trainer_checkpoints_total": ("counter", TRAINER_LABELS),
    "kubetune_trainer_tokens_total": ("counter", TRAINER_LABELS),
    "kubetune_trainer_samples_total": ("counter", TRAINER_LABELS),
}
RECORDED = ("finetunejob:kubetune_memory_measured_over_predicted:ratio", "finetunejob:kubetune_trainer_tokens:rate5m",
            "finetunejob:kubetune_throughput_measured_over_predicted:ratio")


@dataclass
class Stack:
    prometheus: Prometheus
    operator_url: str
    trainer_urls: list[str]
    started: float
    pod: str


def tiny_job() -> dict[str, Any]:
    return {"apiVersion": "kubetune.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": JOB},
            "spec": {"model": {"name": "tiny-llama", "config": model_config()}, "dataset": {"source": "data.jsonl"},
                     "training": {"seqLen": 48, "globalBatch": 8, "maxSteps": 100000},
                     # BF16 pinned: the ranks run here on the CPU, where DeepSpeed has no fp16, and the cheapest
                     # GPU for the plan may be one without bf16 (planned fp16).
                     "method": {"type": "LoRA", "microBatch": 4, "zeroStage": 2, "precision": "BF16"},
                     "checkpointIntervalSteps": 5,
                     # One pod of two GPUs: its two metrics ports are the two ranks run here.
                     "resources": {"gpus": 2, "nodes": 1}}}


def trainer_configs(cluster: LocalCluster, world_dir: Path, output: Path, port: int) -> tuple[Path, Path]:
    """The operator's own trainer.json and ds_config.json for the job, with what differs off-cluster: local
    paths, the metrics port and torch's Adam (no fused CUDA Adam on a CPU)."""
    children = get(cluster, LONG_RUNNING_NAMESPACE, "ftj", JOB)["status"]["children"]
    config_map = get(cluster, LONG_RUNNING_NAMESPACE, "configmap", children["configMap"])
    trainer = json.loads(config_map["data"]["trainer.json"])
    trainer["tokenizer"] = str(world_dir / "tokenizer")
    trainer["dataset"]["source"] = str(world_dir / "data.jsonl")
    trainer["output"]["path"] = str(output)
    trainer["metricsPort"] = port
    ds = json.loads(config_map["data"]["ds_config.json"])
    ds["optimizer"]["params"]["torch_adam"] = True
    output.mkdir(parents=True, exist_ok=True)
    (output / "trainer.json").write_text(json.dumps(trainer))
    (output / "ds_config.json").write_text(json.dumps(ds))
    return output / "trainer.json", output / "ds_config.json"


@pytest.fixture(scope="module")
def stack(cluster: LocalCluster, world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:  # noqa: F811
    root = tmp_path_factory.mktemp("observability")
    for namespace in (LONG_RUNNING_NAMESPACE, "obs-other"):
        cluster.kubectl("create", "namespace", namespace)
    operator_port, trainer_port = free_port(), free_consecutive_ports(2)
    trainer_ports = [trainer_port, trainer_port + 1]
    operator_job = static_job(OPERATOR_SCRAPE_JOB, [f"127.0.0.1:{operator_port}"])
    prometheus = Prometheus(root, [operator_job], render_rules(root / "rules.yaml"))
    prometheus.start()
    trainer = None
    try:
        with operator_running(cluster, root, f"--metrics-port={operator_port}"), dcgm.exporter() as exporter:
            # As in a cluster, the operator is scraped before jobs arrive, so their first events are counted.
            wait_until("Prometheus to scrape the operator", lambda: prometheus.query(
                f'kubetune_reconcile_retries_total{{job="{OPERATOR_SCRAPE_JOB}"}}'))
            # A job that runs (its pods stay Running in this namespace), one parked by suspension (planned, waiting
            # for its GPUs) and one that cannot fit (Unschedulable, a failure by reason).
            assert apply(cluster, LONG_RUNNING_NAMESPACE, tiny_job()).returncode == 0
            parked = tiny_job() | {"metadata": {"name": "parked"}}
            parked["spec"] = parked["spec"] | {"suspend": True}
            assert apply(cluster, "obs-other", parked).returncode == 0
            assert apply(cluster, "obs-other", example("cannot-fit")).returncode == 0
            wait_until("the job to run", in_phase(cluster, LONG_RUNNING_NAMESPACE, JOB, "Running"))
            wait_until("the parked job", in_phase(cluster, "obs-other", "parked", "Suspended"))
            wait_until("the job that cannot fit", in_phase(cluster, "obs-other", "cannot-fit", "Unschedulable"))
            [pod] = trainer_pods(cluster, LONG_RUNNING_NAMESPACE, JOB)
            exporter.serve(LONG_RUNNING_NAMESPACE, pod["metadata"]["name"])
            # The pod's ports (metrics, metrics-1), discovered from the pod the operator created, served by the
            # two ranks run here.
            def served(_: str, number: int) -> str:
                return f"127.0.0.1:{trainer_port + number - contract.METRICS_PORT}"
            prometheus.reconfigure([operator_job, pod_monitor_job(chart_pod_monitor(), [pod], served),
                                    dcgm_exporter_job(exporter.address, honor_labels=False)])

            config, ds = trainer_configs(cluster, world, root / "trainer", trainer_port)
            started = time.time()
            trainer = launch(config, ds, root / "trainer", master_port=free_port())

            def enough_history() -> bool:
                assert trainer.poll() is None, (root / "trainer" / "stdout.log").read_text()[-3000:]
                saved = prometheus.query(f'min(kubetune_trainer_checkpoints_total{{finetunejob="{JOB}"}}) >= 3')
                return bool(saved) and time.time() - started > 45
            wait_until("three checkpoints scraped from both ranks", enough_history, timeout=300)
            yield Stack(prometheus, f"http://127.0.0.1:{operator_port}/metrics",
                        [f"http://127.0.0.1:{p}/metrics" for p in trainer_ports], started, pod["metadata"]["name"])
    finally:
        if trainer is not None:
            kill(trainer)
        prometheus.stop()
        for name, namespace in ((JOB, LONG_RUNNING_NAMESPACE), ("parked", "obs-other"), ("cannot-fit", "obs-other")):
            cluster.kubectl("delete", "ftj", name, "-n", namespace, "--wait=false")


def test_every_operator_and_trainer_metric_has_its_type_and_labels(stack: Stack) -> None:
    metadata = stack.prometheus.api("metadata")
    expected = OPERATOR_METRICS | TRAINER_METRICS
    for name, (kind, labels) in expected.items():
        # The text exposition names a counter's family without its _total suffix.
        family = name.removesuffix("_total")
        assert family in metadata, f"{name} was never scraped"
        assert metadata[family][0]["type"] == kind, (name, metadata[family])
        sample = name + ("_count" if kind == "histogram" else "")
        series = stack.prometheus.api("series", **{"match[]": sample})
        assert series, f"no series of {name}"
        for each in series:
            assert set(each) - {"__name__", "job", "instance"} == labels, (name, each)
    for name, kind in OPERATOR_METRICS_ON_ERROR.items():
        assert metadata[name.removesuffix("_total")][0]["type"] == kind
    trainer = stack.prometheus.query(f'kubetune_trainer_step{{finetunejob="{JOB}"}}')
    assert {s["metric"]["rank"] for s in trainer} == {"0", "1"}
    assert {s["metric"]["namespace"] for s in trainer} == {LONG_RUNNING_NAMESPACE}
    assert {s["metric"]["pod"] for s in trainer} == {stack.pod}
    for name in RECORDED:
        assert stack.prometheus.query(f'{name}{{finetunejob="{JOB}"}}'), name


def test_measured_over_predicted_memory_is_the_peak_over_the_plans_prediction(stack: Stack) -> None:
    ratio = float(stack.prometheus.query(f'{RECORDED[0]}{{finetunejob="{JOB}"}}')[0]["value"][1])
    peaks = stack.prometheus.query(f'max(kubetune_trainer_memory_peak_allocated_bytes{{finetunejob="{JOB}"}})')
    predicted = stack.prometheus.query(f'kubetune_finetunejob_predicted_peak_bytes{{finetunejob="{JOB}"}}')
    assert ratio == pytest.approx(float(peaks[0]["value"][1]) / float(predicted[0]["value"][1]), rel=0.05)


def _substitute(expr: str, fleet: bool) -> str:
    return substitute(expr, ".*" if fleet else LONG_RUNNING_NAMESPACE, JOB)


def test_every_dashboard_panel_query_returns_numbers(stack: Stack) -> None:
    empty = []
    for name, board in boards().items():
        fleet = "fleet" in name
        for panel in board["panels"]:
            for target in panel["targets"]:
                result = stack.prometheus.query(_substitute(target["expr"], fleet))
                numbers = [float(s["value"][1]) for s in result if not math.isnan(float(s["value"][1]))]
                if not numbers:
                    empty.append(f"{name} / {panel['title']} / {target['legendFormat']}: {target['expr']}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_dcgm_panels_show_the_training_pods_gpus_under_the_gpu_operators_scrape(stack: Stack) -> None:
    for title, legend, query in job_panel_queries("(DCGM)", LONG_RUNNING_NAMESPACE, JOB):
        if "DCGM_" in query:
            result = stack.prometheus.query(query)
            assert {(s["metric"]["pod"], s["metric"]["gpu"]) for s in result} == {(stack.pod, "0"), (stack.pod, "1")}, \
                (title, legend, result)


def test_every_dashboard_variable_has_values(stack: Stack) -> None:
    for name, board in boards().items():
        for variable in board["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = _substitute(variable["query"]["query"], "fleet" in name)
            inner = query.removeprefix("label_values(").removesuffix(")")
            selector, label = (part.strip() for part in inner.rsplit(",", 1))
            values = stack.prometheus.api(f"label/{label}/values", **{"match[]": selector})
            assert values, (name, variable["name"])
            assert (JOB if label == "finetunejob" else LONG_RUNNING_NAMESPACE) in values


def test_promtool_finds_both_endpoints_clean(stack: Stack) -> None:
    for url in (stack.operator_url, stack.trainer_urls[0]):
        page = urllib.request.urlopen(url, timeout=10).read()
        result = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True)
        assert result.returncode == 0, (url, result.stdout.decode() + result.stderr.decode())


def test_the_job_dashboard_picture_is_drawn_from_prometheus(stack: Stack, tmp_path: Path) -> None:
    from tests.observability import picture  # matplotlib (the test extra): only this test draws

    path = picture.render(stack.prometheus, f'namespace="{LONG_RUNNING_NAMESPACE}", finetunejob="{JOB}"',
                          stack.started, time.time(), tmp_path / "job-dashboard.png",
                          "kubetune / FineTuneJob: a tiny LoRA run, two CPU ranks (tests/observability)")
    assert path.stat().st_size > 20_000
    if os.environ.get("KUBETUNE_UPDATE_DOCS"):
        shutil.copy(path, ROOT / "docs" / "img" / "job-dashboard.png")
