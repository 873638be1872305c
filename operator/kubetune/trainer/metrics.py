"""Per-rank Prometheus metrics (kubetune_trainer_*), served on the metrics port plus the local rank.

Every series carries `finetunejob` (the operator's per-job label, so the two join), `rank` and `gpu_type`.
`namespace` and `pod` are not the trainer's to say: the scrape attaches the target's own (the chart's PodMonitor
keeps them against any exposed label), so a pod cannot pass its series off as another namespace's. Throughput
is counted (tokens, samples), for rate() to turn into per-second figures over any window."""

import os
import resource
import time

import psutil
import torch
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("finetunejob", "rank", "gpu_type")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class TrainerMetrics:
    def __init__(self, job: str, rank: int, gpu_type: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"finetunejob": job, "rank": str(rank), "gpu_type": gpu_type}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=self.registry).labels(**self.labels)

        # On a CPU-only run (the tests) the memory series report the process: resident set for allocated and
        # reserved, its high-water mark for peak, the machine's RAM for the device total.
        self.memory_allocated = gauge("kubetune_trainer_memory_allocated_bytes", "Memory allocated by torch on the "
                                      "rank's GPU after the last step.")
        self.memory_reserved = gauge("kubetune_trainer_memory_reserved_bytes", "Memory reserved by torch's caching "
                                     "allocator after the last step.")
        self.memory_peak = gauge("kubetune_trainer_memory_peak_allocated_bytes", "Peak memory allocated so far.")
        self.memory_total = gauge("kubetune_trainer_memory_device_total_bytes", "The training device's memory.")
        self.memory_predicted = gauge("kubetune_trainer_memory_predicted_peak_bytes", "The plan's predicted peak.")
        self.tokens = Counter("kubetune_trainer_tokens_total", "Tokens trained on by this rank.", LABELS,
                              registry=self.registry).labels(**self.labels)
        self.samples = Counter("kubetune_trainer_samples_total", "Sequences trained on by this rank.", LABELS,
                               registry=self.registry).labels(**self.labels)
        self.loss = gauge("kubetune_trainer_loss", "Training loss of the last optimizer step.")
        self.learning_rate = gauge("kubetune_trainer_learning_rate", "Learning rate of the last optimizer step.")
        self.mfu = gauge("kubetune_trainer_model_flops_utilization_ratio", "Model FLOPs utilisation (0-1); "
                         "absent off GPU.")
        self.step = gauge("kubetune_trainer_step", "Optimizer steps done.")
        self.total_steps = gauge("kubetune_trainer_total_steps", "Optimizer steps planned.")
        self.last_step = gauge("kubetune_trainer_last_step_timestamp_seconds", "Unix time the last optimizer step "
                               "ended (the stall alert's clock).")
        self.step_seconds = Histogram("kubetune_trainer_step_duration_seconds", "Wall time of one optimizer step.",
                                      LABELS, registry=self.registry,
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)).labels(**self.labels)
        self.checkpoint_seconds = Histogram("kubetune_trainer_checkpoint_save_seconds", "Wall time of a checkpoint save.",
                                            LABELS, registry=self.registry,
                                            buckets=(0.1, 0.5, 1, 5, 15, 60, 300)).labels(**self.labels)
        self.checkpoints = Counter("kubetune_trainer_checkpoints_total", "Checkpoints saved.", LABELS,
                                   registry=self.registry).labels(**self.labels)

    def serve(self, port: int) -> None:
        start_http_server(port, addr="0.0.0.0", registry=self.registry)

    def record_step(self, step: int, seconds: float, samples: int, seq_len: int, flops_per_token: float | None,
                    loss: float, lr: float) -> None:
        self.step.set(step)
        self.last_step.set(time.time())
        self.step_seconds.observe(seconds)
        self.tokens.inc(samples * seq_len)
        self.samples.inc(samples)
        self.loss.set(loss)
        self.learning_rate.set(lr)
        if flops_per_token:
            self.mfu.set(flops_per_token * samples * seq_len / seconds)
        if torch.cuda.is_available():
            self.memory_allocated.set(torch.cuda.memory_allocated())
            self.memory_reserved.set(torch.cuda.memory_reserved())
            self.memory_peak.set(torch.cuda.max_memory_allocated())
            self.memory_total.set(torch.cuda.get_device_properties(0).total_memory)
        else:
            resident = psutil.Process().memory_info().rss
            self.memory_allocated.set(resident)
            self.memory_reserved.set(resident)
            self.memory_peak.set(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
            self.memory_total.set(os.sysconf("SC_PHYS_PAGES") * _PAGE)
