"""Progress read from the trainer's metrics page."""

import pytest
from prometheus_client import generate_latest

from kubetune.controller import progress


@pytest.mark.torch
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


def test_the_page_as_prometheus_writes_it_comments_labels_exponents_and_timestamps() -> None:
    page = """# HELP kubetune_trainer_step Optimizer steps done.
# TYPE kubetune_trainer_step gauge
kubetune_trainer_step{namespace="ns",finetunejob="a b",pod="p-0",rank="0",gpu_type="H100-SXM-80GB"} 3.0e+02 1700000000000
# a comment between series
kubetune_trainer_total_steps{finetunejob="label with } and \\" in it"} 1.2E3
kubetune_trainer_step_duration_seconds_sum{rank="0"} 600.0
kubetune_trainer_step_duration_seconds_count{rank="0"} 300
"""
    parsed = progress.parse(page)
    # The value, not the trailing timestamp, is the step.
    assert (parsed.step, parsed.total_steps, parsed.eta_seconds, parsed.summary) == (300, 1200, 1800, "300/1200")


def test_a_value_that_is_not_a_number_counts_as_absent() -> None:
    assert progress.parse("kubetune_trainer_step NaN\n") is None
    parsed = progress.parse("kubetune_trainer_step 5\nkubetune_trainer_total_steps +Inf\n")
    assert (parsed.step, parsed.total_steps, parsed.eta_seconds, parsed.summary) == (5, None, None, "5")
    parsed = progress.parse("kubetune_trainer_step 5\nkubetune_trainer_total_steps 10\n"
                            "kubetune_trainer_step_duration_seconds_sum NaN\n"
                            "kubetune_trainer_step_duration_seconds_count 5\n")
    assert (parsed.total_steps, parsed.eta_seconds) == (10, None)


def test_no_eta_before_the_first_step_time_and_zero_past_the_end() -> None:
    before = progress.parse("kubetune_trainer_step 0\nkubetune_trainer_total_steps 10\n"
                            "kubetune_trainer_step_duration_seconds_count 0\n")
    assert (before.step, before.total_steps, before.eta_seconds) == (0, 10, None)
    past = progress.parse("kubetune_trainer_step 12\nkubetune_trainer_total_steps 10\n"
                          "kubetune_trainer_step_duration_seconds_sum 24\n"
                          "kubetune_trainer_step_duration_seconds_count 12\n")
    assert (past.summary, past.eta_seconds) == ("12/10", 0)


def test_a_page_that_is_not_prometheus_text_gives_no_progress() -> None:
    assert progress.parse("<html>502 Bad Gateway</html>\n") is None
    assert progress.parse("") is None
    # Other metrics' names that start like the trainer's are not taken for them.
    assert progress.parse("kubetune_trainer_step_duration_seconds_count 5\nkubetune_trainer_steps 7\n") is None
