"""Who says which namespace and pod a series is from, proven with a real Prometheus scraping as Prometheus
Operator would (tests/observability/scrape_configs.py): through the chart's PodMonitor a training pod's series
keep the namespace and pod it was discovered in, whatever labels it exposes; and the job dashboard's DCGM panels
show the training pod's GPUs whether DCGM exporter is scraped with honorLabels false (the GPU Operator's
default, which renames its pod labels exported_*) or true. The trainer side is the real trainer's metrics
(kubetune.trainer.metrics) after one optimizer step."""

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from kubetune.api import contract
from kubetune.resources import names
from tests.integration.waiting import wait_until
from tests.observability import dcgm
from tests.observability.panels import job_panel_queries
from tests.observability.prometheus import Prometheus, free_port
from tests.observability.scrape_configs import Address, chart_pod_monitor, dcgm_exporter_job, pod_monitor_job

pytest.importorskip("torch")  # the trainer's metrics module reads the device through torch
pytestmark = [pytest.mark.tools, pytest.mark.torch]

JOB = "tiny"
NAMESPACE = "team-a"
POD = "tiny-train-0-x8m2q"


def _pod(namespace: str, name: str, labels: dict[str, str]) -> dict[str, Any]:
    """A pod as the apiserver returns it, with the trainer container's ports as the operator's Job declares
    them (resources/job.py)."""
    ports = [{"name": "rendezvous", "containerPort": contract.RENDEZVOUS_PORT},
             {"name": "metrics", "containerPort": contract.METRICS_PORT}]
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels},
            "spec": {"containers": [{"name": "trainer", "ports": ports}]},
            "status": {"phase": "Running", "podIP": "10.244.1.7"}}


def _served(ports: dict[str, int]) -> Address:
    """Where each pod's metrics port is really served here (pod name -> local port); its other ports nowhere,
    as the PodMonitor drops them before any scrape."""
    return lambda pod, number: f"127.0.0.1:{ports[pod] if number == contract.METRICS_PORT else 1}"


@pytest.fixture(scope="module")
def trainer() -> int:
    """The real trainer's metrics page, after a step, on a port of its own."""
    from kubetune.trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics(JOB, 0, "L4-24GB")
    port = free_port()
    metrics.serve(port)
    metrics.record_step(1, 0.5, samples=4, seq_len=48, flops_per_token=None, loss=2.0, lr=1e-4)
    return port


class _Forger(BaseHTTPRequestHandler):
    """A pod that names another team's namespace, pod and job on its series."""

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(b'# TYPE kubetune_trainer_step gauge\nkubetune_trainer_step{namespace="team-a",'
                         b'pod="tiny-train-0-x8m2q",finetunejob="forged",rank="0",gpu_type="L4-24GB"} 99\n')

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def forger() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Forger)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def started() -> Iterator[list[Prometheus]]:
    """The test's Prometheus, stopped afterwards."""
    running: list[Prometheus] = []
    try:
        yield running
    finally:
        for each in running:
            each.stop()


def _start(root: Path, jobs: list[dict[str, Any]], running: list[Prometheus]) -> Prometheus:
    prometheus = Prometheus(root, jobs)
    running.append(prometheus)
    prometheus.start()
    return prometheus


def test_a_training_pod_cannot_file_its_series_under_another_namespace(
        trainer: int, forger: int, tmp_path: Path, started: list[Prometheus]) -> None:
    monitor = chart_pod_monitor()
    pods = [_pod(NAMESPACE, POD, names.labels(JOB, "trainer")),
            _pod("team-b", "mine-train-0-q4r9z", names.labels("mine", "trainer")),
            # Not a trainer: the PodMonitor's selector leaves its metrics port alone.
            _pod("team-b", "web-0", {"app": "web"})]
    served = _served({POD: trainer, "mine-train-0-q4r9z": forger, "web-0": forger})
    prometheus = _start(tmp_path, [pod_monitor_job(monitor, pods, served)], started)

    series = wait_until("both trainers scraped", lambda: len(s := prometheus.query("kubetune_trainer_step")) == 2
                        and s)
    by_job = {s["metric"]["finetunejob"]: s["metric"] for s in series}
    assert by_job["forged"]["namespace"] == "team-b" and by_job["forged"]["pod"] == "mine-train-0-q4r9z"
    # What it claimed is kept aside, where no query of the chart's looks.
    assert (by_job["forged"]["exported_namespace"], by_job["forged"]["exported_pod"]) == (NAMESPACE, POD)
    # The real trainer exposes no namespace or pod of its own: it gets its pod's, and nothing is renamed.
    assert {k: by_job[JOB][k] for k in ("namespace", "pod", "container", "rank", "gpu_type")} == {
        "namespace": NAMESPACE, "pod": POD, "container": "trainer", "rank": "0", "gpu_type": "L4-24GB"}
    assert not [k for k in by_job[JOB] if k.startswith("exported_")], by_job[JOB]
    assert {s["metric"]["finetunejob"] for s in prometheus.query(f'kubetune_trainer_step{{namespace="{NAMESPACE}"}}')} \
        == {JOB}
    assert by_job[JOB]["job"] == "kubetune-system/kubetune-trainers"
    # Throughput is counted, for rate(): the step's 4 sequences of 48 tokens.
    counted = {s["metric"]["__name__"]: float(s["value"][1])
               for s in prometheus.query('{__name__=~"kubetune_trainer_(tokens|samples)_total"}')}
    assert counted == {"kubetune_trainer_tokens_total": 192, "kubetune_trainer_samples_total": 4}


@pytest.mark.parametrize("honor_labels", [False, True], ids=["honorLabels-false-gpu-operator-default",
                                                              "honorLabels-true"])
def test_the_dcgm_panels_show_the_training_pods_gpus(honor_labels: bool, trainer: int, tmp_path: Path,
                                                      started: list[Prometheus]) -> None:
    with dcgm.exporter() as exporter:
        exporter.serve(NAMESPACE, POD)
        prometheus = _start(tmp_path, [
            pod_monitor_job(chart_pod_monitor(), [_pod(NAMESPACE, POD, names.labels(JOB, "trainer"))],
                            _served({POD: trainer})),
            dcgm_exporter_job(exporter.address, honor_labels)], started)
        wait_until("the trainer and DCGM exporter scraped", lambda: prometheus.query("kubetune_trainer_step")
                   and len(prometheus.query("DCGM_FI_DEV_FB_USED")) == 3)

        # The scrape really is as described: renamed under honorLabels false, the pod's own under true.
        raw = {s["metric"]["gpu"]: s["metric"] for s in prometheus.query("DCGM_FI_DEV_GPU_UTIL")}
        training_pod = "exported_pod" if not honor_labels else "pod"
        assert raw["0"][training_pod] == POD and raw["0"].get("exported_pod" if honor_labels else "pod") != POD

        panels = {(title, legend): query for title, legend, query in job_panel_queries("(DCGM)", NAMESPACE, JOB)}
        expected = {("GPU utilisation (DCGM)", "{{pod}} GPU {{gpu}}"): {g: float(v) for g, v in dcgm.UTILIZATION.items()},
                    ("GPU memory used (DCGM)", "{{pod}} GPU {{gpu}}"): {g: v * 2.0**20 for g, v in dcgm.FB_USED_MIB.items()}}
        for key, values in expected.items():
            result = prometheus.query(panels[key])
            assert {s["metric"]["pod"] for s in result} == {POD}, (key, result)
            # The idle GPU 2 belongs to no pod, so it is no GPU of the job's.
            assert {s["metric"]["gpu"]: float(s["value"][1]) for s in result} == {g: values[g] for g in ("0", "1")}
