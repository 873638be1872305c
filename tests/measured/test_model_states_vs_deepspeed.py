"""Model states against real DeepSpeed: two ranks under torchrun on the CPU (gloo), a tiny Llama built as the
trainer builds it, each ZeRO stage, full and LoRA. After two steps every live tensor on rank 0 is counted (unique
storages). Between steps DeepSpeed holds the weights and the optimizer partition (stages 0-2 free their gradient
buffers after the step); stage 3 also keeps its gradient partition and its reduce bucket. The model must match
to the byte up to TOLERANCE, which covers DeepSpeed's few small bookkeeping tensors. DeepSpeed must also leave
every parameter and buffer in the dtype the activation probes give them (memprobe/tiny_models.py).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from kubetune.api.vocabulary import Method, ZeroStage  # noqa: E402
from kubetune.memprobe import deepspeed_states, tiny_models  # noqa: E402
from kubetune.planner import architecture  # noqa: E402
from kubetune.planner.model_states import model_states  # noqa: E402

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
    return {(row["stage"], row["method"]): row for row in rows}


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
@pytest.mark.parametrize("method", list(Method))
def test_deepspeed_holds_what_the_model_predicts(measured: dict, stage: int, method: Method) -> None:
    if method is Method.QLORA and stage == ZeroStage.PARAMETERS:
        pytest.skip("QLoRA is refused on ZeRO-3 (settings.QLORA_ZERO3)")
    row = measured[(stage, method)]
    arch = architecture.from_hf_config(tiny_models.tiny_config("llama", 4, **deepspeed_states.SHAPE))
    buckets = deepspeed_states.BUCKETS
    settings = deepspeed_states.settings_for(stage, method, RANKS)
    states = model_states(arch, settings)
    expected = states.weights + states.optimizer_states
    if stage == ZeroStage.PARAMETERS:
        expected += states.gradients_persistent + buckets.reduce_bucket_elements * settings.precision.bytes
    assert expected == pytest.approx(row["at_rest_bytes"], rel=TOLERANCE), row


@pytest.mark.parametrize("stage", [0, 3])
@pytest.mark.parametrize("method", list(Method))
def test_deepspeed_casts_the_module_as_the_activation_probes_assume(measured: dict, stage: int,
                                                                   method: Method) -> None:
    if method is Method.QLORA and stage == ZeroStage.PARAMETERS:
        pytest.skip("QLoRA is refused on ZeRO-3 (settings.QLORA_ZERO3)")
    model, _ = tiny_models.build(tiny_models.tiny_config("llama", 4, **deepspeed_states.SHAPE),
                                 deepspeed_states.settings_for(stage, method, RANKS))
    assert measured[(stage, method)]["dtypes"] == deepspeed_states.dtypes(model)
