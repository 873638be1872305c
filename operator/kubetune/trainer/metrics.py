"""Per-rank Prometheus metrics (kubetune_trainer_*), served on the metrics port plus the local rank."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LABELS = ("job", "rank", "gpu_type")


class TrainerMetrics:
    def __init__(self, job: str, rank: int, gpu_type: str) -> None:
        self.registry = CollectorRegistry()
        self.labels = {"job": job, "rank": str(rank), "gpu_type": gpu_type}

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, LABELS, registry=self.registry).labels(**self.labels)

        self.memory_allocated = gauge("kubetune_trainer_memory_allocated_bytes", "GPU memory allocated by torch, per 'rank'.")
        self.memory_reserved = gauge("kubetune_trainer_memory_reserved_bytes", "GPU memory reserved by torch's allocator.")
        self.memory_peak = gauge("kubetune_trainer_memory_peak_allocated_bytes", "Peak GPU memory allocated so far.")
        self.memory_total = gauge("kubetune_trainer_memory_device_total_bytes", "The GPU's total memory.")
        self.memory_predicted = gauge("kubetune_trainer_memory_predicted_peak_bytes", "The plan's predicted peak.")
        self.tokens_per_second = gauge("kubetune_trainer_tokens_per_second", "Tokens per second on this rank.")
        self.samples_per_second = gauge("kubetune_trainer_samples_per_second", "Sequences per second on this rank.")
        self.loss = gauge("kubetune_trainer_loss", "Training loss of the last optimizer step.")
        self.learning_rate = gauge("kubetune_trainer_learning_rate", "Learning rate of the last optimizer step.")
        self.mfu = gauge("kubetune_trainer_model_flops_utilization_ratio", "Model FLOPs utilisation (0-1).")
        self.step = gauge("kubetune_trainer_step", "Optimizer steps done.")
        self.total_steps = gauge("kubetune_trainer_total_steps", "Optimizer steps planned.")
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
