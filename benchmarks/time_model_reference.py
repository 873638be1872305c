"""The time model against published step times: the speed column of the Qwen (v1) README's profiling table
(benchmarks/reference/qwen_v1_speed.yaml says where from, under what conditions, and how each row is pinned).

    .venv/bin/python benchmarks/time_model_reference.py

Prints, for every row kubetune can plan, the predicted and published seconds per iteration, then the median
error and the pairwise ranking agreement: of every two configurations of one model (any setting and
sequence length) whose published tokens/s per GPU differ by more than 5 %, the share the model orders the
same way. docs/time-model.md shows this output; tests/unit/test_time_model_reference.py fails when it is
stale. A check of the model, not a fit: nothing here feeds back into a coefficient.
"""

import statistics
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.vocabulary import Attention, Method, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, throughput
from kubetune.planner.settings import Buckets, Lora, TrainingSettings

DATA = Path(__file__).parent / "reference" / "qwen_v1_speed.yaml"
TIE = 0.05  # the table gives two significant figures: closer pairs are not ordered by it


@dataclass(frozen=True)
class Point:
    model: str
    setting: str
    seq_len: int
    gpus: int
    published: float  # seconds per iteration
    predicted: float

    @property
    def error(self) -> float:
        return self.predicted / self.published - 1

    def tokens_per_gpu_second(self, seconds: float, tokens_per_step: int) -> float:
        return tokens_per_step * self.seq_len / seconds


def load() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DATA.read_text())
    return data


def points(data: dict[str, Any]) -> list[Point]:
    gpu = gpus.by_id(data["gpu"])
    lora = Lora(rank=data["lora"]["rank"], dropout=data["lora"]["dropout"])
    found = []
    for row in data["rows"]:
        if "not_predicted" in row:
            continue
        arch = architecture.from_hf_config(data["models"][row["model"]], name=row["model"])
        n = row["nodes"] * row["gpus_per_node"]
        for seq_len, published in zip(data["seq_lens"], row["seconds"], strict=True):
            if published is None:
                continue
            settings = TrainingSettings(
                seq_len=seq_len, micro_batch=data["micro_batch"], gradient_accumulation=data["gradient_accumulation"],
                precision=Precision.BF16, method=Method(row["method"]), lora=lora, gradient_checkpointing=True,
                attention=Attention.FLASH_ATTENTION_2, zero_stage=ZeroStage(row["zero_stage"]),
                buckets=Buckets.for_hidden_size(arch.hidden_size), num_gpus=n, gpus_per_node=row["gpus_per_node"])
            predicted = throughput.step_time(arch, settings, gpu).step_seconds
            found.append(Point(row["model"], row["setting"], seq_len, n, published, predicted))
    return found


def ranking(found: list[Point], tokens_per_step: int) -> tuple[int, int]:
    """(agreeing, compared) pairs of one model's configurations, on tokens/s per GPU."""
    agree = compared = 0
    for a, b in combinations(found, 2):
        if a.model != b.model:
            continue
        published = (a.tokens_per_gpu_second(a.published, tokens_per_step),
                     b.tokens_per_gpu_second(b.published, tokens_per_step))
        if abs(published[0] / published[1] - 1) <= TIE:
            continue
        predicted = (a.tokens_per_gpu_second(a.predicted, tokens_per_step),
                     b.tokens_per_gpu_second(b.predicted, tokens_per_step))
        compared += 1
        agree += (published[0] > published[1]) == (predicted[0] > predicted[1])
    return agree, compared


@dataclass(frozen=True)
class Comparison:
    points: list[Point]
    median_error: float  # of |predicted / published - 1|
    agreeing_pairs: int
    compared_pairs: int

    @property
    def agreement(self) -> float:
        return self.agreeing_pairs / self.compared_pairs


def compare() -> Comparison:
    data = load()
    found = points(data)
    agree, compared = ranking(found, data["micro_batch"] * data["gradient_accumulation"])
    return Comparison(found, statistics.median(abs(p.error) for p in found), agree, compared)


def report(comparison: Comparison) -> str:
    lines = ["| model | setting | GPUs | seq | published s/it | predicted s/it | error |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {p.model} | {p.setting} | {p.gpus} | {p.seq_len} | {p.published:g} | {p.predicted:.2f} | "
              f"{p.error:+.0%} |" for p in comparison.points]
    lines += ["", f"{len(comparison.points)} points; median |error| {comparison.median_error:.1%}; ranking agreement "
              f"{comparison.agreement:.1%} ({comparison.agreeing_pairs} of {comparison.compared_pairs} pairs of one "
              "model's configurations)"]
    return "\n".join(lines)


def main() -> None:
    print(report(compare()))


if __name__ == "__main__":
    main()
