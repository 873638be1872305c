"""`python -m kubetune.trainer --config trainer.json --deepspeed ds_config.json`, under torchrun.

Loads the model (a hub id, a local path, or random weights from an inline config), the tokenizer and the
data, applies the plan (LoRA or full, checkpointing, attention kernel, DeepSpeed ZeRO from the generated
config), trains with checkpoints and resume, serves metrics, and ends with a one-line reason in the
termination message; a CUDA out-of-memory exits with contract.OOM_EXIT_CODE and the measured peak.
"""

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from pydantic import ValidationError
from transformers import AutoTokenizer, get_cosine_schedule_with_warmup

from kubetune.api import contract, trainer_config
from kubetune.api.trainer_config import TrainerConfig
from kubetune.catalog import gpus
from kubetune.planner import architecture, throughput
from kubetune.planner.settings import TrainingSettings
from kubetune.trainer import checkpoints, data, launch
from kubetune.trainer.metrics import TrainerMetrics
from kubetune.trainer.model_setup import build_model
from kubetune.trainer.model_setup import on_claim as _on_claim

INPUT_ERRORS = (FileNotFoundError, IsADirectoryError, KeyError, ValueError, UnicodeDecodeError)


class InvalidInputError(Exception):
    """The dataset, tokenizer or model could not be read as configured."""
TERMINATION_LOG = Path(os.environ.get("KUBETUNE_TERMINATION_LOG", contract.TERMINATION_LOG))


def for_this_machine(ds: dict) -> dict:
    """The plan's DeepSpeed config as this machine can run it: without a GPU (simulated GPUs) the optimizer is
    torch's own, since DeepSpeed's fused Adam is a CUDA kernel. Torch's fused CPU kernel, like DeepSpeed's, updates
    each tensor in place; its default per-tensor path would allocate two temporaries of the largest tensor (the
    whole flattened partition under ZeRO 1-2), memory the GPU plan never holds."""
    if torch.cuda.is_available() or ds.get("optimizer", {}).get("type") not in ("Adam", "AdamW"):
        return ds
    params = {**ds["optimizer"]["params"], "torch_adam": True, "fused": True}
    return {**ds, "optimizer": {**ds["optimizer"], "params": params}}


def total_steps(config: TrainerConfig, examples: int, ds: dict) -> int:
    if config.training.max_steps:
        return config.training.max_steps
    per_step = ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"] * dist.get_world_size()
    return max(1, math.ceil(examples / per_step)) * (config.training.epochs or 1)


def train(config: TrainerConfig, ds: dict) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    plan = config.plan
    metrics = TrainerMetrics(config.job, rank, plan.gpu_type if plan else "unknown")
    metrics.serve(config.metrics_port + local_rank)
    if plan:
        metrics.memory_predicted.set(plan.predicted_peak_bytes)
    # Before the model is built: converting another layout's checkpoint needs host memory too.
    directory = Path(config.output.path) / "checkpoints"
    directory.mkdir(parents=True, exist_ok=True)
    layout = checkpoints.Layout(world_size=world, zero_stage=ds["zero_optimization"]["stage"])
    resume = checkpoints.resume_point(directory, layout)
    if resume and resume.universal:
        ds = {**ds, "checkpoint": {**ds.get("checkpoint", {}), "load_universal": True}}

    try:
        tokenizer = AutoTokenizer.from_pretrained(_on_claim(config, config.tokenizer or config.model.name))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        # The operator mounts the dataset's claim at contract.DATA_MOUNT; `source` is then a path on it.
        source = str(contract.DATA_MOUNT / config.dataset.source) if config.dataset.claim_name else config.dataset.source
        records = data.read_records(source)
        examples = [data.encode(r, config.dataset.format.value, tokenizer, config.training.seq_len) for r in records]
        batches = data.Batches(examples, ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"],
                               rank, world, config.training.seed)
        model = build_model(config)
    except INPUT_ERRORS as error:
        raise InvalidInputError(f"{type(error).__name__}: {error}") from error
    steps = total_steps(config, len(examples), ds)
    flops_per_token = _flops_per_token_at_peak(config, model)
    optimizer_params = [p for p in model.parameters() if p.requires_grad]
    # DeepSpeed steps the schedule at each optimizer step and keeps its state in the checkpoints.
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=optimizer_params, config=ds,
        lr_scheduler=lambda optimizer: get_cosine_schedule_with_warmup(
            optimizer, num_warmup_steps=max(1, steps // 20), num_training_steps=steps))
    metrics.total_steps.set(steps)

    step = 0
    if resume:
        _, state = engine.load_checkpoint(str(directory), tag=resume.tag)
        step = state["step"]
        if rank == 0:
            print(f"resumed from checkpoint {resume.tag} at step {step}", flush=True)
    resumed_at = step
    log = (Path(config.output.path) / "train_log.jsonl").open("a") if rank == 0 else None
    fault = contract.injected_fault(os.environ.get(contract.INJECT_FAULT_ENV))
    accumulation = ds["gradient_accumulation_steps"]
    device = engine.device
    while step < steps:
        started = time.perf_counter()
        losses = []
        for micro in range(accumulation):
            batch = {k: v.to(device) for k, v in batches.batch(step, micro).items()}
            loss = engine(**batch).loss
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        step += 1
        if fault is not None and fault[1:] == (step, rank):
            _inject(fault[0], step, rank)
        seconds = time.perf_counter() - started
        samples = accumulation * ds["train_micro_batch_size_per_gpu"]
        mean_loss = sum(losses) / len(losses)
        lr = engine.get_lr()[0]
        metrics.record_step(step, seconds, samples, config.training.seq_len, flops_per_token, mean_loss, lr)
        if log:
            entry = {"step": step, "time": time.time(), "loss": mean_loss, "lr": lr, "seconds": seconds,
                     "tokens_per_second": samples * config.training.seq_len * world / seconds}
            if torch.cuda.is_available():
                entry["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
            log.write(json.dumps(entry) + "\n")
            log.flush()
            if step % max(1, steps // 100) == 0 or step == steps or step == resumed_at + 1:
                # What `kubectl logs` shows: about a hundred lines a run.
                print(f"step {step}/{steps} loss {mean_loss:.4f} lr {lr:.2e} "
                      f"{entry['tokens_per_second']:,.0f} tokens/s", flush=True)
        stopping = _asked_to_stop(device)
        if step % config.checkpoint_interval_steps == 0 or step == steps or stopping:
            saving = time.perf_counter()
            checkpoints.save(engine, directory, step, {"step": step}, layout, config.output.keep_checkpoints)
            metrics.checkpoint_seconds.observe(time.perf_counter() - saving)
            metrics.checkpoints.inc()
        if stopping and step < steps:
            if rank == 0:
                print(f"asked to stop: saved checkpoint {checkpoints.tag(step)} to resume from", flush=True)
            # Every rank tells its own pod's launcher: each pod's exit code must say the run did not finish.
            (Path(os.environ[contract.VERDICT_DIR_ENV]) / contract.SAVED_ON_STOP_FILE).write_text(str(step))
            break
    if log:
        log.close()
    if step < steps:
        return
    _save_final(engine, config, rank)
    if rank == 0:
        print(f"saved the {'adapter' if config.method.trains_adapters else 'model'} to {Path(config.output.path) / 'final'}",
              flush=True)


def _asked_to_stop(device: torch.device) -> bool:
    """Whether any rank's launcher was asked to stop (contract.STOP_FILE): agreed by all ranks, so that they
    save the same step. One scalar all-reduce per optimizer step."""
    asked = torch.tensor([float(contract.stop_requested(os.environ.get(contract.VERDICT_DIR_ENV)))], device=device)
    dist.all_reduce(asked, op=dist.ReduceOp.MAX)
    return bool(asked.item())


def _inject(kind: str, step: int, rank: int) -> None:
    """A fault for tests on real pods (contract.INJECT_FAULT_ENV), as the real thing shows itself."""
    if kind == "gpu-oom":
        raise torch.OutOfMemoryError(f"injected by {contract.INJECT_FAULT_ENV} after step {step} on rank {rank}")
    if launch.memory_limit(launch.memory_cgroup()) is None:
        raise RuntimeError(f"{contract.INJECT_FAULT_ENV}=host-oom needs a container memory limit to hit")
    print(f"allocating host memory until the kernel stops this rank ({contract.INJECT_FAULT_ENV})", flush=True)
    hog = []
    while True:
        hog.append(b"\x01" * (256 << 20))  # written, so the pages are really taken


def _flops_per_token_at_peak(config: TrainerConfig, model: torch.nn.Module) -> float | None:
    """Training FLOPs per token as a share of the planned GPU's dense peak per second (for MFU); None without a
    plan. Off GPU (the CPU tests) it is still measured against the planned GPU's peak, so it reads near zero."""
    if config.plan is None:
        return None
    base: Any = getattr(model, "get_base_model", lambda: model)()  # PEFT wraps the model
    arch = architecture.from_hf_config(base.config.to_dict())
    settings = TrainingSettings(seq_len=config.training.seq_len, precision=config.precision,
                                method=config.method, attention=config.attention,
                                gradient_checkpointing=config.gradient_checkpointing)
    peak = throughput.peak_tflops(gpus.by_id(config.plan.gpu_type), settings.precision) * 1e12
    return throughput.training_flops_per_token(arch, settings) / peak


def _save_final(engine, config: TrainerConfig, rank: int) -> None:
    final = Path(config.output.path) / "final"
    if config.method.trains_adapters:
        # Under ZeRO-3 an adapter above the persistence threshold is partitioned like any weight: without
        # gathering, rank 0 would save empty tensors. (A no-op under ZeRO-1/2.)
        adapters = [p for p in engine.module.parameters() if p.requires_grad]
        with deepspeed.zero.GatheredParameters(adapters, modifier_rank=None):
            if rank == 0:
                engine.module.save_pretrained(str(final))
        if config.output.save.value == "Merged":
            # Every rank takes part in gathering ZeRO-3 partitions; rank 0 merges and writes.
            with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
                if rank == 0:
                    engine.module.merge_and_unload().save_pretrained(str(final / "merged"))
    else:
        engine.save_16bit_model(str(final))
    dist.barrier()


def _terminate(message: str, code: int) -> None:
    """This rank's last word: a verdict for the launcher, which picks the pod's from its ranks'; run without it
    (torchrun alone), the termination log itself."""
    print(message, file=sys.stderr)
    verdicts = os.environ.get(contract.VERDICT_DIR_ENV)
    try:
        if verdicts:
            rank = int(os.environ.get("RANK", "0"))
            contract.write_verdict(Path(verdicts), contract.Verdict(rank=rank, exit_code=code, message=message))
        else:
            TERMINATION_LOG.write_text(message[:contract.MAX_MESSAGE])
    except OSError:
        pass
    sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kubetune.trainer")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--deepspeed", type=Path, required=True)
    args = parser.parse_args()
    try:
        config, ignored = trainer_config.parse(args.config.read_text())
        if ignored and int(os.environ.get("RANK", "0")) == 0:
            print(f"trainer.json: ignoring fields this trainer does not know: {', '.join(ignored)}", flush=True)
        if not torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu":
            raise RuntimeError(f"no GPU is visible to torch (is the NVIDIA driver mounted?); runs on the CPU only "
                               f"on simulated GPUs ({contract.SIMULATED_GPUS_ENV}=1) or with DS_ACCELERATOR=cpu")
        ds = for_this_machine(json.loads(args.deepspeed.read_text()))
        if not torch.cuda.is_available():
            # DeepSpeed's CPU backend would JIT-compile its shared-memory allreduce (an optimisation of
            # gloo's) at start: that needs a C++ compiler the image does not carry, and costs every pod a build.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        train(config, ds)
        # Without it gloo's worker threads outlive the interpreter, and their teardown at exit can abort the
        # process (SIGABRT after the model was saved: a finished run's pod would fail). Every rank has passed
        # the run's last barrier (the final save's, or a stop's checkpoint), so none waits on a collective.
        dist.destroy_process_group()
    except torch.OutOfMemoryError:
        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
        total = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else 0
        _terminate(contract.oom_message(peak, total), contract.OOM_EXIT_CODE)
    except trainer_config.ContractVersionError as error:
        _terminate(f"kubetune-invalid-input {error}", contract.INVALID_INPUT_EXIT_CODE)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        _terminate(f"kubetune-invalid-input {error.title} {where}: {first['msg']}", contract.INVALID_INPUT_EXIT_CODE)
    except InvalidInputError as error:
        traceback.print_exc()
        _terminate(f"kubetune-invalid-input {error}".splitlines()[0], contract.INVALID_INPUT_EXIT_CODE)
    except Exception as error:  # the last word of any failure goes to the termination message
        traceback.print_exc()
        _terminate(f"kubetune-error {type(error).__name__}: {error}".splitlines()[0], contract.ERROR_EXIT_CODE)
