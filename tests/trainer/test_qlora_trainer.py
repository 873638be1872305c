"""QLoRA through the real trainer: bitsandbytes quantises the random-weight base to 4 bits (its CPU backend runs the
4-bit matmuls), DeepSpeed ZeRO-2 trains the adapters on two CPU ranks, and the adapter is saved on its own."""

from pathlib import Path
from statistics import mean

import pytest

from kubetune.api.vocabulary import Method
from tests.trainer.conftest import Run, finish, launch, write_configs

pytest.importorskip("bitsandbytes")

pytestmark = pytest.mark.measured


def test_qlora_zero2_learns_on_a_4bit_base_and_saves_the_adapter(world: Path, tmp_path: Path) -> None:
    config, ds = write_configs(world, tmp_path, method=Method.QLORA, stage=2, steps=30, interval=30, port=19495)
    run = Run(tmp_path, launch(config, ds, tmp_path, master_port=29695))
    finish(run.process, tmp_path)
    curve = [entry["loss"] for entry in run.log()]
    assert len(curve) == 30
    assert mean(curve[-5:]) < 0.9 * mean(curve[:5]), curve  # 30 steps: as the fp32-adapter LoRA test asks

    from safetensors.torch import load_file

    saved = load_file(tmp_path / "final" / "adapter_model.safetensors")
    # Only the adapters: the 4-bit base is not the run's output.
    assert saved and all("lora_" in name for name in saved)
