"""The dashboards the chart ships are the generated ones, every panel says its unit and data source, and the
operator's per-job series follow a job's phase and disappear with it."""

import uuid

import pytest

from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import Attention, Method, Offload, Phase, Precision, ZeroStage
from kubetune.controller import metrics
from kubetune.observability import dashboards
from tests.conftest import ROOT


def test_chart_dashboards_are_the_generated_ones() -> None:
    written = {p.name: p.read_text() for p in (ROOT / dashboards.CHART_DASHBOARDS).glob("*.json")}
    generated = {name: dashboards.render(content) for name, content in dashboards.all_dashboards().items()}
    assert written == generated, "stale: run `kubetune dashboards --write` from the repository root"


@pytest.mark.parametrize("name", sorted(dashboards.all_dashboards()))
def test_every_panel_has_a_unit_a_templated_datasource_and_queries(name: str) -> None:
    board = dashboards.all_dashboards()[name]
    variables = [v["name"] for v in board["templating"]["list"]]
    assert variables[:2] == ["datasource", "namespace"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all("$namespace" in t["expr"] or "fleet" in name for t in panel["targets"])
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def _plan() -> api.Plan:
    memory = api.MemoryBreakdown(weights_bytes=1, gradients_bytes=1, optimizer_states_bytes=1, activations_bytes=1,
                                 logits_bytes=1, buffers_bytes=1, overhead_bytes=1, allocator_margin_bytes=1,
                                 total_bytes=8, peak_phase=Phase.OPTIMIZER_STEP, host_bytes_per_node=0)
    return api.Plan(gpu_type="L4-24GB", gpu_product="NVIDIA-L4", gpu_memory_bytes=80, nodes=1, gpus_per_node=2,
                    gpus=2, peak_summary="x", method=Method.LORA, zero_stage=ZeroStage.GRADIENTS, offload=Offload.NONE,
                    gradient_checkpointing=True, attention=Attention.SDPA, precision=Precision.BF16, micro_batch=1,
                    gradient_accumulation=1,
                    predicted_peak_bytes=8, memory=memory, predicted_step_milliseconds=1,
                    predicted_tokens_per_second=100, explanation=[])


def _value(name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_job_series_follow_the_phase_and_vanish_with_the_job() -> None:
    # metrics.registry is the process's one registry: a namespace of its own, so that series another test left
    # there do not count here.
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    series = metrics.JobSeries()
    series.observe(ns, "a", "Planned", _plan())
    series.observe(ns, "b", "Running", _plan())
    assert _value("kubetune_finetunejobs", namespace=ns, phase="Planned") == 1
    assert _value("kubetune_finetunejob_gpus_requested", namespace=ns, finetunejob="a", gpu_type="L4-24GB") == 2
    series.observe(ns, "a", "Running", _plan())
    assert _value("kubetune_finetunejobs", namespace=ns, phase="Planned") == 0
    assert _value("kubetune_finetunejobs", namespace=ns, phase="Running") == 2
    assert _value("kubetune_finetunejob_phase", namespace=ns, finetunejob="a", phase="Running") == 1
    assert _value("kubetune_finetunejob_phase", namespace=ns, finetunejob="a", phase="Planned") == 0

    series.observe(ns, "a", "Succeeded", _plan())  # a finished job holds no GPUs
    assert _value("kubetune_finetunejob_gpus_requested", namespace=ns, finetunejob="a", gpu_type="L4-24GB") is None
    series.forget(ns, "a")
    assert _value("kubetune_finetunejobs", namespace=ns, phase="Succeeded") == 0
    assert _value("kubetune_finetunejob_phase", namespace=ns, finetunejob="a", phase="Succeeded") is None
    assert _value("kubetune_finetunejob_predicted_peak_bytes", namespace=ns, finetunejob="a") is None
    assert _value("kubetune_finetunejob_predicted_peak_bytes", namespace=ns, finetunejob="b") == 8
    series.forget(ns, "b")
    series.forget(ns, "b")  # a second deletion event changes nothing
    assert _value("kubetune_finetunejobs", namespace=ns, phase="Running") == 0
