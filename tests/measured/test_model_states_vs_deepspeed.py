"""Model states against real DeepSpeed: two ranks under torchrun on the CPU (gloo), a tiny Llama built as the
trainer builds it, each ZeRO stage, full and LoRA, in mixed bf16, pure bf16 and (LoRA) with fp32 adapters. After a
few steps every live tensor on rank 0 is counted (unique storages). Between steps DeepSpeed holds the weights and
the optimizer partition with its master copy (stages 0-2 free their gradient buffers after the step); stage 3 also
keeps its gradient partition and its reduce bucket. The model must match to the byte up to TOLERANCE, which covers DeepSpeed's few small bookkeeping tensors. DeepSpeed must also leave
every parameter and buffer in the dtype the activation probes give them (memprobe/tiny_models.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from kubetune.api.vocabulary import Method, Precision, ZeroStage  # noqa: E402
from kubetune.memprobe import deepspeed_states, tiny_models  # noqa: E402
from kubetune.planner import architecture  # noqa: E402
from kubetune.planner.model_states import model_states, trained_bytes  # noqa: E402

pytestmark = pytest.mark.measured

TOLERANCE = 0.001
RANKS = 2


@pytest.fixture(scope="module")
def measured() -> dict[tuple[int, str], dict]:
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run(
        [str(torchrun), "--standalone", f"--nproc_per_node={RANKS}", "-m", "kubetune.memprobe.deepspeed_states"],
        env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return {(row["stage"], row["precision"], row["method"], row["adapters_fp32"]): row for row in rows}


def skip_refused(stage: int, method: Method) -> None:
    if deepspeed_states.refused(stage, method):
        pytest.skip("QLoRA is refused on ZeRO-3 (settings.QLORA_ZERO3)")


VARIANTS = pytest.mark.parametrize(("precision", "method", "adapters_fp32"), deepspeed_states.VARIANTS,
                                   ids=[f"{p}-{m}{'-fp32-adapters' if a else ''}" for p, m, a in deepspeed_states.VARIANTS])


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@VARIANTS
def test_deepspeed_holds_what_the_model_predicts(measured: dict, stage: int, precision: Precision, method: Method,
                                                 adapters_fp32: bool) -> None:
    skip_refused(stage, method)
    row = measured[(stage, precision, method, adapters_fp32)]
    arch = architecture.from_hf_config(tiny_models.tiny_config("llama", 4, **deepspeed_states.SHAPE))
    buckets = deepspeed_states.BUCKETS
    settings = deepspeed_states.settings_for(stage, method, RANKS, precision, adapters_fp32)
    states = model_states(arch, settings)
    expected = states.weights + states.optimizer_states
    if stage == ZeroStage.PARAMETERS:
        # The reduce bucket holds gradients, in the trainable parameters' dtype.
        expected += states.gradients_persistent + buckets.reduce_bucket_elements * trained_bytes(settings).parameter
    assert expected == pytest.approx(row["at_rest_bytes"], rel=TOLERANCE), row


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@VARIANTS
def test_the_optimizer_keeps_its_states_in_the_planned_dtype_and_learns(measured: dict, stage: int,
                                                                        precision: Precision, method: Method,
                                                                        adapters_fp32: bool) -> None:
    """bf16 AdamW moments in pure bf16 (no fp32 anywhere in the optimizer), fp32 otherwise; the loss falls."""
    skip_refused(stage, method)
    row = measured[(stage, precision, method, adapters_fp32)]
    settings = deepspeed_states.settings_for(stage, method, RANKS, precision, adapters_fp32)
    dtype = {2: "torch.bfloat16", 4: "torch.float32"}[trained_bytes(settings).optimizer]
    assert row["optimizer_state_dtypes"] == [dtype]
    if stage == ZeroStage.DISABLED and (precision is Precision.PURE_BF16 or adapters_fp32):
        assert row["optimizer"] == "AdamW"  # torch's, stepping on the parameters themselves: no master copy
    assert row["losses"][-1] < row["losses"][0], row["losses"]


@pytest.mark.parametrize("stage", [0, 3])
@VARIANTS
def test_deepspeed_casts_the_module_as_the_activation_probes_assume(measured: dict, stage: int, precision: Precision,
                                                                   method: Method, adapters_fp32: bool) -> None:
    skip_refused(stage, method)
    model, _ = tiny_models.build(tiny_models.tiny_config("llama", 4, **deepspeed_states.SHAPE),
                                 deepspeed_states.settings_for(stage, method, RANKS, precision, adapters_fp32))
    assert measured[(stage, precision, method, adapters_fp32)]["dtypes"] == deepspeed_states.dtypes(model)
