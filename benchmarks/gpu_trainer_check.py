"""The trainer on a real GPU: a ~1B random-weight model (Llama-3.2-1B's config), a few plans, measured peak
memory against the plan's prediction, tokens/s and MFU.

    python benchmarks/gpu_trainer_check.py [--steps 20] [--device cpu] [--smoke]

Each configuration is predicted by kubetune's memory and throughput models for one GPU of the detected type,
written as the operator writes it (resources/config_map.py: trainer.json + ds_config.json), and run under
torchrun with one process. `--device cpu` runs the same pipeline on a tiny model to check the script, not the
figures; `--smoke` is that with two configurations (LoRA ZeRO-2, Full ZeRO-3) of three steps: the CI check.
Every run's folder (trainer.json, ds_config.json, train_log.jsonl, the saved model) stays in a temporary folder
the script prints.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from kubetune.api import v1alpha1 as api
from kubetune.api.vocabulary import Attention, Method, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, memory, throughput
from kubetune.planner.settings import Buckets, TrainingSettings
from kubetune.resources.config_map import config_map

GIB = 1024**3
CONFIGS = [  # (method, zero stage, checkpointing, seq_len on a GPU)
    (Method.LORA, ZeroStage.GRADIENTS, False, 2048), (Method.LORA, ZeroStage.GRADIENTS, True, 4096),
    (Method.FULL, ZeroStage.GRADIENTS, False, 1024), (Method.FULL, ZeroStage.PARAMETERS, True, 2048),
]
SMOKE_CONFIGS = [CONFIGS[0], CONFIGS[3]]


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
    parser.add_argument("--steps", type=int, default=20)
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
    print(f"device: {torch.cuda.get_device_name() if cuda else 'cpu'} (planned as {gpu.id}); torch {torch.__version__}\n")
    print("| method | ZeRO | ckpt | seq | predicted GiB | measured peak GiB | error | tokens/s | predicted tokens/s | MFU |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    failed = 0
    for method, stage, ckpt, seq_len in configs:
        seq_len = seq_len if cuda else 64
        settings = TrainingSettings(seq_len=seq_len, micro_batch=1, method=method, zero_stage=stage,
                                    gradient_checkpointing=ckpt, attention=Attention.SDPA,
                                    buckets=Buckets.for_hidden_size(arch.hidden_size))
        out = root / f"{method}-{int(stage)}-{ckpt}-{seq_len}"
        out.mkdir()
        spec = api.FineTuneJobSpec(
            model=api.ModelSource(name="llama-1b-random", config=model_config, tokenizer=str(root / "tokenizer")),
            dataset=api.Dataset(source=str(root / "data.jsonl"), format=api.DatasetFormat.TEXT),
            training=api.Training(max_steps=args.steps, seq_len=seq_len), output=api.Output(path=str(out)),
            checkpoint_interval_steps=10_000)
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
            print(f"| {method} | {int(stage)} | {ckpt} | {seq_len} | failed: {reason.strip()[:120]} |", flush=True)
            failed += 1
            continue
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        estimate = memory.estimate(arch, settings)
        predicted = estimate.total_bytes - estimate.overhead_bytes - estimate.allocator_margin_bytes
        measured = max((e.get("peak_allocated_bytes", 0) for e in log), default=0)
        tps = sorted(e["tokens_per_second"] for e in log[2:])[len(log[2:]) // 2] if len(log) > 2 else 0
        predicted_tps = throughput.step_time(arch, settings, gpu).tokens_per_second
        mfu = throughput.training_flops_per_token(arch, settings) * tps / (gpu.bf16_tflops * 1e12)
        error = f"{predicted / measured - 1:+.1%}" if measured else "-"
        print(f"| {method} | {int(stage)} | {ckpt} | {seq_len} | {predicted / GIB:.2f} | {measured / GIB:.2f} | {error} "
              f"| {tps:,.0f} | {predicted_tps:,.0f} | {mfu:.1%} |", flush=True)
    print(f"\nraw output (each run's trainer.json, ds_config.json, train_log.jsonl): {root}")
    if failed:
        sys.exit(f"{failed} of {len(configs)} configurations failed")


if __name__ == "__main__":
    main()
