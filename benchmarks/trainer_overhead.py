"""What the trainer's instrumentation costs per step: the same DeepSpeed steps with and without the
metrics and log the trainer records after each one (kubetune.trainer.run._record and the train_log line).

    DS_ACCELERATOR=cpu .venv/bin/python benchmarks/trainer_overhead.py [--steps 40]

One process (world size 1, gloo on the CPU or NCCL on a GPU), a small random-weight Llama, LoRA, ZeRO-2.
Target: instrumentation under 2 % of step time.
"""

import argparse
import io
import json
import os
import statistics
import time

import deepspeed
import torch

from kubetune.memprobe import tiny_models
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import ALL_LINEAR, Buckets, Method, TrainingSettings, ZeroStage
from kubetune.trainer import run
from kubetune.trainer.metrics import TrainerMetrics

SEQ_LEN, MICRO_BATCH = 256, 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29700", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    deepspeed.utils.logger.setLevel("ERROR")
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
    import peft

    model, arch = tiny_models.build(tiny_models.tiny_config("llama", 4), "sdpa", torch.float32)
    model = peft.get_peft_model(model, peft.LoraConfig(r=16, target_modules=list(arch.lora_modules(ALL_LINEAR))))
    settings = TrainingSettings(seq_len=SEQ_LEN, micro_batch=MICRO_BATCH, method=Method.LORA,
                                zero_stage=ZeroStage.GRADIENTS, buckets=Buckets.for_hidden_size(arch.hidden_size))
    config = ds_config(settings)
    if not torch.cuda.is_available():
        config["optimizer"]["params"]["torch_adam"] = True
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=config)
    metrics = TrainerMetrics("bench", 0, "cpu")
    log = io.StringIO()
    ids = torch.randint(0, arch.vocab_size, (MICRO_BATCH, SEQ_LEN), device=engine.device)

    def step() -> float:
        loss = engine(input_ids=ids, labels=ids).loss
        engine.backward(loss)
        engine.step()
        return loss.item()

    bare, instrumented, instrumentation = [], [], []
    for i in range(args.steps):
        started = time.perf_counter()
        step()
        bare.append(time.perf_counter() - started)
        started = time.perf_counter()
        loss = step()
        seconds = time.perf_counter() - started
        recording = time.perf_counter()
        lr = engine.get_lr()[0]
        run._record(metrics, i + 1, seconds, MICRO_BATCH, SEQ_LEN, None, loss, lr)
        log.write(json.dumps({"step": i + 1, "loss": loss, "lr": lr, "seconds": seconds}) + "\n")
        instrumentation.append(time.perf_counter() - recording)
        instrumented.append(time.perf_counter() - started)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (2 vCPU VM)"
    b, m = statistics.median(bare[5:]), statistics.median(instrumented[5:])
    print(f"device: {device}; {args.steps} steps each, first 5 dropped\n")
    print("| loop | median step ms |\n|---|---:|")
    print(f"| bare DeepSpeed step | {b * 1000:.2f} |\n| with kubetune's instrumentation | {m * 1000:.2f} |")
    cost = statistics.median(instrumentation[5:])
    print(f"| instrumentation alone | {cost * 1000:.3f} |")
    print(f"\ninstrumentation: {cost / b * 100:.3f} % of a step; loops differ by {(m / b - 1) * 100:+.2f} % "
          "(noise); target < 2 %")


if __name__ == "__main__":
    main()
