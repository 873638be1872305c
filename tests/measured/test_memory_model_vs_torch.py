"""The memory model against what real training steps hold, measured on the CPU.

Tiny random-weight Hugging Face models are built from configs of several families and prepared by the trainer's
own code (trainer/model_setup.py) from the trainer.json the operator writes for the same settings, with the dtypes
DeepSpeed gives them (memprobe/tiny_models.py). Saved activations are the
unique storages autograd keeps for backward (saved-tensor hooks; parameters excluded); a layer's share is the
difference between a 4-layer and a 2-layer model, halved, so it is measured apart from the embedding, the
final norm and the loss. Parameters, gradients and optimizer states are read after a real AdamW step.
Every component must match within TOLERANCE. Falcon and Phi-3 are left out: their fused projections keep
views of whole fused outputs, which the model does not describe yet.
"""

from dataclasses import dataclass

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from kubetune.api.vocabulary import Attention, Method, Precision  # noqa: E402
from kubetune.memprobe import probes, tiny_models  # noqa: E402
from kubetune.planner import activations  # noqa: E402
from kubetune.planner.model_states import model_states  # noqa: E402
from kubetune.planner.settings import Lora, TrainingSettings  # noqa: E402

pytestmark = pytest.mark.measured

TOLERANCE = 0.02
SEQ_LEN, MICRO_BATCH = 128, 2
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "mixtral")


@dataclass(frozen=True)
class Measured:
    per_layer: float
    two_layer_total: int


def measure(model_type: str, settings: TrainingSettings) -> tuple[Measured, object]:
    totals = {}
    for layers in (2, 4):
        model, arch = tiny_models.build(tiny_models.tiny_config(model_type, layers), settings)
        ids = torch.randint(0, arch.vocab_size, (MICRO_BATCH, SEQ_LEN))
        totals[layers] = probes.saved_for_backward(model, ids).total
    return Measured((totals[4] - totals[2]) / 2, totals[2]), arch


def predicted_two_layer_total(arch, settings: TrainingSettings) -> int:
    if settings.gradient_checkpointing:
        layers = 2 * activations.checkpointed_layer(arch, settings)
    else:
        layers = activations.first_layer(arch, settings, "cpu").total + activations.layer(arch, settings, "cpu").total
    return layers + activations.outside_layers(arch, settings).total + activations.logits_saved(arch, settings)


def settings_for(**kwargs) -> TrainingSettings:
    return TrainingSettings(seq_len=SEQ_LEN, micro_batch=MICRO_BATCH, zero_stage=0, **kwargs)


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize(("attention", "method"), [
    *((attention, method) for attention in (Attention.SDPA, Attention.EAGER) for method in (Method.LORA, Method.FULL)),
    # A frozen 4-bit layer saves for backward what a frozen 16-bit one does, whatever the attention kernel.
    (Attention.SDPA, Method.QLORA)])
def test_saved_activations_match_per_family(model_type: str, attention: Attention, method: Method) -> None:
    settings = settings_for(attention=attention, method=method)
    measured, arch = measure(model_type, settings)
    assert activations.layer(arch, settings, "cpu").total == pytest.approx(measured.per_layer, rel=TOLERANCE)
    assert predicted_two_layer_total(arch, settings) == pytest.approx(measured.two_layer_total, rel=TOLERANCE)


@pytest.mark.parametrize(
    "lora",
    [
        Lora(adapters_fp32=True),
        Lora(dropout=0.05),
        Lora(dropout=0.05, adapters_fp32=True),
        Lora(target_modules=("q_proj", "v_proj")),
        Lora(target_modules=("q_proj", "v_proj"), dropout=0.1),
        Lora(rank=64),
    ],
    ids=["fp32-adapters", "dropout", "dropout-fp32-adapters", "q-v-only", "q-v-dropout", "rank-64"],
)
def test_lora_dtype_targets_and_dropout_change_saved_activations(lora: Lora) -> None:
    settings = settings_for(method=Method.LORA, lora=lora)
    measured, arch = measure("llama", settings)
    assert activations.layer(arch, settings, "cpu").total == pytest.approx(measured.per_layer, rel=TOLERANCE)
    assert predicted_two_layer_total(arch, settings) == pytest.approx(measured.two_layer_total, rel=TOLERANCE)


@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize("precision", [Precision.BF16, Precision.FP32])
def test_gradient_checkpointing_keeps_only_layer_inputs(method: Method, precision: Precision) -> None:
    settings = settings_for(method=method, precision=precision, gradient_checkpointing=True)
    measured, arch = measure("qwen2", settings)
    assert activations.checkpointed_layer(arch, settings) == pytest.approx(measured.per_layer, rel=TOLERANCE)
    assert predicted_two_layer_total(arch, settings) == pytest.approx(measured.two_layer_total, rel=TOLERANCE)


def test_fp32_training_activations_match() -> None:
    settings = settings_for(method=Method.FULL, precision=Precision.FP32)
    measured, arch = measure("llama", settings)
    assert activations.layer(arch, settings, "cpu").total == pytest.approx(measured.per_layer, rel=TOLERANCE)


def test_lora_saves_more_than_full_fine_tuning_with_fp32_adapters() -> None:
    """The survey's surprise, reproduced: LoRA's saving is in model states, not in activations."""
    full, _ = measure("llama", settings_for(method=Method.FULL))
    lora, _ = measure("llama", settings_for(method=Method.LORA, lora=Lora(adapters_fp32=True)))
    assert lora.per_layer > 1.4 * full.per_layer


@pytest.mark.parametrize("model_type", FAMILIES)
@pytest.mark.parametrize(("method", "precision", "lora"), [
    (Method.FULL, Precision.FP32, Lora()), (Method.LORA, Precision.FP32, Lora()),
    (Method.FULL, Precision.PURE_BF16, Lora()), (Method.LORA, Precision.PURE_BF16, Lora()),
    (Method.LORA, Precision.BF16, Lora(adapters_fp32=True)), (Method.QLORA, Precision.FP32, Lora())],
    ids=["full-fp32", "lora-fp32", "full-pure-bf16", "lora-pure-bf16", "lora-fp32-adapters", "qlora-fp32"])
def test_weights_gradients_and_optimizer_states_after_a_real_step(model_type: str, method: Method,
                                                                   precision: Precision, lora: Lora) -> None:
    # Where DeepSpeed's ZeRO-0 runs torch's AdamW on the parameters themselves (fp32, pure bf16, fp32 adapters beside
    # a bf16 model), the model's states are exactly what torch's AdamW holds after a step: 8 bytes per trained
    # parameter in pure bf16 (2 weight, 2 gradient, 2 x 2 moments), 16 in fp32.
    settings = settings_for(method=method, precision=precision, lora=lora)
    model, arch = tiny_models.build(tiny_models.tiny_config(model_type, 2), settings)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], foreach=False)
    measured = probes.train_step_states(model, torch.randint(0, arch.vocab_size, (1, 32)), optimizer)
    states = model_states(arch, settings)
    assert states.weights == measured.weights  # LoRA's adapters included
    assert states.gradients_persistent + states.gradients_backward == measured.gradients
    assert states.optimizer_states == measured.optimizer_states
    if precision is Precision.PURE_BF16 and method is Method.FULL:
        assert measured.weights + measured.gradients + measured.optimizer_states == 8 * measured.trainable_params
