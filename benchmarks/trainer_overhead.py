"""What the trainer's instrumentation costs per step: the same DeepSpeed steps with and without what the
trainer does after each optimizer step (kubetune.trainer.run.train): TrainerMetrics.record_step, the
train_log.jsonl line (written and flushed) and the `kubectl logs` line.

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/trainer_overhead.py [--steps 40] [--smoke]

One process (world size 1, gloo on the CPU or NCCL on a GPU), a small random-weight Llama (4 layers, hidden
size 256), LoRA, ZeRO-2, micro-batch 4 x 256 tokens. Target: instrumentation under 2 % of step time.
`--smoke` runs a few steps of a 2-layer model on 64-token sequences: it checks the script (CI), not the figures.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import deepspeed
import torch

from kubetune.api.vocabulary import Method, ZeroStage
from kubetune.catalog import gpus
from kubetune.memprobe import tiny_models
from kubetune.planner import architecture, throughput
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import Buckets, TrainingSettings
from kubetune.trainer import run
from kubetune.trainer.metrics import TrainerMetrics

# The trainer's MFU is against the planned GPU's peak; any catalog GPU gives the same cost.
PLANNED_GPU = "H100-SXM-80GB"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40, help="steps of each loop")
    parser.add_argument("--warmup", type=int, default=5, help="first steps of each loop left out of the medians")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="a few small steps: checks the script, not the figures")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.warmup, args.seq_len, args.micro_batch, args.layers = 6, 2, 64, 1, 2
    if args.steps <= args.warmup:
        parser.error("--steps must be more than --warmup")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29700", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.utils.logger.setLevel("ERROR")
    if not torch.cuda.is_available():
        # As the trainer does on the CPU (run.main): no JIT build of DeepSpeed's shared-memory allreduce.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    model_config = tiny_models.tiny_config("llama", args.layers)
    arch = architecture.from_hf_config(model_config)
    settings = TrainingSettings(seq_len=args.seq_len, micro_batch=args.micro_batch, method=Method.LORA,
                                zero_stage=ZeroStage.GRADIENTS, buckets=Buckets.for_hidden_size(arch.hidden_size))
    # The model the trainer builds for these settings (trainer/model_setup.py): random weights, LoRA adapters.
    model = tiny_models.trainer_model(model_config, settings)
    ds = run.for_this_machine(ds_config(settings))
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds)
    metrics = TrainerMetrics("bench", 0, PLANNED_GPU)
    flops_per_token = (throughput.training_flops_per_token(arch, settings)
                       / (throughput.peak_tflops(gpus.by_id(PLANNED_GPU), settings.precision) * 1e12))
    accumulation, micro_batch = ds["gradient_accumulation_steps"], ds["train_micro_batch_size_per_gpu"]
    ids = torch.randint(0, arch.vocab_size, (micro_batch, args.seq_len), device=engine.device)

    def step() -> list[float]:
        losses = []
        for _ in range(accumulation):
            loss = engine(input_ids=ids, labels=ids).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        return losses

    folder = Path(tempfile.mkdtemp(prefix="kubetune-trainer-overhead-"))
    log = (folder / "train_log.jsonl").open("a")
    console = (folder / "console.log").open("a")  # stands in for stdout, which `kubectl logs` shows
    bare, instrumented, instrumentation = [], [], []
    for i in range(args.steps):
        started = time.perf_counter()
        step()
        bare.append(time.perf_counter() - started)

        started = time.perf_counter()
        losses = step()
        current = i + 1
        # From here to the end of the block: what run.train does after each optimizer step, line for line.
        seconds = time.perf_counter() - started
        recording = time.perf_counter()
        samples = accumulation * micro_batch
        mean_loss = sum(losses) / len(losses)
        lr = engine.get_lr()[0]
        metrics.record_step(current, seconds, samples, args.seq_len, flops_per_token, mean_loss, lr)
        entry = {"step": current, "loss": mean_loss, "lr": lr, "seconds": seconds,
                 "tokens_per_second": samples * args.seq_len / seconds}
        if torch.cuda.is_available():
            entry["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        log.write(json.dumps(entry) + "\n")
        log.flush()
        # The trainer prints about a hundred lines a run; with this run's few steps that is every step.
        if current % max(1, args.steps // 100) == 0 or current == args.steps:
            print(f"step {current}/{args.steps} loss {mean_loss:.4f} lr {lr:.2e} "
                  f"{entry['tokens_per_second']:,.0f} tokens/s", file=console, flush=True)
        instrumentation.append(time.perf_counter() - recording)
        instrumented.append(time.perf_counter() - started)
    log.close()
    console.close()
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    b, m = statistics.median(bare[args.warmup:]), statistics.median(instrumented[args.warmup:])
    cost = statistics.median(instrumentation[args.warmup:])
    print(f"device: {device}; torch {torch.__version__}, deepspeed {deepspeed.__version__}; "
          f"{args.layers} layers, micro-batch {args.micro_batch} x {args.seq_len} tokens; "
          f"{args.steps} steps each, first {args.warmup} dropped\n")
    print("| loop | median step ms |\n|---|---:|")
    print(f"| bare DeepSpeed step | {b * 1000:.2f} |\n| with kubetune's instrumentation | {m * 1000:.2f} |")
    print(f"| instrumentation alone | {cost * 1000:.3f} |")
    # The two loops' medians differ by noise too: the bare steps' spread says how much.
    low, _, high = statistics.quantiles(bare[args.warmup:], n=4)
    print(f"\ninstrumentation: {cost / b * 100:.3f} % of a step; target < 2 %. The loops' medians differ by "
          f"{(m / b - 1) * 100:+.2f} %; bare steps' interquartile range {low * 1000:.1f}-{high * 1000:.1f} ms")
    (folder / "timings.json").write_text(json.dumps({"device": device, "warmup": args.warmup, "bare_seconds": bare,
                                                     "instrumented_seconds": instrumented,
                                                     "instrumentation_seconds": instrumentation}))
    print(f"raw output: {folder}")
    engine.destroy()
    deepspeed.comm.destroy_process_group()


if __name__ == "__main__":
    main()
