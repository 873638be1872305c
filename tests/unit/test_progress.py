"""Progress read from the trainer's metrics page."""

from prometheus_client import generate_latest

from kubetune.controller import progress


def test_progress_and_eta_from_the_trainers_own_metrics() -> None:
    from kubetune.trainer.metrics import TrainerMetrics

    metrics = TrainerMetrics("job", 0, "H100-SXM-80GB")
    metrics.total_steps.set(1000)
    for _ in range(250):
        metrics.step_seconds.observe(2.0)
    metrics.step.set(250)
    parsed = progress.parse(generate_latest(metrics.registry).decode())
    assert (parsed.step, parsed.total_steps, parsed.eta_seconds, parsed.summary) == (250, 1000, 1500, "250/1000")


def test_a_page_without_trainer_metrics_gives_no_progress() -> None:
    assert progress.parse("# HELP up\nup 1\n") is None
