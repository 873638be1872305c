"""Predicted vs measured GPU memory for real Hugging Face models with random weights.

    python benchmarks/gpu_memory_validation.py [--quick] [--out benchmarks/results/gpu_memory.md] [--smoke]

For each configuration of a grid (models of 0.5-3B built from their catalog configs; sequence length
512-8192; full fine-tuning, LoRA (with 16-bit and fp32 adapters) and QLoRA (bitsandbytes' 4-bit base);
checkpointing on and off; SDPA, and FlashAttention-2 when flash-attn is
installed; on the GPU also the chunked cross-entropy at the planner's chunk), one warm-up step, then one measured forward + backward in bf16 on one GPU:

- allocated: torch.cuda.max_memory_allocated() minus what was allocated before the step (weights,
  adapters), i.e. what the step itself needed: activations, logits and gradients;
- predicted: the memory model's activations + logits at the start of backward, plus the first gradients
  backward produces there (the head's), for full fine-tuning, and for QLoRA the weight a 4-bit matmul
  dequantises while it runs;
- reserved and device: max_memory_reserved() and the device's used memory (mem_get_info), for the allocator
  margin and the CUDA context the model adds on top.

A second grid (`--deepspeed`, needs deepspeed) runs whole DeepSpeed steps on one GPU, ZeRO stages 0-3, the
activation grid's methods plus pure bf16 (full and LoRA: bf16 master weights and AdamW states), with the config
kubetune generates (planner/ds_config.py), and compares max_memory_allocated over a full
step (forward, backward, optimizer) with the model's total less what the allocator does not see (CUDA
context) and its margin.

`--device cpu` runs the same pipeline on tiny models, measuring saved tensors instead of the allocator:
it checks the script, not the GPU figures. `--smoke` is that on a smaller grid (one model), its raw output
in a temporary folder: the CI check of the script.

Every model is built by the trainer's own code for its settings (memprobe/tiny_models.py over
trainer/model_setup.py) and cast as DeepSpeed casts it.
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from kubetune.api.vocabulary import Attention, Method, Precision, ZeroStage
from kubetune.memprobe import probes, tiny_models
from kubetune.planner import activations, architecture, memory, quantization
from kubetune.planner.settings import Buckets, Lora, TrainingSettings

GIB = 1024**3
MODELS = ("Qwen/Qwen2.5-0.5B", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-1.5B", "meta-llama/Llama-3.2-3B")
SEQ_LENS = (512, 2048, 8192)


def attentions() -> list[Attention]:
    kernels = [Attention.SDPA]
    try:
        import flash_attn  # noqa: F401

        kernels.append(Attention.FLASH_ATTENTION_2)
    except ImportError:
        pass
    return kernels


def build(name: str, settings: TrainingSettings, device: str):
    if device == "cpu":
        config = tiny_models.tiny_config("llama" if "llama" in name.lower() else "qwen2", 2)
    else:
        config = dict(architecture.catalog()[name])
    # The trainer's model for these settings (checkpointing, LoRA), in the dtypes DeepSpeed leaves it in with the
    # plan's config: bf16, adapters included unless they are fp32.
    model, arch = tiny_models.build(config, settings)
    return model.to(device), arch


def predicted_step_bytes(arch, settings: TrainingSettings, device: str) -> int:
    if device == "cpu":
        # What the CPU probe sees: saved tensors at the end of the forward pass (no recomputed layer, no
        # gradients yet) plus the loss-backward temporaries.
        saved = activations.outside_layers(arch, settings).total + activations.logits_peak(arch, settings)
        if settings.gradient_checkpointing:
            return saved + arch.num_layers * activations.checkpointed_layer(arch, settings)
        layers = activations.first_layer(arch, settings, "cpu").total
        return saved + layers + (arch.num_layers - 1) * activations.layer(arch, settings, "cpu").total
    head_gradient = 0
    # The chunked loss's term already holds the head's gradient summed over the chunks done.
    if settings.method is Method.FULL and settings.loss_chunk_tokens is None:
        head_gradient = settings.precision.bytes * arch.vocab_size * arch.hidden_size
    dequantised = quantization.dequantization_bytes(arch, settings.precision.bytes) if settings.method is Method.QLORA else 0
    return (memory.activation_bytes(arch, settings) + activations.logits_peak(arch, settings) + head_gradient
            + dequantised)


def measure_gpu(model, arch, settings: TrainingSettings) -> dict:
    ids = torch.randint(0, arch.vocab_size, (settings.micro_batch, settings.seq_len), device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()  # warm-up: kernels, workspaces
    model.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model(input_ids=ids, labels=ids).loss.backward()
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    result = {
        "allocated_bytes": torch.cuda.max_memory_allocated() - before,
        "reserved_bytes": torch.cuda.max_memory_reserved(),
        "device_used_bytes": total - free,
    }
    model.zero_grad(set_to_none=True)
    return result


def measure_cpu(model, arch, settings: TrainingSettings) -> dict:
    ids = torch.randint(0, arch.vocab_size, (settings.micro_batch, settings.seq_len))
    saved = probes.saved_for_backward(model, ids).total
    # On the CPU only the saved tensors are counted: add the loss-backward temporaries the model expects.
    temporaries = activations.logits_peak(arch, settings) - activations.logits_saved(arch, settings)
    return {"allocated_bytes": saved + temporaries, "reserved_bytes": None, "device_used_bytes": None}


def measure_deepspeed(name: str, settings: TrainingSettings) -> tuple[dict, int]:
    import deepspeed

    from kubetune.planner.ds_config import ds_config

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29600", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl")
    config = dict(architecture.catalog()[name])
    arch = architecture.from_hf_config(config)
    # What the trainer hands to deepspeed.initialize: the weights in the training dtype.
    model = tiny_models.trainer_model(config, settings)
    settings = dataclasses.replace(settings, buckets=Buckets.for_hidden_size(arch.hidden_size))
    torch.cuda.reset_peak_memory_stats()
    engine, *_ = deepspeed.initialize(model=model, model_parameters=[p for p in model.parameters() if p.requires_grad],
                                      config=ds_config(settings))
    ids = torch.randint(0, arch.vocab_size, (settings.micro_batch, settings.seq_len), device="cuda")
    for _ in range(2):  # the first step allocates lazily created buffers; the second is the steady state
        torch.cuda.reset_peak_memory_stats()
        engine.backward(engine(input_ids=ids, labels=ids).loss)
        engine.step()
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    measured = {"allocated_bytes": torch.cuda.max_memory_allocated(), "reserved_bytes": torch.cuda.max_memory_reserved(),
                "device_used_bytes": total - free}
    estimate = memory.estimate(arch, settings)
    predicted = estimate.total_bytes - estimate.overhead_bytes - estimate.allocator_margin_bytes
    engine.destroy()
    del engine, model
    torch.cuda.empty_cache()
    return measured, predicted


# (method, precision, fp32 LoRA adapters): the precisions users run, each through the trainer's own preparation.
# Pure bf16 saves what mixed bf16 saves, so only the whole-step grid (--deepspeed) runs it.
ACTIVATION_VARIANTS = ((Method.LORA, Precision.BF16, False), (Method.LORA, Precision.BF16, True),
                       (Method.QLORA, Precision.BF16, False), (Method.FULL, Precision.BF16, False))
STEP_VARIANTS = (*ACTIVATION_VARIANTS, (Method.LORA, Precision.PURE_BF16, False),
                 (Method.FULL, Precision.PURE_BF16, False))


def label(settings: TrainingSettings) -> str:
    """The method column: the method, with the precision when it is not mixed bf16 and fp32 adapters."""
    extra = [str(settings.precision)] if settings.precision is not Precision.BF16 else []
    if settings.method.trains_adapters and settings.lora.adapters_fp32:
        extra.append("fp32 adapters")
    if settings.loss_chunk_tokens is not None:
        extra.append(f"chunked loss ({settings.loss_chunk_tokens})")
    return " ".join([str(settings.method), *extra])


def deepspeed_grid(quick: bool):
    for name in MODELS[:2] if quick else MODELS:
        for seq_len in (512, 2048):
            for method, precision, adapters_fp32 in STEP_VARIANTS:
                for stage in ZeroStage:
                    if method is Method.QLORA and stage is ZeroStage.PARAMETERS:
                        continue  # refused: settings.QLORA_ZERO3
                    yield name, TrainingSettings(seq_len=seq_len, method=method, zero_stage=stage,
                                                 precision=precision, lora=Lora(adapters_fp32=adapters_fp32),
                                                 attention=attentions()[-1], num_gpus=1)


def grid(quick: bool, device: str, smoke: bool = False):
    models = MODELS[:1] if smoke else MODELS[:2] if quick or device == "cpu" else MODELS
    seq_lens = (512,) if device == "cpu" else (SEQ_LENS[:2] if quick else SEQ_LENS)
    for name in models:
        for seq_len in seq_lens:
            for method, precision, adapters_fp32 in ACTIVATION_VARIANTS:
                for ckpt in (False, True):
                    for attention in attentions():
                        yield name, TrainingSettings(seq_len=seq_len, micro_batch=1, method=method,
                                                     precision=precision, lora=Lora(adapters_fp32=adapters_fp32),
                                                     gradient_checkpointing=ckpt, attention=attention,
                                                     zero_stage=ZeroStage.DISABLED)
            if device == "cuda":
                # The chunked cross-entropy at the planner's chunk; the CPU check counts saved tensors, which
                # do not show its per-chunk peak (tests/measured/test_chunked_loss.py measures that).
                chunk = memory.loss_chunk_tokens(architecture.from_hf_config(dict(architecture.catalog()[name])))
                for method in (Method.LORA, Method.FULL):
                    yield name, TrainingSettings(seq_len=seq_len, micro_batch=1, method=method, gradient_checkpointing=True,
                                                 attention=attentions()[-1], zero_stage=ZeroStage.DISABLED,
                                                 loss_chunk_tokens=chunk)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None, help="cuda (default), or cpu to check "
                        "the script on tiny models")
    parser.add_argument("--quick", action="store_true", help="a smaller grid")
    parser.add_argument("--deepspeed", action="store_true", help="the DeepSpeed ZeRO 0-3 grid instead")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_memory.md"),
                        help="where the raw rows go, as <stem>[-deepspeed].json beside this name (GPU runs; CPU runs "
                        "write to a temporary folder)")
    parser.add_argument("--smoke", action="store_true", help="the CPU check on one tiny model, raw output in a "
                        "temporary folder: checks the script, not the figures")
    args = parser.parse_args()
    if args.smoke and (args.device == "cuda" or args.deepspeed):
        parser.error("--smoke runs on the CPU, without --deepspeed")
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run on a GPU machine, or use --device cpu to check the script")
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    rows = []
    header = ("| model | seq | method | ckpt | attention | predicted GiB | allocated GiB | error | reserved GiB "
              "| device GiB |\n|---|---:|---|---|---|---:|---:|---:|---:|---:|")
    print(f"device: {device_name}; torch {torch.__version__}\n\n{header}")
    if args.deepspeed and args.device != "cuda":
        sys.exit("the DeepSpeed grid needs a GPU; tests/measured/test_model_states_vs_deepspeed.py is its CPU check")
    configurations = deepspeed_grid(args.quick) if args.deepspeed else grid(args.quick, args.device, args.smoke)
    for name, settings in configurations:
        model = None
        try:
            if args.deepspeed:
                measured, predicted = measure_deepspeed(name, settings)
            else:
                model, arch = build(name, settings, args.device)
                measured = (measure_gpu if args.device == "cuda" else measure_cpu)(model, arch, settings)
                predicted = predicted_step_bytes(arch, settings, args.device)
        except torch.OutOfMemoryError:
            print(f"| {name} | {settings.seq_len} | {label(settings)} | ZeRO-{int(settings.zero_stage)} | OOM |")
            continue
        finally:
            model = None
            if args.device == "cuda":
                torch.cuda.empty_cache()
        error = predicted / measured["allocated_bytes"] - 1
        row = {"model": name, "seq_len": settings.seq_len, "method": settings.method.value,
               "precision": settings.precision.value, "lora_adapters_fp32": settings.lora.adapters_fp32,
               "zero_stage": int(settings.zero_stage) if args.deepspeed else None,
               "gradient_checkpointing": settings.gradient_checkpointing, "attention": settings.attention.value,
               "predicted_bytes": predicted, **measured, "error": error}
        rows.append(row)
        gib = lambda v: f"{v / GIB:.2f}" if v is not None else "-"  # noqa: E731
        kind = f"ZeRO-{int(settings.zero_stage)}" if args.deepspeed else ("on" if settings.gradient_checkpointing else "off")
        print(f"| {name} | {settings.seq_len} | {label(settings)} | {kind} "
              f"| {settings.attention} | {gib(predicted)} | {gib(measured['allocated_bytes'])} | {error:+.1%} "
              f"| {gib(measured['reserved_bytes'])} | {gib(measured['device_used_bytes'])} |", flush=True)
    errors = [abs(r["error"]) for r in rows]
    summary = (f"\n{len(rows)} configurations; median |error| {statistics.median(errors):.1%}, "
               f"worst {max(errors):.1%} (target: median <= 3 %, worst <= 8 %)") if rows else "\nno rows"
    print(summary)
    # CPU rows check the script, not the figures: they never replace a GPU run's.
    folder = args.out.parent if args.device == "cuda" else Path(tempfile.mkdtemp(prefix="kubetune-gpu-memory-"))
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / (args.out.stem + ("-deepspeed" if args.deepspeed else "") + ".json")
    out.write_text(json.dumps({"device": device_name, "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"raw output: {out}")


if __name__ == "__main__":
    main()
