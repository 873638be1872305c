"""Every benchmark under benchmarks/ in its smoke mode, as a user runs it (a subprocess of this Python): it must
exit 0, print its table with the columns docs/benchmarks.md shows, and leave its raw output where it says, in
a temporary folder. The figures themselves are not checked: smoke sizes say nothing about them.

The GPU benchmarks' smoke modes run their pipeline on the CPU with a tiny model; scale.py's runs a few jobs on
the test session's cluster."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.devcluster.cluster import LocalCluster

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ROOT / "benchmarks"
TIMEOUT = 540  # under pytest's 600 s per test


def run_benchmark(script: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=TIMEOUT, check=False, env={**os.environ, **(env or {})})
    assert result.returncode == 0, (f"{script} {' '.join(args)} exited {result.returncode}\n"
                                    f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}")
    return result.stdout


def table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The first markdown table printed: its header's column names and its rows' cells."""
    lines = [line.strip() for line in stdout.splitlines()]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip("|").split("|")])
    header, separator, *rows = block
    assert all(re.fullmatch(r"-+:?", cell) for cell in separator), separator
    return header, rows


def raw_output(stdout: str) -> Path:
    """The path the benchmark says it saved its raw output to: a temporary one, never the repository."""
    found = re.search(r"^raw output[^:]*: (\S+)$", stdout, re.MULTILINE)
    assert found, f"no 'raw output: PATH' line in:\n{stdout}"
    path = Path(found[1])
    assert path.exists(), path
    assert ROOT not in path.parents, f"smoke mode wrote into the repository: {path}"
    return path


def number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("%").split()[0])


def test_plan_speed() -> None:
    header, rows = table(run_benchmark("plan_speed.py", "--smoke"))
    assert header == ["model", "candidates", "median ms", "max ms", "chosen"]
    assert [row[0] for row in rows] == ["meta-llama/Llama-3.1-405B", "tiiuae/falcon-180B", "meta-llama/Llama-3.1-70B",
                                        "meta-llama/Llama-3.1-8B"]
    for model, candidates, median, worst, chosen in rows:
        assert int(candidates) > 0 and 0 < number(median) <= number(worst), model
        assert re.fullmatch(r"\S+ x\d+", chosen), f"{model}: {chosen}"


@pytest.mark.measured
def test_trainer_overhead() -> None:
    stdout = run_benchmark("trainer_overhead.py", "--smoke", env={"DS_ACCELERATOR": "cpu"})
    header, rows = table(stdout)
    assert header == ["loop", "median step ms"]
    assert [row[0] for row in rows] == ["bare DeepSpeed step", "with kubetune's instrumentation",
                                        "instrumentation alone"]
    assert all(number(ms) > 0 for _, ms in rows)
    assert re.search(r"instrumentation: [\d.]+ % of a step; target < 2 %", stdout)
    folder = raw_output(stdout)
    timings = json.loads((folder / "timings.json").read_text())
    steps = len(timings["instrumented_seconds"])
    # What the trainer writes after each step, written here too: its train_log.jsonl lines and its log lines.
    log = [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == list(range(1, steps + 1))
    assert {"loss", "lr", "seconds", "tokens_per_second"} <= set(log[-1])
    assert (folder / "console.log").read_text().count("tokens/s") == steps


@pytest.mark.measured
def test_trainer_vs_deepspeed() -> None:
    stdout = run_benchmark("trainer_vs_deepspeed.py", "--smoke", env={"DS_ACCELERATOR": "cpu"})
    header, rows = table(stdout)
    assert header == ["loop", "step ms, each round", "median step ms", "tokens/s"]
    assert [row[0] for row in rows] == ["bare DeepSpeed loop", "kubetune trainer", "the trainer between steps"]
    assert all(number(row[2]) > 0 and number(row[3]) > 0 for row in rows[:2]), rows
    assert number(rows[2][2]) > 0, rows  # the step's end is after its optimizer step
    assert re.search(r"trainer / bare tokens/s: [\d.]+ \(each round: [\d.]+\); target >= 0.98. Between steps "
                     r"the trainer spends [\d.]+ % of its step", stdout)
    saved = json.loads((raw_output(stdout) / "timings.json").read_text())
    # Both loops ran every step: the trainer's train_log and the bare loop's own step times.
    assert [len(ends) for ends in saved["step_end_times"]["trainer"]] == [6]
    assert [len(ends) for ends in saved["step_end_times"]["bare"]] == [6]


@pytest.mark.measured
def test_gpu_memory_validation() -> None:
    stdout = run_benchmark("gpu_memory_validation.py", "--smoke")
    header, rows = table(stdout)
    assert header == ["model", "seq", "method", "ckpt", "attention", "predicted GiB", "allocated GiB", "error",
                      "reserved GiB", "device GiB"]
    assert len(rows) >= 4 and all(len(row) == len(header) for row in rows), rows
    assert re.search(r"configurations; median \|error\| [\d.]+%, worst [\d.]+%", stdout)
    saved = json.loads(raw_output(stdout).read_text())
    assert len(saved["rows"]) == len(rows)
    assert {"model", "seq_len", "method", "predicted_bytes", "allocated_bytes", "error"} <= set(saved["rows"][0])


@pytest.mark.measured
def test_gpu_trainer_check() -> None:
    stdout = run_benchmark("gpu_trainer_check.py", "--smoke")
    header, rows = table(stdout)
    assert header == ["configuration", "seq", "micro", "predicted GiB", "measured peak GiB", "error", "tokens/s",
                      "predicted tokens/s", "tokens/s error", "MFU"]
    assert len(rows) == 2 and all(len(row) == len(header) for row in rows), rows
    assert all(number(row[6]) > 0 and number(row[7]) > 0 for row in rows), rows
    assert re.search(r"median \|tokens/s error\| \d+%; ranking agreement (\d+%|-) \(\d+ of \d+ pairs", stdout)
    runs = [path for path in raw_output(stdout).iterdir() if path.is_dir() and (path / "trainer.json").exists()]
    assert len(runs) == 2
    for run in runs:
        assert len((run / "train_log.jsonl").read_text().splitlines()) == 3, run
        assert (run / "final").is_dir(), run


@pytest.mark.cluster
def test_scale(cluster: LocalCluster) -> None:
    stdout = run_benchmark("scale.py", "--smoke", "--kubeconfig", str(cluster.kubeconfig))
    header, rows = table(stdout)
    assert header == ["measure", "value", "target"]
    values = {row[0]: row[1] for row in rows}
    assert re.fullmatch(r"[\d.]+ s", values["all settled"]), values
    assert re.fullmatch(r"-?[\d.]+ s", values["after the last create"]), values
    assert re.fullmatch(r"[\d.]+ / [\d.]+ / [\d.]+ s", values["each job from its create to settled p50 / p99 / max"])
    working = re.fullmatch(r"\d+ / \d+ / \d+ ms \((\d+)\)", values["working reconciles p50 / p99 / max"])
    assert working and int(working[1]) >= 5, values  # at least one plan-and-create reconcile per job
    assert values["FineTuneJobs with more than one Job / ConfigMap"] == "0 / 0"
    assert values["FineTuneJobs without a status"] == "0"
    saved = json.loads(raw_output(stdout).read_text())
    assert len(saved["outcomes"]) == 5 and all(where and settled for where, _, _, _, settled in saved["outcomes"].values()), saved
    assert sum(changed for _, _, changed in saved["reconciles"]) == int(working[1])
