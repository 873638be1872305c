"""The trainer really trains: two processes under torchrun on the CPU (gloo), DeepSpeed ZeRO-2 and ZeRO-3,
LoRA and full fine-tuning, gradient checkpointing on. The loss falls; a run killed after a checkpoint resumes
where it was with the same losses; the saved adapter reloads with PEFT; metrics are served; failures leave a
one-line reason in the termination message; a run replanned onto another GPU count, ZeRO stage and micro-batch
resumes from the checkpoints of the first."""

import json
import signal
import urllib.request
from pathlib import Path

import pytest
import torch

from kubetune.api import contract
from kubetune.api.vocabulary import Method, Precision
from tests.trainer.conftest import (
    Run,
    finish,
    kill,
    launch,
    model_config,
    wait_for_step,
    write_configs,
)

pytestmark = pytest.mark.measured

SERIES = (
    "kubetune_trainer_memory_allocated_bytes", "kubetune_trainer_memory_reserved_bytes",
    "kubetune_trainer_memory_peak_allocated_bytes", "kubetune_trainer_memory_device_total_bytes",
    "kubetune_trainer_memory_predicted_peak_bytes", "kubetune_trainer_step_duration_seconds_bucket",
    "kubetune_trainer_tokens_total", "kubetune_trainer_samples_total", "kubetune_trainer_loss",
    "kubetune_trainer_learning_rate", "kubetune_trainer_model_flops_utilization_ratio", "kubetune_trainer_step",
    "kubetune_trainer_total_steps", "kubetune_trainer_checkpoint_save_seconds_bucket",
)


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def losses(run: Run) -> dict[int, float]:
    """Loss per step; a resumed run's later entries win."""
    return {entry["step"]: entry["loss"] for entry in run.log()}


def test_lora_zero2_learns_serves_metrics_and_saves_a_reloadable_adapter_and_merged_model(world: Path, tmp_path: Path) -> None:
    config, ds = write_configs(world, tmp_path, method=Method.LORA, stage=2, steps=60, interval=30, port=19410,
                               save="Merged")
    run = Run(tmp_path, launch(config, ds, tmp_path, master_port=29610))
    wait_for_step(run, 3)
    scraped = urllib.request.urlopen("http://127.0.0.1:19410/metrics", timeout=10).read().decode()
    finish(run.process, tmp_path)
    for series in SERIES:
        assert series in scraped, series
    assert 'rank="0"' in scraped and 'finetunejob="test"' in scraped

    curve = [losses(run)[step] for step in sorted(losses(run))]
    assert len(curve) == 60
    assert mean(curve[-5:]) < 0.8 * mean(curve[:5]), curve

    import peft
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from kubetune.trainer import data

    torch.manual_seed(7)  # the trainer's seed: the same random base weights
    kwargs = {k: v for k, v in model_config().items() if k != "model_type"}
    base = AutoModelForCausalLM.from_config(AutoConfig.for_model("llama", **kwargs), attn_implementation="sdpa")
    tokenizer = AutoTokenizer.from_pretrained(world / "tokenizer")
    examples = [data.encode(r, "Instruction", tokenizer, 48) for r in data.read_records(str(world / "data.jsonl"))]
    batch = data.Batches(examples, 64, 1, 0, 1, 0).batch(0, 0)
    with torch.no_grad():
        untrained = base(**batch).loss.item()
        tuned = peft.PeftModel.from_pretrained(base, tmp_path / "final")(**batch).loss.item()
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "merged")(**batch).loss.item()
    assert tuned == pytest.approx(mean(curve[-5:]), rel=0.1)
    assert tuned < 0.8 * untrained
    assert merged == pytest.approx(tuned, rel=0.02)  # the merged model computes what base + adapter does


def test_zero3_full_fine_tuning_with_checkpointing_learns(world: Path, tmp_path: Path) -> None:
    config, ds = write_configs(world, tmp_path, method=Method.FULL, stage=3, steps=30, interval=30, port=19420)
    run = Run(tmp_path, launch(config, ds, tmp_path, master_port=29620))
    finish(run.process, tmp_path)
    curve = [losses(run)[step] for step in sorted(losses(run))]
    assert mean(curve[-5:]) < 0.6 * mean(curve[:5]), curve
    assert (tmp_path / "final").exists()


def test_a_killed_run_resumes_from_its_last_complete_checkpoint_with_the_same_losses(world: Path,
                                                                                      tmp_path: Path) -> None:
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    config, ds = write_configs(world, reference_dir, method=Method.LORA, stage=2, steps=40, interval=5, port=19430)
    reference = Run(reference_dir, launch(config, ds, reference_dir, master_port=29630))
    finish(reference.process, reference_dir)

    config, ds = write_configs(world, resumed_dir, method=Method.LORA, stage=2, steps=40, interval=5, port=19440)
    resumed = Run(resumed_dir, launch(config, ds, resumed_dir, master_port=29640))
    wait_for_step(resumed, 12)
    kill(resumed.process)
    interrupted_at = max(losses(resumed))
    assert interrupted_at < 40, "the run finished before it could be killed"
    complete = (resumed_dir / "checkpoints" / "latest-complete").read_text().strip()
    assert int(complete.split("-")[1]) in range(10, interrupted_at + 1, 5)

    resumed.process = launch(config, ds, resumed_dir, master_port=29641)
    finish(resumed.process, resumed_dir)
    steps = [entry["step"] for entry in resumed.log()]
    first_after_restart = steps[steps.index(interrupted_at) + 1]
    assert first_after_restart == int(complete.split("-")[1]) + 1, steps  # resumed after the checkpoint
    assert steps[-1] == 40
    expected, got = losses(reference), losses(resumed)
    for step in range(first_after_restart, 41):
        assert got[step] == pytest.approx(expected[step], rel=0.02, abs=0.02), (step, got[step], expected[step])


def test_a_stopped_run_saves_where_it_stopped_and_resumes_from_there(world: Path, tmp_path: Path) -> None:
    """The kubelet's SIGTERM (the pod deleted, preempted, or its Job suspended) reaches the training
    container's command: the ranks save a checkpoint at the step they are at, long before the next interval,
    and exit; the pod says it was stopped; the next run resumes from that step."""
    config, ds = write_configs(world, tmp_path, method=Method.LORA, stage=2, steps=40, interval=30, port=19470)
    run = Run(tmp_path, launch(config, ds, tmp_path, master_port=29670, launcher=True,
                               extra_env={contract.SAVE_SECONDS_ENV: "120"}))
    wait_for_step(run, 6)
    run.process.send_signal(signal.SIGTERM)
    code = run.process.wait(timeout=300)
    output = (tmp_path / "stdout.log").read_text()
    assert code == 128 + signal.SIGTERM, output[-3000:]
    assert (tmp_path / "termination-log").read_text().startswith("kubetune-stopped")
    saved = int((tmp_path / "checkpoints" / "latest-complete").read_text().strip().split("-")[1])
    assert 6 <= saved < 30 and f"asked to stop: saved checkpoint step-{saved:08d}" in output
    assert max(losses(run)) == saved and not (tmp_path / "final").exists()  # not finished: nothing exported

    run.process = launch(config, ds, tmp_path, master_port=29671)
    finish(run.process, tmp_path)
    assert f"resumed from checkpoint step-{saved:08d} at step {saved}" in (tmp_path / "stdout.log").read_text()
    steps = [entry["step"] for entry in run.log()]
    assert steps == list(range(1, 41))  # no step lost, none trained twice
    assert (tmp_path / "final").exists()


def test_a_replanned_run_resumes_from_checkpoints_another_layout_wrote(world: Path, tmp_path: Path) -> None:
    """After an out-of-memory replan the next attempt has another GPU count, ZeRO stage and micro-batch (the
    same global batch of 8): it continues from the newest checkpoint with the weights, optimizer moments and
    schedule the first layout left, as the uninterrupted run would have."""
    reference_dir, replanned_dir = tmp_path / "reference", tmp_path / "replanned"
    first = {"method": Method.LORA, "stage": 2, "steps": 30, "interval": 5, "ranks": 1, "accumulation": 2}
    config, ds = write_configs(world, reference_dir, port=19450, **first)
    reference = Run(reference_dir, launch(config, ds, reference_dir, master_port=29650, ranks=1))
    finish(reference.process, reference_dir)

    config, ds = write_configs(world, replanned_dir, port=19460, **first)
    run = Run(replanned_dir, launch(config, ds, replanned_dir, master_port=29660, ranks=1))
    wait_for_step(run, 12)
    kill(run.process)
    interrupted_at = max(losses(run))
    assert interrupted_at < 30, "the run finished before it could be killed"
    checkpoint = int((replanned_dir / "checkpoints" / "latest-complete").read_text().split("-")[1])

    # A save the first layout had begun of the step the second one ends on: its rank files must not survive.
    cut_short = replanned_dir / "checkpoints" / "step-00000030"
    cut_short.mkdir()
    (cut_short / "bf16_zero_pp_rank_7_mp_rank_00_optim_states.pt").write_bytes(b"from another layout")
    config, ds = write_configs(world, replanned_dir, method=Method.LORA, stage=3, steps=30, interval=5, port=19460,
                               ranks=2, micro_batch=2, accumulation=2)
    run.process = launch(config, ds, replanned_dir, master_port=29661, ranks=2)
    finish(run.process, replanned_dir)
    log = run.log()
    resumed = log[[entry["step"] for entry in log].index(interrupted_at) + 1:]
    assert resumed[0]["step"] == checkpoint + 1 and resumed[-1]["step"] == 30
    # The two newest checkpoints stay (keepCheckpoints); the converted one went with its source.
    assert sorted(path.name for path in (replanned_dir / "checkpoints").glob("step-*")) == [
        "step-00000025", "step-00000030"]
    written = json.loads((cut_short / "layout.json").read_text())
    assert written == {"world_size": 2, "zero_stage": 3}
    assert not (cut_short / "bf16_zero_pp_rank_7_mp_rank_00_optim_states.pt").exists()
    expected = {entry["step"]: entry for entry in reference.log()}
    for entry in resumed:
        # The schedule continues where it was (a fresh one would restart its warm-up) ...
        assert entry["lr"] == pytest.approx(expected[entry["step"]]["lr"], rel=1e-6), entry
        # ... and so do the weights and Adam's moments (restarted ones would jump off the reference's curve).
        assert entry["loss"] == pytest.approx(expected[entry["step"]]["loss"], rel=0.03), entry
    # The adapters end where the reference's did (2 % apart here; restarting Adam's moments at the resume
    # puts them 20 % apart), and ZeRO-3 saved them whole.
    drift = adapter_drift(replanned_dir / "final", reference_dir / "final")
    assert drift < 0.05, drift


def adapter_drift(adapter: Path, reference: Path) -> float:
    """How far one saved adapter is from another: |a - b| / |b| over all LoRA weights."""
    from safetensors.torch import load_file

    a, b = load_file(adapter / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    difference = sum(float((a[k].float() - b[k].float()).norm() ** 2) for k in b) ** 0.5
    return difference / sum(float(b[k].float().norm() ** 2) for k in b) ** 0.5


def test_a_missing_dataset_ends_with_the_invalid_input_code_and_a_one_line_reason(world: Path, tmp_path: Path) -> None:
    config, ds = write_configs(world, tmp_path, method=Method.LORA, stage=2, steps=5, interval=5, port=19450)
    broken = json.loads(config.read_text())
    broken["dataset"]["source"] = str(tmp_path / "missing.jsonl")
    config.write_text(json.dumps(broken))
    process = launch(config, ds, tmp_path, master_port=29650, launcher=True)
    # torchrun alone exits 1 whatever its workers did; the launcher exits with the workers' own code.
    assert process.wait(timeout=300) == contract.INVALID_INPUT_EXIT_CODE
    assert "exitcode  : 87" in (tmp_path / "stdout.log").read_text()
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("kubetune-invalid-input FileNotFoundError") and "missing.jsonl" in message
    assert "\n" not in message.strip()


@pytest.mark.parametrize("ranks", [1, 2])
def test_a_gpu_out_of_memory_on_one_rank_is_the_pods_verdict(world: Path, tmp_path: Path, ranks: int) -> None:
    """The real torchrun, one rank and two: the rank that runs out of memory (torch's own OutOfMemoryError,
    injected after step 3) decides the container's exit code and termination message, whatever its peers
    (stopped by torchrun) report."""
    config, ds = write_configs(world, tmp_path, method=Method.LORA, stage=2, steps=8, interval=8, port=19460 + ranks,
                               ranks=ranks)
    process = launch(config, ds, tmp_path, master_port=29660 + ranks, ranks=ranks, launcher=True,
                     extra_env={contract.INJECT_FAULT_ENV: f"gpu-oom:3:{ranks - 1}"})
    assert process.wait(timeout=300) == contract.OOM_EXIT_CODE, (tmp_path / "stdout.log").read_text()[-3000:]
    message = (tmp_path / "termination-log").read_text()
    assert contract.parse_oom(message) is not None and "\n" not in message, message
    assert [e["step"] for e in Run(tmp_path).log()] == [1, 2, 3][: 3 if ranks == 2 else 2]


def test_pure_bf16_full_fine_tuning_learns_and_a_replan_resumes_its_bf16_optimizer_states(world: Path,
                                                                                        tmp_path: Path) -> None:
    """Pure bf16 (bf16 master weights and AdamW states, DeepSpeed's bf16_master_weights_and_grads) learns like
    mixed bf16, and a replan onto another GPU count and ZeRO stage converts and loads its checkpoint (the
    replan keeps the precision: decision.decide's `resuming`)."""
    reference_dir, replanned_dir = tmp_path / "reference", tmp_path / "replanned"
    first = {"method": Method.FULL, "stage": 2, "steps": 24, "interval": 4, "ranks": 1, "accumulation": 2,
             "precision": Precision.PURE_BF16}
    config, ds = write_configs(world, reference_dir, port=19470, **first)
    reference = Run(reference_dir, launch(config, ds, reference_dir, master_port=29670, ranks=1))
    finish(reference.process, reference_dir)
    curve = [losses(reference)[step] for step in sorted(losses(reference))]
    assert mean(curve[-4:]) < 0.6 * mean(curve[:4]), curve

    config, ds = write_configs(world, replanned_dir, port=19480, **first)
    run = Run(replanned_dir, launch(config, ds, replanned_dir, master_port=29680, ranks=1))
    wait_for_step(run, 10)
    kill(run.process)
    interrupted_at = max(losses(run))
    assert interrupted_at < 24, "the run finished before it could be killed"
    checkpoint = int((replanned_dir / "checkpoints" / "latest-complete").read_text().split("-")[1])
    config, ds = write_configs(world, replanned_dir, **{**first, "stage": 3, "ranks": 2, "accumulation": 1},
                               port=19480)
    run.process = launch(config, ds, replanned_dir, master_port=29681, ranks=2)
    finish(run.process, replanned_dir)
    log = run.log()
    resumed = log[[entry["step"] for entry in log].index(interrupted_at) + 1:]
    assert resumed[0]["step"] == checkpoint + 1 and resumed[-1]["step"] == 24
    expected = {entry["step"]: entry for entry in reference.log()}
    for entry in resumed:
        assert entry["loss"] == pytest.approx(expected[entry["step"]]["loss"], rel=0.03), entry


def test_lora_with_fp32_adapters_learns_and_saves_fp32_adapters(world: Path, tmp_path: Path) -> None:
    """loraAdapterPrecision FP32: DeepSpeed runs without its bf16 cast, the frozen model stays bf16 as loaded and
    the adapters train, and are saved, in fp32."""
    config, ds = write_configs(world, tmp_path, method=Method.LORA, stage=2, steps=30, interval=30, port=19490,
                               adapters_fp32=True)
    run = Run(tmp_path, launch(config, ds, tmp_path, master_port=29690))
    finish(run.process, tmp_path)
    curve = [losses(run)[step] for step in sorted(losses(run))]
    assert mean(curve[-5:]) < 0.9 * mean(curve[:5]), curve  # 30 steps: LoRA's 60-step test asks 0.8
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "final" / "adapter_model.safetensors")
    assert saved and {str(t.dtype) for t in saved.values()} == {"torch.float32"}
