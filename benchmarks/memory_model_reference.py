"""The memory model against published GPU memory: the memory column of the Qwen (v1) README's profiling table
(benchmarks/reference/qwen_v1_memory.yaml says what the figures are and how they are compared; the rows' pinning
is qwen_v1_speed.yaml's, shared with benchmarks/time_model_reference.py).

    .venv/bin/python benchmarks/memory_model_reference.py

Prints, for every row kubetune can plan, the published and predicted memory of the whole run (the predicted
per-GPU peak times the GPUs), the error, then the median error by class of configuration. docs/memory-model.md
shows this output; tests/unit/test_memory_model_reference.py fails when it is stale. A check of the model, not a
fit: nothing here feeds back into a coefficient.
"""

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kubetune.api.vocabulary import Attention, Method, Precision, ZeroStage
from kubetune.planner import architecture, memory
from kubetune.planner.settings import Buckets, Lora, TrainingSettings

REFERENCE = Path(__file__).parent / "reference"
DATA = REFERENCE / "qwen_v1_memory.yaml"
GIB = 1024**3
LONG = 4096  # tokens from which a point is also counted as long context


@dataclass(frozen=True)
class Point:
    model: str
    setting: str
    method: Method
    zero_stage: ZeroStage
    seq_len: int
    gpus: int
    published: float  # GiB, all GPUs together
    predicted: float  # GiB, all GPUs together

    @property
    def error(self) -> float:
        return self.predicted / self.published - 1


def load() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the memory table, the speed table whose models and pinning it shares)."""
    data: dict[str, Any] = yaml.safe_load(DATA.read_text())
    speed: dict[str, Any] = yaml.safe_load((REFERENCE / data["speed"]).read_text())
    return data, speed


def _buckets(data: dict[str, Any], stage: ZeroStage, hidden_size: int) -> Buckets:
    pinned = data["buckets"].get(int(stage))
    if pinned is None or pinned == "for_hidden_size":
        return Buckets.for_hidden_size(hidden_size)
    return Buckets(**pinned)


def points(data: dict[str, Any], speed: dict[str, Any]) -> list[Point]:
    pinning = {(row["model"], row["setting"]): row for row in speed["rows"]}
    lora = Lora(rank=speed["lora"]["rank"], dropout=speed["lora"]["dropout"])
    found = []
    for row in data["rows"]:
        pinned = pinning[(row["model"], row["setting"])]
        if "method" not in pinned:  # a setting kubetune cannot express (LoRA (emb)): the speed file says why
            continue
        arch = architecture.from_hf_config(speed["models"][row["model"]], name=row["model"])
        stage, n = ZeroStage(pinned["zero_stage"]), pinned["nodes"] * pinned["gpus_per_node"]
        for seq_len, published in zip(speed["seq_lens"], row["gigabytes"], strict=True):
            if published is None:
                continue
            settings = TrainingSettings(
                seq_len=seq_len, micro_batch=speed["micro_batch"], gradient_accumulation=speed["gradient_accumulation"],
                precision=Precision(pinned.get("precision", Precision.BF16)), method=Method(pinned["method"]), lora=lora,
                gradient_checkpointing=True, attention=Attention.FLASH_ATTENTION_2, zero_stage=stage,
                buckets=_buckets(data, stage, arch.hidden_size), num_gpus=n, gpus_per_node=pinned["gpus_per_node"])
            predicted = memory.estimate(arch, settings).total_bytes * n / GIB
            found.append(Point(row["model"], row["setting"], settings.method, stage, seq_len, n, published, predicted))
    return found


# The classes the comparison is read by: what holds the memory differs between them.
CLASSES: dict[str, Callable[[Point], bool]] = {
    "LoRA on one GPU": lambda p: p.method is Method.LORA and p.gpus == 1,
    "LoRA, ZeRO-2 on 2 x 2 GPUs": lambda p: p.method is Method.LORA and p.zero_stage is ZeroStage.GRADIENTS,
    "ZeRO-3 (full fine-tuning, 72B LoRA)": lambda p: p.zero_stage is ZeroStage.PARAMETERS,
    "Q-LoRA": lambda p: p.method is Method.QLORA,
    f"long context ({LONG:,} tokens and more)": lambda p: p.seq_len >= LONG,
}


@dataclass(frozen=True)
class Comparison:
    points: list[Point]

    @property
    def median_error(self) -> float:
        return statistics.median(abs(p.error) for p in self.points)

    def by_class(self) -> dict[str, list[Point]]:
        return {name: [p for p in self.points if member(p)] for name, member in CLASSES.items()}


def compare() -> Comparison:
    return Comparison(points(*load()))


def report(comparison: Comparison) -> str:
    lines = ["| model | setting | GPUs | seq | published GiB | predicted GiB | error |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {p.model} | {p.setting} | {p.gpus} | {p.seq_len} | {p.published:g} | {p.predicted:.1f} | "
              f"{p.error:+.0%} |" for p in comparison.points]
    lines += ["", "| class | points | median \\|error\\| | median error | under-predicted |", "|---|---:|---:|---:|---:|"]
    for name, members in comparison.by_class().items():
        if members:
            under = sum(p.error < 0 for p in members)
            lines.append(f"| {name} | {len(members)} | {statistics.median(abs(p.error) for p in members):.1%} | "
                         f"{statistics.median(p.error for p in members):+.1%} | {under} of {len(members)} |")
    lines += ["", f"{len(comparison.points)} points; median |error| {comparison.median_error:.1%}"]
    return "\n".join(lines)


def main() -> None:
    print(report(compare()))


if __name__ == "__main__":
    main()
