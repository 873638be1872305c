"""QLoRA's memory against bitsandbytes on the CPU: the model the trainer prepares (trainer/model_setup.py: NF4 with
double quantisation through a real checkpoint load) holds exactly the bytes planner/quantization.py counts, its
4-bit constants included, trains the adapters LoRA's states describe, and dequantises one weight at a time.
(Its saved activations are checked with every method's in test_memory_model_vs_torch.py.)"""

import weakref

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("bitsandbytes")

from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from kubetune.api.vocabulary import Method, Precision  # noqa: E402
from kubetune.memprobe import probes, tiny_models  # noqa: E402
from kubetune.planner import quantization  # noqa: E402
from kubetune.planner.model_states import model_states  # noqa: E402
from kubetune.planner.settings import TrainingSettings  # noqa: E402

pytestmark = pytest.mark.measured

# Llama; Qwen2 with q/k/v biases (kept 16-bit) and tied embeddings; Mixtral, whose fused experts stay unquantised.
FAMILIES = ("llama", "qwen2", "mixtral")


def settings_for(precision: Precision) -> TrainingSettings:
    return TrainingSettings(seq_len=32, method=Method.QLORA, zero_stage=0, precision=precision)


@pytest.mark.parametrize("model_type", FAMILIES)
def test_4bit_weights_adapters_gradients_and_adamw_states_after_a_real_step(model_type: str) -> None:
    # fp32 without DeepSpeed holds exactly what torch's AdamW holds: the model's ZeRO-0 fp32 case.
    settings = settings_for(Precision.FP32)
    model, arch = tiny_models.build(tiny_models.tiny_config(model_type, 2), settings)
    four_bit = [p for p in model.parameters() if getattr(p, "quant_state", None) is not None]
    assert sum(2 * p.numel() for p in four_bit) == quantization.quantized_params(arch)  # two codes per byte
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], foreach=False)
    measured = probes.train_step_states(model, torch.randint(0, arch.vocab_size, (1, 32)), optimizer)
    states = model_states(arch, settings)
    assert states.weights == measured.weights
    assert states.gradients_persistent + states.gradients_backward == measured.gradients
    assert states.optimizer_states == measured.optimizer_states


def test_the_bf16_base_is_a_quarter_of_loras_but_for_what_stays_16_bit() -> None:
    settings = settings_for(Precision.BF16)
    model, arch = tiny_models.build(tiny_models.tiny_config("llama", 2), settings)
    measured = sum(p.numel() * p.element_size() + probes.quantization_constant_bytes(p) for p in model.parameters())
    assert measured == model_states(arch, settings).weights
    sixteen_bit = {str(p.dtype) for p in model.parameters() if getattr(p, "quant_state", None) is None}
    assert sixteen_bit == {"torch.bfloat16"}  # embeddings, head, norms and adapters, as DeepSpeed casts them


class DequantisedPeak(TorchDispatchMode):
    """The most bytes bitsandbytes' dequantisation outputs (4-bit weights to 16 bits, 8-bit absmaxes to fp32) hold
    at once: every op passes the dispatcher, and a weak reference tells whether an output is still alive."""

    def __init__(self) -> None:
        super().__init__()
        self.alive: list[weakref.ref] = []
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if str(func).startswith("bitsandbytes.dequantize") and isinstance(out, torch.Tensor):
            self.alive = [ref for ref in self.alive if ref() is not None] + [weakref.ref(out)]
            self.peak = max(self.peak, sum(t.untyped_storage().nbytes() for ref in self.alive if (t := ref()) is not None))
        return out


@pytest.mark.parametrize("checkpointing", [False, True])
def test_one_dequantised_weight_at_a_time_the_largest_in_the_compute_dtype(checkpointing: bool) -> None:
    settings = TrainingSettings(seq_len=32, micro_batch=2, method=Method.QLORA, zero_stage=0,
                                gradient_checkpointing=checkpointing)
    model, arch = tiny_models.build(tiny_models.tiny_config("llama", 2), settings)
    ids = torch.randint(0, arch.vocab_size, (2, 32))
    probe = DequantisedPeak()
    with probe:  # forward, the recomputation when checkpointing, and backward
        model(input_ids=ids, labels=ids).loss.backward()
    assert probe.peak == quantization.dequantization_bytes(arch, settings.precision.bytes)
    assert probe.peak == model_states(arch, settings).buffers  # all the buffers QLoRA has at ZeRO-0
