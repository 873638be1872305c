"""QLoRA in the planner: what its 4-bit base holds, that it is planned only when asked for, and what it refuses.
(tests/measured/test_qlora_memory.py checks the same bytes against bitsandbytes on the CPU.)"""

import subprocess
import sys
from pathlib import Path

import pytest

from kubetune.api.vocabulary import Method, Offload, Precision, ZeroStage
from kubetune.catalog import gpus
from kubetune.planner import architecture, quantization, search
from kubetune.planner.model_states import model_states
from kubetune.planner.settings import QLORA_ZERO3, TrainingSettings

GIB = 1024**3


def plan(model: str, gpu: str, num_gpus: int, **request) -> search.SearchResult:
    pool = search.GpuPool(gpu=gpus.by_id(gpu), gpus_per_node=8)
    return search.plan(architecture.load(model), search.Request(num_gpus=num_gpus, **request), [pool])


def test_the_4bit_base_holds_4_127_bits_per_quantised_weight_and_16_bits_for_the_rest() -> None:
    arch = architecture.load("Llama-3.1-8B")
    lora = TrainingSettings(seq_len=2048, method=Method.LORA, zero_stage=ZeroStage.DISABLED)
    qlora = TrainingSettings(seq_len=2048, method=Method.QLORA, zero_stage=ZeroStage.DISABLED)
    quantised = quantization.quantized_params(arch)
    # Every linear layer of the decoder (7 per layer); embeddings, LM head and norms stay bf16.
    assert quantised == arch.num_layers * sum(a * b for a, b in arch.linear_shapes.values())
    bits = quantization.quantized_bytes(arch) * 8 / quantised
    assert 4.126 < bits < 4.128  # 4 + 8/64 (8-bit absmax per 64) + 32/(64*256) (fp32 absmax per 256 blocks)
    adapters = model_states(arch, lora).weights - arch.total_params * 2
    assert model_states(arch, qlora).weights == (quantization.quantized_bytes(arch)
                                                 + (arch.total_params - quantised) * 2 + adapters)
    # The 8B: 15.0 GiB of bf16 weights for LoRA, 5.4 GiB for QLoRA (2.0 of them the 16-bit embeddings and head).
    assert round(model_states(arch, lora).weights / GIB, 1) == 15.0
    assert round(model_states(arch, qlora).weights / GIB, 1) == 5.4


def test_a_dequantised_weight_is_a_buffer_of_the_largest_linear_layer_in_the_compute_dtype() -> None:
    arch = architecture.load("Llama-3.1-8B")
    for precision, width in ((Precision.BF16, 2), (Precision.FP32, 4)):
        qlora = TrainingSettings(seq_len=2048, method=Method.QLORA, zero_stage=ZeroStage.DISABLED, precision=precision)
        largest = arch.hidden_size * arch.intermediate_size  # gate, up and down projections
        assert model_states(arch, qlora).buffers == largest * width + largest // 64 * 4


def test_qlora_fits_a_70b_on_one_80gb_gpu_where_lora_does_not() -> None:
    # Without offload: LoRA on one GPU would otherwise keep the 70B's weights in host memory.
    lora = plan("Llama-3.1-70B", "A100-SXM4-80GB", 1, seq_len=2048, global_batch=8, method=Method.LORA,
                offload=Offload.NONE)
    assert lora.chosen is None
    qlora = plan("Llama-3.1-70B", "A100-SXM4-80GB", 1, seq_len=2048, global_batch=8, method=Method.QLORA,
                 offload=Offload.NONE)
    assert qlora.chosen is not None and qlora.chosen.settings.method is Method.QLORA
    assert any("dequantising the 4-bit weights" in line for line in qlora.explanation)


def test_auto_never_chooses_qlora_even_when_nothing_else_fits() -> None:
    result = plan("Llama-3.1-70B", "A100-SXM4-80GB", 1, seq_len=2048, global_batch=8, offload=Offload.NONE)
    assert result.chosen is None  # QLoRA would fit (above): it changes what is trained, so only a spec asks for it
    assert result.explanation[-1].startswith("QLoRA would fit: ") and "ask for method QLoRA" in result.explanation[-1]
    # Where QLoRA would not fit either, nothing is said of it.
    tiny = plan("Llama-3.1-70B", "L4-24GB", 1, seq_len=2048, global_batch=8, offload=Offload.NONE)
    assert tiny.chosen is None and not any("QLoRA" in line for line in tiny.explanation)


def test_qlora_is_never_planned_on_zero3_and_a_pinned_zero3_is_refused_with_the_reason() -> None:
    result = plan("Llama-3.1-70B", "H100-SXM-80GB", 8, seq_len=2048, method=Method.QLORA)
    assert result.chosen is not None and result.chosen.settings.zero_stage is not ZeroStage.PARAMETERS
    with pytest.raises(ValueError, match="ZeRO-3 cannot partition bitsandbytes' 4-bit weights"):
        plan("Llama-3.1-70B", "H100-SXM-80GB", 8, seq_len=2048, method=Method.QLORA, zero_stage=ZeroStage.PARAMETERS)
    with pytest.raises(ValueError, match="ZeRO stage 0-2"):
        TrainingSettings(seq_len=2048, method=Method.QLORA, zero_stage=ZeroStage.PARAMETERS)
    assert "ZeRO-3" in QLORA_ZERO3


def test_the_cli_refuses_a_pinned_zero3_qlora_with_the_reason() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "kubetune"), "plan", "--model", "Llama-3.1-70B", "--gpu",
                             "H100-SXM-80GB", "--gpus", "8", "--seq-len", "2048", "--method", "QLoRA", "--zero-stage", "3"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "ZeRO stage 0-2" in " ".join(result.stdout.split()) and "Traceback" not in result.stdout + result.stderr
