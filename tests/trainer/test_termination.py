"""How the trainer ends: a CUDA out-of-memory error exits with its own code and the measured peak in the
termination message; input no retry can fix exits with another code; any error leaves a one-line reason."""

import sys

import pytest
import torch

from kubetune.api import contract, trainer_config
from kubetune.trainer import run


def _run_with_a_minimal_config(monkeypatch, tmp_path) -> None:
    """Command-line arguments naming a valid trainer.json and an empty DeepSpeed config."""
    config = tmp_path / "trainer.json"
    config.write_text(f'{{"version": {trainer_config.VERSION}, "job": "j", "model": {{"name": "m"}}, '
                      '"dataset": {"source": "d"}, "training": {}, '
                      '"output": {}, "checkpointIntervalSteps": 1, "method": "LoRA", "gradientCheckpointing": false, '
                      '"attention": "SDPA", "precision": "BF16"}')
    (tmp_path / "ds.json").write_text("{}")
    monkeypatch.setattr(sys, "argv", ["trainer", f"--config={config}", f"--deepspeed={tmp_path / 'ds.json'}"])


def test_out_of_memory_exits_with_the_dedicated_code_and_the_peak(monkeypatch, tmp_path) -> None:
    def out_of_memory(*_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")  # this machine has no GPU: the trainer runs on the CPU only if told
    monkeypatch.setattr(run, "train", out_of_memory)
    monkeypatch.setattr(run.deepspeed, "init_distributed", lambda **_: None)
    monkeypatch.setattr(run, "TERMINATION_LOG", tmp_path / "termination-log")
    _run_with_a_minimal_config(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run.main()
    assert exit_info.value.code == contract.OOM_EXIT_CODE
    assert (tmp_path / "termination-log").read_text().startswith("kubetune-oom peak_allocated_bytes=")


def _end_with_config(monkeypatch, tmp_path, text: str) -> tuple[int, str]:
    """The exit code and termination message of the trainer given this trainer.json."""
    config = tmp_path / "trainer.json"
    config.write_text(text)
    (tmp_path / "ds.json").write_text("{}")
    monkeypatch.setattr(run, "TERMINATION_LOG", tmp_path / "termination-log")
    monkeypatch.setattr(sys, "argv", ["trainer", f"--config={config}", f"--deepspeed={tmp_path / 'ds.json'}"])
    with pytest.raises(SystemExit) as exit_info:
        run.main()
    return exit_info.value.code, (tmp_path / "termination-log").read_text()


def test_a_config_of_a_newer_contract_is_refused_naming_both_versions(monkeypatch, tmp_path) -> None:
    """An older trainer image given a newer operator's config: bad input (no restart), both versions named."""
    newer = trainer_config.VERSION + 1
    code, message = _end_with_config(monkeypatch, tmp_path, f'{{"version": {newer}, "job": "j"}}')
    assert code == contract.INVALID_INPUT_EXIT_CODE
    assert message.startswith(f"kubetune-invalid-input trainer.json is contract version {newer}, written by a "
                              "newer operator")
    assert f"speaks version {trainer_config.VERSION}" in message and "\n" not in message


def test_a_config_that_breaks_the_schema_names_the_field(monkeypatch, tmp_path) -> None:
    code, message = _end_with_config(monkeypatch, tmp_path, f'{{"version": {trainer_config.VERSION}, "job": "j"}}')
    assert (code, message) == (contract.INVALID_INPUT_EXIT_CODE,
                               "kubetune-invalid-input TrainerConfig model: Field required")


def test_a_pod_that_sees_no_gpu_fails_at_once_unless_its_gpus_are_simulated(monkeypatch, tmp_path) -> None:
    """A GPU pod without its driver must not crawl on the CPU for days: only simulated GPUs (or an explicit
    DS_ACCELERATOR=cpu) let the trainer run on the CPU."""
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.setattr(run, "train", lambda *_: pytest.fail("trained without a GPU"))
    monkeypatch.setattr(run, "TERMINATION_LOG", tmp_path / "termination-log")
    _run_with_a_minimal_config(monkeypatch, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run.main()
    assert exit_info.value.code == 1
    assert "no GPU is visible" in (tmp_path / "termination-log").read_text()
