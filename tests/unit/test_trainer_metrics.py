"""The trainer's memory series on a CPU-only run: the process's resident set, read through psutil."""

import os

import psutil
import pytest

torch = pytest.importorskip("torch")

from kubetune.trainer.metrics import TrainerMetrics  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the series are torch's CUDA allocator's")
def test_a_cpu_run_reports_the_resident_set_and_the_machines_memory() -> None:
    metrics = TrainerMetrics("job", 0, "CPU")
    before = psutil.Process().memory_info().rss
    metrics.record_step(step=1, seconds=0.5, samples=2, seq_len=8, flops_per_token=None, loss=1.0, lr=1e-4)
    after = psutil.Process().memory_info().rss
    allocated = metrics.registry.get_sample_value("kubetune_trainer_memory_allocated_bytes", metrics.labels)
    reserved = metrics.registry.get_sample_value("kubetune_trainer_memory_reserved_bytes", metrics.labels)
    peak = metrics.registry.get_sample_value("kubetune_trainer_memory_peak_allocated_bytes", metrics.labels)
    total = metrics.registry.get_sample_value("kubetune_trainer_memory_device_total_bytes", metrics.labels)
    assert allocated == reserved and min(before, after) * 0.9 <= allocated <= max(before, after) * 1.1
    assert allocated <= peak * 1.1 and total == os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
