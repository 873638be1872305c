"""A tiny world for the trainer: a BPE tokenizer trained on synthetic records, a random-weight Llama config,
and a launcher that runs `python -m kubetune.trainer` under torchrun with two CPU processes (gloo)."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from kubetune.api import v1alpha1 as api  # noqa: E402
from kubetune.api.trainer_config import LoraConfig, TrainerConfig  # noqa: E402
from kubetune.api.vocabulary import AdapterPrecision, Attention, Method, Precision, ZeroStage  # noqa: E402
from kubetune.devcluster import seed  # noqa: E402
from kubetune.planner.ds_config import ds_config  # noqa: E402
from kubetune.planner.settings import Buckets, Lora, TrainingSettings  # noqa: E402

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
SEQ_LEN = 48
RANKS = 2


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = seed.write_world(tmp_path_factory.mktemp("trainer-world"))
    (root / "data.jsonl").write_text((root / seed.DATASET_FILE).read_text())
    return root


def model_config(vocab: int = seed.VOCAB_SIZE) -> dict:
    return {**seed.model_config(), "vocab_size": vocab}


@dataclass
class Run:
    output: Path
    process: subprocess.Popen | None = None

    def log(self) -> list[dict]:
        path = self.output / "train_log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def write_configs(world: Path, output: Path, *, method: Method, stage: int, steps: int, interval: int,
                  checkpointing: bool = True, port: int = 19400, save: str = "Adapter", ranks: int = RANKS,
                  micro_batch: int = 4, accumulation: int = 1, precision: Precision = Precision.BF16,
                  adapters_fp32: bool = False) -> tuple[Path, Path]:
    output.mkdir(parents=True, exist_ok=True)
    settings = TrainingSettings(seq_len=SEQ_LEN, micro_batch=micro_batch, gradient_accumulation=accumulation,
                                method=method, zero_stage=ZeroStage(stage),
                                gradient_checkpointing=checkpointing, num_gpus=ranks, gpus_per_node=ranks,
                                buckets=Buckets.for_hidden_size(64), precision=precision,
                                lora=Lora(adapters_fp32=adapters_fp32))
    # LoRA on a random-weight model needs a bold rate to move within a few dozen steps.
    ds = ds_config(settings, learning_rate=1e-2 if method.trains_adapters else 3e-3)
    ds["optimizer"]["params"]["torch_adam"] = True  # no fused CUDA Adam on the CPU
    config = TrainerConfig(
        job="test", model=api.ModelSource(name="tiny-llama", config=model_config()),
        tokenizer=str(world / "tokenizer"),
        dataset=api.Dataset(source=str(world / "data.jsonl")),
        training=api.Training(max_steps=steps, seq_len=SEQ_LEN, seed=7),
        output=api.Output(path=str(output), save=save), checkpoint_interval_steps=interval, method=method,
        lora=LoraConfig(rank=8, alpha=16, targets=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                   "down_proj"], dropout=0.0,
                        adapter_precision=AdapterPrecision.FP32 if adapters_fp32 else AdapterPrecision.MODEL)
        if method.trains_adapters else None,
        gradient_checkpointing=checkpointing, attention=Attention.SDPA, precision=precision, metrics_port=port,
    )
    (output / "trainer.json").write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    (output / "ds_config.json").write_text(json.dumps(ds))
    return output / "trainer.json", output / "ds_config.json"


def launch(config: Path, ds: Path, output: Path, master_port: int,
           extra_env: dict[str, str] | None = None, ranks: int = RANKS, launcher: bool = False) -> subprocess.Popen:
    """torchrun with the trainer, or (`launcher`) the training container's command, kubetune.trainer.launch."""
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               KUBETUNE_TERMINATION_LOG=str(output / "termination-log"), **(extra_env or {}))
    command = [sys.executable, "-m", "kubetune.trainer.launch"] if launcher else [TORCHRUN]
    return subprocess.Popen(
        [*command, f"--nproc_per_node={ranks}", "--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1",
         f"--master_port={master_port}", "-m", "kubetune.trainer", f"--config={config}", f"--deepspeed={ds}"],
        env=env, stdout=(output / "stdout.log").open("a"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(process: subprocess.Popen, output: Path, timeout: float = 600) -> None:
    code = process.wait(timeout=timeout)
    assert code == 0, (output / "stdout.log").read_text()[-4000:]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill(process: subprocess.Popen) -> None:
    """SIGKILL torchrun and every worker, as a pod deletion would (torchrun starts workers in their own
    sessions, so killing its process group is not enough)."""
    for pid in [process.pid, *_descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=60)


def wait_for_step(run: Run, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not any(entry["step"] >= step for entry in run.log()):
        assert run.process.poll() is None, "the trainer ended early"
        assert time.monotonic() < deadline, f"step {step} never came"
        time.sleep(0.05)
