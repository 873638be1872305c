"""The job dashboard's key series, drawn from Prometheus into a PNG (docs/img/job-dashboard.png), so a reader
sees what a run looks like without a Grafana."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tests.observability.prometheus import Prometheus  # noqa: E402

PANELS = (
    # Gauges read 0 until the first step ends; `and step > 0` leaves that out.
    ("Loss (rank 0)", "", (('kubetune_trainer_loss{{{job}, rank="0"}} and kubetune_trainer_step > 0', "loss"),)),
    ("Tokens per second", "tokens/s", (("sum(rate(kubetune_trainer_tokens_total{{{job}}}[10s]))", "measured, all ranks"),
                                       ("kubetune_finetunejob_predicted_tokens_per_second{{{job}}}", "predicted (planned GPU)"))),
    ("Memory per rank", "GiB", (("(kubetune_trainer_memory_peak_allocated_bytes{{{job}}} and kubetune_trainer_step > 0)"
                                 " / 2^30", "peak rank {rank}"),
                                ("(kubetune_trainer_memory_allocated_bytes{{{job}}} and kubetune_trainer_step > 0)"
                                 " / 2^30", "allocated rank {rank}"),
                                ("kubetune_finetunejob_predicted_peak_bytes{{{job}}} / 2^30", "predicted peak (planned GPU)"))),
    ("Step time", "s", (("histogram_quantile(0.5, sum by (le) (rate(kubetune_trainer_step_duration_seconds_bucket{{{job}}}[30s])))", "p50"),
                        ("histogram_quantile(0.9, sum by (le) (rate(kubetune_trainer_step_duration_seconds_bucket{{{job}}}[30s])))", "p90"))),
    ("Learning rate (rank 0)", "", (('kubetune_trainer_learning_rate{{{job}, rank="0"}}', "learning rate"),)),
    ("Progress", "steps", (('kubetune_trainer_step{{{job}, rank="0"}}', "step"),)),
)


def render(prometheus: Prometheus, selector: str, start: float, end: float, path: Path, title: str) -> Path:
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5), constrained_layout=True)
    for axis, (name, unit, queries) in zip(axes.flat, PANELS, strict=True):
        for expr, legend in queries:
            for series in prometheus.query_range(expr.format(job=selector), start, end, 1):
                times = [float(t) - start for t, _ in series["values"]]
                values = [float(v) for _, v in series["values"]]
                label = legend.format(**series["metric"]) if "{" in legend else legend
                style = "--" if "predicted" in legend else "-"
                axis.plot(times, values, style, label=label)
        if name == "Tokens per second":
            axis.set_yscale("log")  # the planned GPU's prediction is orders above two CPU ranks
        axis.set_title(name)
        axis.set_xlabel("seconds")
        if unit:
            axis.set_ylabel(unit)
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.suptitle(title)
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return path
