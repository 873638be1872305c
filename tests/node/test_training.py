"""A FineTuneJob really trains on the local cluster's real node: two pods of the locally built trainer image
rendezvous through the headless Service's DNS names, the loss falls, progress moves in status while it runs,
checkpoints and the adapter land on the claim, a real Prometheus scrapes both ranks and the job dashboard's
queries return data, and `kubectl logs` works through the kubelet's authorization."""

import json
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest

# The loss is recomputed here and the checkpoints read as the trainer writes them: the trainer extra.
torch = pytest.importorskip("torch")
pytest.importorskip("deepspeed")

from kubetune.devcluster import seed  # noqa: E402
from kubetune.devcluster.cluster import LocalCluster  # noqa: E402
from kubetune.devcluster.node import SIMULATED_LABEL  # noqa: E402
from kubetune.devcluster.profile import FAKE_NODE_ANNOTATION  # noqa: E402
from kubetune.trainer import checkpoints as checkpoints_module  # noqa: E402
from tests.integration.ftj import ROOT, Operator, apply, condition, example, get, trainer_pods  # noqa: E402
from tests.integration.waiting import wait_until  # noqa: E402
from tests.node.conftest import Claims, claim_folder  # noqa: E402
from tests.observability.panels import substitute  # noqa: E402
from tests.observability.prometheus import Prometheus  # noqa: E402
from tests.observability.rendering import render_rules  # noqa: E402
from tests.observability.scrape_configs import chart_pod_monitor, pod_monitor_job, static_job  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.node]

JOB = "tiny-lora"
DASHBOARDS = ROOT / "charts" / "kubetune" / "dashboards"


def _progress_while_running(cluster: LocalCluster, namespace: str, timeout: float) -> tuple[list[int], dict]:
    """Every distinct status.progress.step seen while the job runs, and the job once it ended."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ftj = get(cluster, namespace, "ftj", JOB) or {}
        status = ftj.get("status", {})
        step = status.get("progress", {}).get("step")
        if status.get("phase") == "Running" and step is not None and (not seen or seen[-1] != step):
            seen.append(step)
        if status.get("phase") in ("Succeeded", "Failed"):
            return seen, ftj
        time.sleep(0.5)
    raise AssertionError(f"the job did not end within {timeout:.0f} s; progress seen: {seen}")


def _dashboard_queries(namespace: str) -> list[tuple[str, str]]:
    queries = []
    board = json.loads((DASHBOARDS / "kubetune-job.json").read_text())
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            if "DCGM_" in expr:
                continue  # DCGM exporter, which a node without GPUs does not run
            queries.append((panel["title"], substitute(expr, namespace, JOB)))
    return queries


def test_a_two_pod_job_really_trains_on_the_real_node(cluster: LocalCluster, node_operator: Operator,
                                                       claims: Claims, tmp_path: Path) -> None:
    namespace = claims.namespace
    manifest = example(JOB)
    assert apply(cluster, namespace, manifest).returncode == 0
    ftj = wait_until("a plan", lambda: (f := get(cluster, namespace, "ftj", JOB)) and f.get("status", {}).get("plan")
                     and f)
    plan = ftj["status"]["plan"]
    assert (plan["gpuType"], plan["nodes"], plan["gpusPerNode"]) == ("A10G-24GB", 2, 1)

    pods = wait_until("both pods running", lambda: (p := trainer_pods(cluster, namespace, JOB)) and len(p) == 2 and
                      all(pod["status"].get("phase") == "Running" for pod in p) and p, timeout=180)
    for pod in pods:
        node = get(cluster, "default", "node", pod["spec"]["nodeName"])
        assert node["metadata"]["labels"][SIMULATED_LABEL] == "true"  # the real node, not a kwok one
        assert FAKE_NODE_ANNOTATION not in node["metadata"].get("annotations", {})
    assert len({pod["status"]["podIP"] for pod in pods}) == 2

    # The pods as discovered through the chart's PodMonitor: their IPs and metrics ports.
    prometheus = Prometheus(tmp_path, [pod_monitor_job(chart_pod_monitor(), pods),
                                       static_job("kubetune-metrics", [f"127.0.0.1:{node_operator.metrics_port}"])],
                            render_rules(tmp_path / "rules.yaml"))
    prometheus.start()
    try:
        seen, ftj = _progress_while_running(cluster, namespace, timeout=600)
        assert ftj["status"]["phase"] == "Succeeded", ftj["status"]
        # Read from rank 0 while it ran, and moving.
        assert len(seen) >= 2 and seen == sorted(seen), seen
        assert ftj["status"]["progress"]["summary"] == f"{manifest['spec']['training']['maxSteps']}" \
            f"/{manifest['spec']['training']['maxSteps']}"

        # The pods have ended, so their series are stale now: what was scraped while they ran.
        ranks = prometheus.query(f'last_over_time(kubetune_trainer_step{{finetunejob="{JOB}"}}[10m])')
        assert {s["metric"]["rank"] for s in ranks} == {"0", "1"}
        assert {s["metric"]["pod"] for s in ranks} == {pod["metadata"]["name"] for pod in pods}
        empty = [f"{title}: {expr}" for title, expr in _dashboard_queries(namespace)
                 if not [s for s in prometheus.query_range(expr, time.time() - 600, time.time(), 5)
                         if any(not math.isnan(float(v)) for _, v in s["values"])]]
        assert not empty, "job dashboard panels without data:\n" + "\n".join(empty)
    finally:
        prometheus.stop()

    assert condition(ftj, "Succeeded")["status"] == "True"
    # Through the apiserver to the real kubelet, which checks the apiserver's client certificate and asks it
    # to authorize the request.
    rank0 = next(p for p in pods if p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "0")
    logs = cluster.kubectl("logs", "-n", namespace, rank0["metadata"]["name"])
    assert logs.returncode == 0, logs.stderr
    steps = str(manifest["spec"]["training"]["maxSteps"])
    logged = re.findall(r"^step (\d+)/(\d+) loss ([0-9.]+)", logs.stdout, re.MULTILINE)
    assert logged and logged[-1][:2] == (steps, steps), logs.stdout[-2000:]
    assert "saved the adapter to /output/final" in logs.stdout

    output = claim_folder(cluster, namespace, claims.output)
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    steps = manifest["spec"]["training"]["maxSteps"]
    assert [entry["step"] for entry in log] == list(range(1, steps + 1))
    first, last = sum(e["loss"] for e in log[:5]) / 5, sum(e["loss"] for e in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    # keepCheckpoints (2 by default): the two newest stay.
    checkpoints = sorted(p.name for p in (output / "checkpoints").iterdir() if p.is_dir())
    interval = manifest["spec"]["checkpointIntervalSteps"]
    assert checkpoints == [checkpoints_module.tag(steps - interval), checkpoints_module.tag(steps)], checkpoints
    _adapter_reproduces_the_trained_loss(output / "final", claim_folder(cluster, namespace, claims.data), last)


def _adapter_reproduces_the_trained_loss(adapter: Path, data: Path, trained_loss: float) -> None:
    """The saved adapter on the same random base (same seed, same config) scores the training data about as
    well as the last steps did, and far better than the base alone."""
    import peft
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kubetune.trainer import data as trainer_data

    spec = example(JOB)["spec"]
    config = dict(spec["model"]["config"])
    torch.manual_seed(spec["training"].get("seed", 42))
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model(config.pop("model_type"), **config),
                                            attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(data / seed.TOKENIZER_FOLDER)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = [trainer_data.encode(r, "Instruction", tokenizer, spec["training"]["seqLen"])
                for r in trainer_data.read_records(str(data / seed.DATASET_FILE))]
    batch = trainer_data.Batches(examples, len(examples), 1, 0, 1, 0).batch(0, 0)

    def loss(model: Any) -> float:
        model.eval()
        with torch.no_grad():
            return float(model(**batch).loss)

    base_loss = loss(base)
    tuned_loss = loss(peft.PeftModel.from_pretrained(base, str(adapter)))
    assert tuned_loss < 0.8 * base_loss, (base_loss, tuned_loss)
    assert tuned_loss == pytest.approx(trained_loss, rel=0.35), (tuned_loss, trained_loss)
