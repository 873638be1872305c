"""The trainer on a real GPU: a ~1B random-weight model (Llama-3.2-1B's config), a grid of configurations,
measured peak memory and tokens/s against the plan's predictions, and how well the time model ranks them.

    python benchmarks/gpu_trainer_check.py [--steps 12] [--device cpu] [--smoke]

Each configuration is predicted by kubetune's memory and time models for one GPU of the detected type,
written as the operator writes it (resources/config_map.py: trainer.json + ds_config.json), and run under
torchrun with one process, on the trainer's own padded batches. The grid varies what the time model has a
term for: sequence length at one micro-batch (per-micro-step overhead against kernel work), micro-batch,
the attention kernel (eager, SDPA, FlashAttention-2), checkpointing, LoRA's targets and rank, full
fine-tuning, ZeRO-3 at small micro-steps. The ranking agreement is the share of pairs of configurations whose
measured tokens/s (more than 5 % apart) the model orders the same way. `--device cpu` runs the same pipeline
on a tiny model to check the script, not the figures (FlashAttention-2 runs as SDPA there); `--smoke` is
that with two configurations (LoRA ZeRO-2, Full ZeRO-3) of three steps: the CI check. Every run's folder
(trainer.json, ds_config.json, train_log.jsonl, the saved model) stays in a temporary folder the script prints.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import torch

from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import Attention, Method, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, memory, throughput
from kubetune.planner.settings import ALL_LINEAR, Buckets, Lora, TrainingSettings
from kubetune.resources.config_map import config_map

GIB = 1024**3
ACCUMULATION = 2
TIE = 0.05
ATTENTION_ONLY = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class Check:
    label: str
    method: Method
    stage: ZeroStage
    checkpointing: bool
    seq_len: int  # on a GPU; the CPU runs 64
    micro_batch: int = 1
    attention: Attention = Attention.FLASH_ATTENTION_2
    targets: tuple[str, ...] = ALL_LINEAR
    rank: int = 16


LORA, FULL = Method.LORA, Method.FULL
Z2, Z3 = ZeroStage.GRADIENTS, ZeroStage.PARAMETERS
CONFIGS = [
    Check("LoRA ZeRO-2", LORA, Z2, False, 256), Check("LoRA ZeRO-2", LORA, Z2, False, 1024),
    Check("LoRA ZeRO-2", LORA, Z2, False, 4096), Check("LoRA ZeRO-2, micro-batch 8", LORA, Z2, False, 256, 8),
    Check("LoRA ZeRO-2, eager", LORA, Z2, False, 4096, attention=Attention.EAGER),
    Check("LoRA ZeRO-2, SDPA", LORA, Z2, False, 4096, attention=Attention.SDPA),
    Check("LoRA ZeRO-2, checkpointing", LORA, Z2, True, 4096),
    Check("LoRA ZeRO-2, attention only", LORA, Z2, False, 1024, targets=ATTENTION_ONLY),
    Check("LoRA ZeRO-2, rank 64", LORA, Z2, False, 1024, rank=64),
    Check("LoRA ZeRO-3", LORA, Z3, False, 256), Check("Full ZeRO-2", FULL, Z2, False, 1024),
    Check("Full ZeRO-3, checkpointing", FULL, Z3, True, 2048),
]
SMOKE_CONFIGS = [CONFIGS[0], CONFIGS[-1]]


def ranking(rows: list[tuple[float, float]]) -> tuple[int, int]:
    """(agreeing, compared) pairs of (measured, predicted) tokens/s."""
    agree = compared = 0
    for (measured_a, predicted_a), (measured_b, predicted_b) in combinations(rows, 2):
        if abs(measured_a / measured_b - 1) > TIE:
            compared += 1
            agree += (measured_a > measured_b) == (predicted_a > predicted_b)
    return agree, compared


def tokenizer_and_data(root: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [f"w{i}" for i in range(500)]
    texts = [" ".join(words[(i * 7 + k) % 500] for k in range(400)) for i in range(256)]
    (root / "data.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=1000, special_tokens=["<pad>", "<eos>", "<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                            unk_token="<unk>").save_pretrained(root / "tokenizer")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="cuda (default), or cpu to check "
                        "the script on a tiny model")
    parser.add_argument("--smoke", action="store_true", help="the CPU check with two configurations of three "
                        "steps: checks the script, not the figures")
    args = parser.parse_args()
    if args.smoke and args.device == "cuda":
        parser.error("--smoke runs on the CPU")
    configs = SMOKE_CONFIGS if args.smoke else CONFIGS
    if args.smoke:
        args.steps = 3
    cuda = (args.device or ("cpu" if args.smoke else "cuda")) == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or --device cpu to check the script")
    gpu = next((g for g in gpus.catalog() if g.gfd_products[0].replace("-", " ") in torch.cuda.get_device_name()),
               gpus.by_id("H100-SXM-80GB")) if cuda else gpus.by_id("H100-SXM-80GB")
    model_config = dict(architecture.catalog()["meta-llama/Llama-3.2-1B"])
    if not cuda:
        model_config |= {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "head_dim": 16,
                         "num_key_value_heads": 2, "intermediate_size": 172, "vocab_size": 1024}
    arch = architecture.from_hf_config(model_config)
    root = Path(tempfile.mkdtemp(prefix="kubetune-gpu-check-"))
    tokenizer_and_data(root)
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} (planned as {gpu.id}); torch {torch.__version__}; "
          f"{args.steps} steps of {ACCUMULATION} micro-steps each\n")
    print("| configuration | seq | micro | predicted GiB | measured peak GiB | error | tokens/s | predicted tokens/s "
          "| tokens/s error | MFU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    failed = 0
    speeds: list[tuple[float, float]] = []
    for index, check in enumerate(configs):
        seq_len = check.seq_len if cuda else 64
        # The CPU has no FlashAttention-2: SDPA stands in, to check the pipeline.
        attention = check.attention if cuda or check.attention is not Attention.FLASH_ATTENTION_2 else Attention.SDPA
        settings = TrainingSettings(seq_len=seq_len, micro_batch=check.micro_batch, gradient_accumulation=ACCUMULATION,
                                    method=check.method, lora=Lora(rank=check.rank, target_modules=check.targets),
                                    zero_stage=check.stage, gradient_checkpointing=check.checkpointing,
                                    attention=attention, buckets=Buckets.for_hidden_size(arch.hidden_size))
        out = root / f"{index:02d}-{check.method}-{int(check.stage)}-{seq_len}"
        out.mkdir()
        spec = api.FineTuneJobSpec(
            model=api.ModelSource(name="llama-1b-random", config=model_config, tokenizer=str(root / "tokenizer")),
            dataset=api.Dataset(source=str(root / "data.jsonl"), format=api.DatasetFormat.TEXT),
            training=api.Training(max_steps=args.steps, seq_len=seq_len,
                                  global_batch=check.micro_batch * ACCUMULATION),
            output=api.Output(path=str(out)), checkpoint_interval_steps=10_000)
        # The operator's ConfigMap for this configuration; no status plan (the prediction is compared below).
        data = config_map("gpu-check", spec, None, settings)["data"]
        trainer = json.loads(data["trainer.json"]) | {"metricsPort": 19500}
        (out / "trainer.json").write_text(json.dumps(trainer))
        (out / "ds_config.json").write_text(data["ds_config.json"])
        env = dict(os.environ, KUBETUNE_TERMINATION_LOG=str(out / "termination-log"))
        if not cuda:
            env["DS_ACCELERATOR"] = "cpu"
        torchrun = str(Path(sys.executable).parent / "torchrun")
        result = subprocess.run([torchrun, "--nproc_per_node=1", "--master_port=29800", "-m", "kubetune.trainer",
                                 f"--config={out / 'trainer.json'}", f"--deepspeed={out / 'ds_config.json'}"],
                                env=env, capture_output=True, text=True, timeout=1800, check=False)
        if result.returncode != 0:
            reason = (out / "termination-log").read_text() if (out / "termination-log").exists() else result.stderr[-300:]
            print(f"| {check.label} | {seq_len} | {check.micro_batch} | failed: {reason.strip()[:120]} |", flush=True)
            failed += 1
            continue
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        estimate = memory.estimate(arch, settings)
        predicted = estimate.total_bytes - estimate.overhead_bytes - estimate.allocator_margin_bytes
        measured = max((e.get("peak_allocated_bytes", 0) for e in log), default=0)
        # The first two steps warm up (allocator, kernel autotuning, lazy module loading).
        tps = statistics.median(e["tokens_per_second"] for e in log[2:]) if len(log) > 2 else 0
        predicted_tps = throughput.step_time(arch, settings, gpu).tokens_per_second
        mfu = throughput.training_flops_per_token(arch, settings) * tps / (gpu.bf16_tflops * 1e12)
        error = f"{predicted / measured - 1:+.1%}" if measured else "-"
        tps_error = f"{predicted_tps / tps - 1:+.0%}" if tps else "-"
        if tps:
            speeds.append((tps, predicted_tps))
        print(f"| {check.label} | {seq_len} | {check.micro_batch} | {predicted / GIB:.2f} | {measured / GIB:.2f} "
              f"| {error} | {tps:,.0f} | {predicted_tps:,.0f} | {tps_error} | {mfu:.1%} |", flush=True)
    agree, compared = ranking(speeds)
    median_error = statistics.median(abs(p / m - 1) for m, p in speeds) if speeds else 0.0
    share = f"{agree / compared:.0%}" if compared else "-"
    print(f"\nmedian |tokens/s error| {median_error:.0%}; ranking agreement {share} ({agree} of {compared} pairs "
          f"more than {TIE:.0%} apart){'' if cuda else '; on the CPU these check the script, not the model'}")
    print(f"\nraw output (each run's trainer.json, ds_config.json, train_log.jsonl): {root}")
    if failed:
        sys.exit(f"{failed} of {len(configs)} configurations failed")


if __name__ == "__main__":
    main()
