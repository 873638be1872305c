"""The trainer against a bare DeepSpeed loop of the same configuration: tokens/s of what a training pod runs
(`python -m kubetune.trainer` under torchrun: data, metrics, train_log, the stop check, every step) over
tokens/s of a plain forward/backward/step loop over the same model, data, DeepSpeed config and schedule.

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/trainer_vs_deepspeed.py [--steps 40] [--rounds 3] [--ranks 2]
                                                                          [--out DIR] [--smoke]

Both loops run as separate torchrun jobs, alternated for `--rounds` rounds so that a machine getting slower or
faster moves both; each run's step time is its wall time from the end of the first `--warmup` steps to the end
of the last, over the steps in between (the trainer's from the `time` of its train_log lines, so everything it
does between steps counts). Target: the trainer at 0.98 or more of the bare loop's tokens/s. A small
random-weight Llama (4 layers, hidden size 256), LoRA, ZeRO-2, micro-batch 4 x 256 tokens per rank, gloo on
the CPU. `--smoke` is one round of a few steps of a 2-layer model: it checks the script (CI), not the figures.
The raw output (every run's per-step times) is saved in `--out` (a temporary folder by default).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubetune.api import v1alpha1 as api
from kubetune.api.trainer_config import LoraConfig, TrainerConfig
from kubetune.api.vocabulary import Attention, Method, Precision, ZeroStage
from kubetune.devcluster import seed
from kubetune.memprobe import tiny_models
from kubetune.planner import architecture
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import Buckets, TrainingSettings

TORCHRUN = str(Path(sys.executable).parent / "torchrun")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def write_configs(folder: Path, world: Path, *, layers: int, seq_len: int, micro_batch: int, ranks: int,
                  steps: int) -> tuple[Path, Path]:
    model_config = {**tiny_models.tiny_config("llama", layers), "vocab_size": seed.VOCAB_SIZE, "pad_token_id": 0,
                    "eos_token_id": 1, "bos_token_id": 1}
    arch = architecture.from_hf_config(model_config)
    settings = TrainingSettings(seq_len=seq_len, micro_batch=micro_batch, method=Method.LORA,
                                zero_stage=ZeroStage.GRADIENTS, gradient_checkpointing=False, num_gpus=ranks,
                                gpus_per_node=ranks, buckets=Buckets.for_hidden_size(arch.hidden_size))
    config = TrainerConfig(
        job="bench", model=api.ModelSource(name="tiny-llama", config=model_config),
        tokenizer=str(world / seed.TOKENIZER_FOLDER), dataset=api.Dataset(source=str(world / seed.DATASET_FILE)),
        training=api.Training(max_steps=steps, seq_len=seq_len, seed=7),
        output=api.Output(path=str(folder / "output")), checkpoint_interval_steps=steps, method=Method.LORA,
        lora=LoraConfig(rank=8, alpha=16, targets=LORA_TARGETS, dropout=0.0), gradient_checkpointing=False,
        attention=Attention.SDPA, precision=Precision.BF16, metrics_port=29900,
    )
    (folder / "trainer.json").write_text(config.model_dump_json(by_alias=True, exclude_none=True))
    (folder / "ds_config.json").write_text(json.dumps(ds_config(settings)))
    return folder / "trainer.json", folder / "ds_config.json"


def torchrun(ranks: int, port: int, module: list[str], log: Path) -> None:
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1",
               KUBETUNE_TERMINATION_LOG=str(log.with_suffix(".termination")))
    command = [TORCHRUN, f"--nproc_per_node={ranks}", "--nnodes=1", "--node_rank=0", "--master_addr=127.0.0.1",
               f"--master_port={port}", *module]
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=1800, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(module)} exited {result.returncode}:\n{log.read_text()[-4000:]}")


def bare(config_path: Path, ds_path: Path, out: Path) -> None:
    """The loop a user would write: the trainer's model, data and DeepSpeed config, nothing between steps."""
    import deepspeed
    import torch.distributed as dist
    from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

    from kubetune.trainer import data, run
    from kubetune.trainer.model_setup import build_model

    config = TrainerConfig.model_validate_json(config_path.read_text())
    ds = run.for_this_machine(json.loads(ds_path.read_text()))
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # as the trainer does on the CPU
    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tokenizer = AutoTokenizer.from_pretrained(config.tokenizer)
    examples = [data.encode(r, config.dataset.format.value, tokenizer, config.training.seq_len)
                for r in data.read_records(config.dataset.source)]
    accumulation = ds["gradient_accumulation_steps"]
    batches = data.Batches(examples, ds["train_micro_batch_size_per_gpu"], accumulation, rank, world,
                           config.training.seed)
    model = build_model(config)
    steps = config.training.max_steps or 1
    engine, *_ = deepspeed.initialize(
        model=model, model_parameters=[p for p in model.parameters() if p.requires_grad], config=ds,
        lr_scheduler=lambda optimizer: get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=max(1, steps // 20), num_training_steps=steps))
    ends = []
    for step in range(steps):
        for micro in range(accumulation):
            loss = engine(**{k: v.to(engine.device) for k, v in batches.batch(step, micro).items()}).loss
            engine.backward(loss)
            engine.step()
        ends.append(time.time())
    if rank == 0:
        out.write_text(json.dumps(ends))


def seconds_per_step(ends: list[float], warmup: int) -> float:
    return (ends[-1] - ends[warmup - 1]) / (len(ends) - warmup)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="first steps of each run left out")
    parser.add_argument("--rounds", type=int, default=3, help="trainer and bare runs, alternated")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=None, help="raw output folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="one round of a few small steps: checks the script")
    parser.add_argument("--bare", nargs=3, type=Path, metavar=("CONFIG", "DS_CONFIG", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        return bare(*args.bare)
    if args.smoke:
        args.steps, args.warmup, args.rounds, args.seq_len, args.micro_batch, args.layers = 6, 2, 1, 64, 1, 2
    if args.steps <= args.warmup:
        parser.error("--steps must be more than --warmup")
    folder = args.out or Path(tempfile.mkdtemp(prefix="kubetune-trainer-vs-deepspeed-"))
    folder.mkdir(parents=True, exist_ok=True)
    world = seed.write_world(folder / "world")
    runs: dict[str, list[list[float]]] = {"trainer": [], "bare": []}
    gaps: list[float] = []
    for round_ in range(args.rounds):
        run_folder = folder / f"round-{round_ + 1}"
        run_folder.mkdir(exist_ok=True)
        config, ds = write_configs(run_folder, world, layers=args.layers, seq_len=args.seq_len,
                                   micro_batch=args.micro_batch, ranks=args.ranks, steps=args.steps)
        torchrun(args.ranks, 29710, ["-m", "kubetune.trainer", f"--config={config}", f"--deepspeed={ds}"],
                 run_folder / "trainer.log")
        log = [json.loads(line) for line in (run_folder / "output" / "train_log.jsonl").read_text().splitlines()]
        runs["trainer"].append([entry["time"] for entry in log])
        # What the trainer does between one step's optimizer step and the next step's forward: each step's wall
        # time less its forward, backward and optimizer step (`seconds`). It does not move with the machine's
        # load as the loops' step times do.
        gaps.extend(after["time"] - before["time"] - after["seconds"]
                    for before, after in zip(log[args.warmup - 1:], log[args.warmup:], strict=False))
        ends = run_folder / "bare.json"
        torchrun(args.ranks, 29711, [__file__, "--bare", str(config), str(ds), str(ends)], run_folder / "bare.log")
        runs["bare"].append(json.loads(ends.read_text()))
    tokens = args.micro_batch * args.seq_len * args.ranks
    step = {loop: [seconds_per_step(ends, args.warmup) for ends in each] for loop, each in runs.items()}
    ratios = [b / t for b, t in zip(step["bare"], step["trainer"], strict=True)]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, CPU (gloo), {args.ranks} ranks; {args.layers} "
          f"layers, LoRA, ZeRO-2, micro-batch {args.micro_batch} x {args.seq_len} tokens per rank; {args.steps} steps "
          f"a run, first {args.warmup} left out; {args.rounds} rounds\n")
    print("| loop | step ms, each round | median step ms | tokens/s |\n|---|---|---:|---:|")
    for loop, label in (("bare", "bare DeepSpeed loop"), ("trainer", "kubetune trainer")):
        median = statistics.median(step[loop])
        print(f"| {label} | {', '.join(f'{s * 1000:.1f}' for s in step[loop])} | {median * 1000:.1f} | "
              f"{tokens / median:,.0f} |")
    gap = statistics.median(gaps)
    print(f"| the trainer between steps | | {gap * 1000:.2f} | |")
    print(f"\ntrainer / bare tokens/s: {statistics.median(ratios):.3f} (each round: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); target >= 0.98. Between steps the trainer spends "
          f"{gap / statistics.median(step['trainer']) * 100:.2f} % of its step")
    (folder / "timings.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                     "step_end_times": runs, "between_steps": gaps,
                                                     "ratios": ratios}, indent=1))
    print(f"raw output: {folder}")


if __name__ == "__main__":
    main()
