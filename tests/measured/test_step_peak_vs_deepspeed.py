"""The planner's allocated peak against the whole step's peak measured on the CPU: real DeepSpeed under torchrun
(gloo), tiny random-weight models of several families built as the trainer builds them, ZeRO 0-3, LoRA and full,
gradient checkpointing on and off, two sequence lengths, one and two ranks; then gradient accumulation, pure bf16
and fp32 LoRA adapters on the stages whose code they change. The probe (memprobe/peak.py) counts
live tensor bytes at every allocation and free through a step (forward with the loss, backward, optimizer step),
DeepSpeed's own buffers included, on the rank that peaks highest; the planner's estimate without what the CPU
cannot hold (memory.allocated_peak_bytes) must match it within TOLERANCE in every case. One torchrun per rank count
runs all its cases.
"""

import json
import os
import subprocess
import sys
from itertools import product
from pathlib import Path

import pytest

pytest.importorskip("deepspeed")

from kubetune.api.vocabulary import Method, Offload, Precision, ZeroStage  # noqa: E402
from kubetune.memprobe.step_peak import Case  # noqa: E402
from kubetune.planner import memory  # noqa: E402
from kubetune.planner.model_states import model_states  # noqa: E402

pytestmark = pytest.mark.measured

TOLERANCE = 0.03
FAMILIES = ("llama", "qwen2", "mixtral")
SEQ_LENS = (64, 256)


def name_of(case: Case, ranks: int) -> str:
    """The case's name in the test id, from the fields that make it: a name cannot say what its case is not."""
    extras = (f"-ga{case.gradient_accumulation}" if case.gradient_accumulation > 1 else "") + \
        ("-purebf16" if case.precision is Precision.PURE_BF16 else "") + ("-fp32adapters" if case.adapters_fp32 else "") + \
        (f"-offload{case.offload.value.lower()}" if case.offload is not Offload.NONE else "")
    return (f"{case.family}-zero{int(case.zero_stage)}-{case.method.value.lower()}"
            f"-{'ckpt' if case.gradient_checkpointing else 'nockpt'}-s{case.seq_len}{extras}-{ranks}rank")


def grid() -> dict[str, tuple[int, Case]]:
    """Every ZeRO stage with each method on one and two ranks; family, checkpointing and length rotate over them
    so that each stage meets each of them."""
    cases = {}
    for ranks, stage, (m, method) in product((1, 2), ZeroStage, enumerate((Method.FULL, Method.LORA))):
        case = Case(family=FAMILIES[(2 * stage + m + ranks) % 3], zero_stage=stage, method=method,
                    gradient_checkpointing=(stage + m + ranks) % 2 == 1, seq_len=SEQ_LENS[(stage + ranks) % 2])
        cases[name_of(case, ranks)] = (ranks, case)
    # ZeRO-1 keeps whole 16-bit gradients until the boundary when it accumulates (stage 2's code otherwise);
    # pure bf16 drops the fp32 master and keeps bf16 AdamW states; fp32 adapters run without DeepSpeed's bf16 mode.
    others = [
        (1, dict(zero_stage=ZeroStage.DISABLED, method=Method.LORA, gradient_checkpointing=True, seq_len=256,
                 gradient_accumulation=2)),
        (2, dict(family="qwen2", zero_stage=ZeroStage.OPTIMIZER, method=Method.FULL, gradient_checkpointing=False,
                 seq_len=64, gradient_accumulation=2)),
        (2, dict(family="mixtral", zero_stage=ZeroStage.GRADIENTS, method=Method.LORA, gradient_checkpointing=False,
                 seq_len=256, gradient_accumulation=2)),
        (1, dict(zero_stage=ZeroStage.DISABLED, method=Method.FULL, gradient_checkpointing=False, seq_len=64,
                 precision=Precision.PURE_BF16)),
        (2, dict(family="qwen2", zero_stage=ZeroStage.GRADIENTS, method=Method.FULL, gradient_checkpointing=True,
                 seq_len=256, precision=Precision.PURE_BF16)),
        (2, dict(zero_stage=ZeroStage.PARAMETERS, method=Method.FULL, gradient_checkpointing=False, seq_len=64,
                 precision=Precision.PURE_BF16)),
        (2, dict(zero_stage=ZeroStage.GRADIENTS, method=Method.LORA, gradient_checkpointing=True, seq_len=256,
                 adapters_fp32=True)),
        # ZeRO-3's prefetch on two ranks: LoRA's many hooked modules, with the tied head and under checkpointing.
        (2, dict(family="qwen2", zero_stage=ZeroStage.PARAMETERS, method=Method.LORA, gradient_checkpointing=False,
                 seq_len=256)),
        (2, dict(zero_stage=ZeroStage.PARAMETERS, method=Method.LORA, gradient_checkpointing=True, seq_len=256)),
        # Offload: what stays on the GPU (staging, fp64 norm copies) and the host's 16-bit buffers.
        (2, dict(zero_stage=ZeroStage.GRADIENTS, method=Method.LORA, gradient_checkpointing=False, seq_len=64,
                 offload=Offload.OPTIMIZER)),
        (2, dict(zero_stage=ZeroStage.PARAMETERS, method=Method.LORA, gradient_checkpointing=False, seq_len=64,
                 offload=Offload.ALL)),
        (2, dict(zero_stage=ZeroStage.GRADIENTS, method=Method.FULL, gradient_checkpointing=False, seq_len=64,
                 offload=Offload.OPTIMIZER)),
        (2, dict(zero_stage=ZeroStage.PARAMETERS, method=Method.FULL, gradient_checkpointing=True, seq_len=256,
                 offload=Offload.ALL)),
    ]
    for ranks, fields in others:
        case = Case(**{"family": "llama", **fields})
        cases[name_of(case, ranks)] = (ranks, case)
    return cases


GRID = grid()


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[str, dict]:
    torchrun = Path(sys.executable).parent / "torchrun"
    results = {}
    for ranks in (1, 2):
        names = [name for name, (r, _) in GRID.items() if r == ranks]
        path = tmp_path_factory.mktemp("step_peak") / f"cases-{ranks}.json"
        path.write_text(json.dumps([GRID[name][1].model_dump(mode="json") for name in names]))
        run = subprocess.run(
            [str(torchrun), "--standalone", f"--nproc_per_node={ranks}", "-m", "kubetune.memprobe.step_peak", str(path)],
            env=dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1"),
            capture_output=True, text=True, timeout=900, check=False)
        assert run.returncode == 0, run.stderr[-3000:]
        rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        results |= dict(zip(names, rows, strict=True))
    return results


@pytest.mark.parametrize("name", GRID)
def test_predicted_allocated_peak_matches_the_measured_step(measured: dict, name: str) -> None:
    ranks, case = GRID[name]
    row = measured[name]
    assert Case.model_validate(row["case"]) == case
    settings = case.settings(ranks)
    predicted = memory.allocated_peak_bytes(case.arch(), settings)
    # On the CPU the host is the device: what offload keeps on the host is measured beside what the GPU would hold.
    predicted += model_states(case.arch(), settings).cpu_per_gpu
    assert predicted == pytest.approx(row["peak_bytes"], rel=TOLERANCE), row
