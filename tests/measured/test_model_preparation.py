"""The measured tests measure what trains: the model the memory probes build for a set of training settings
(memprobe/tiny_models.py) is prepared as the trainer prepares the model of the trainer.json the operator writes
for the same settings: the same training mode, attention kernel, checkpointing function and flags, input
gradients, LoRA layers and dtypes, and it saves the same bytes for backward and computes the same loss. A Hub
checkpoint is prepared like random weights from a config, and LoRA adapts exactly the modules the memory model
counts."""

from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("deepspeed")

from kubetune.api import trainer_config  # noqa: E402
from kubetune.api import v1alpha1 as api  # noqa: E402
from kubetune.api.vocabulary import Attention, Method, Precision  # noqa: E402
from kubetune.memprobe import probes, tiny_models  # noqa: E402
from kubetune.planner import architecture  # noqa: E402
from kubetune.planner.settings import Lora, TrainingSettings  # noqa: E402
from kubetune.resources.config_map import config_map  # noqa: E402
from kubetune.trainer import model_setup, run  # noqa: E402

pytestmark = pytest.mark.measured

SEQ_LEN, MICRO_BATCH, LAYERS = 64, 2, 2
FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "mixtral")
CHECKPOINT = (f"{torch.utils.checkpoint.checkpoint.__module__}.{torch.utils.checkpoint.checkpoint.__qualname__}",
              (), (("use_reentrant", False),))


def operators_trainer_config(model_config: dict, settings: TrainingSettings) -> trainer_config.TrainerConfig:
    """trainer.json as the operator writes it for these settings, read as the trainer reads it. (No plan: the
    trainer only reports it.)"""
    spec = api.FineTuneJobSpec(model=api.ModelSource(name="tiny", config=model_config),
                               dataset=api.Dataset(source="unused.jsonl"),
                               training=api.Training(seq_len=settings.seq_len, seed=0))
    config, ignored = trainer_config.parse(config_map("memprobe", spec, None, settings)["data"]["trainer.json"])
    assert not ignored
    return config


def observed(model: torch.nn.Module, ids: torch.Tensor) -> tuple[dict, int, float]:
    description = probes.preparation(model, ids)
    torch.manual_seed(1)  # the same dropout masks for both models
    saved = probes.saved_for_backward(model, ids)
    return description, saved.total, saved.loss.item()


SETTINGS = {
    "lora-checkpointed-dropout": dict(method=Method.LORA, gradient_checkpointing=True,
                                      lora=Lora(rank=8, dropout=0.1, target_modules=("q_proj", "v_proj"))),
    "lora-eager": dict(method=Method.LORA, attention=Attention.EAGER),
    "lora-flash-falls-back": dict(method=Method.LORA, attention=Attention.FLASH_ATTENTION_2),
    "full-checkpointed-fp32": dict(method=Method.FULL, gradient_checkpointing=True, precision=Precision.FP32),
    "full-sdpa": dict(method=Method.FULL),
}


@pytest.mark.parametrize("case", SETTINGS.values(), ids=SETTINGS.keys())
def test_the_probes_model_is_the_one_the_trainer_builds_from_the_operators_config(case: dict) -> None:
    settings = TrainingSettings(seq_len=SEQ_LEN, micro_batch=MICRO_BATCH, **case)
    model_config = tiny_models.tiny_config("llama", LAYERS)
    probe, arch = tiny_models.build(model_config, settings)
    trained = tiny_models.as_deepspeed_casts(run.build_model(operators_trainer_config(model_config, settings)),
                                             settings)
    ids = torch.randint(0, arch.vocab_size, (MICRO_BATCH, SEQ_LEN))
    expected = observed(trained, ids)
    assert observed(probe, ids) == expected

    # And the trainer's preparation is the one the memory model describes.
    description = expected[0]
    assert description["training"] == [True]
    assert description["attention"] == model_setup.attn_implementation(settings.attention)
    assert description["use_cache"] is False
    checkpointed = {name for name, how in description["checkpointing"].items() if how == (True, CHECKPOINT)}
    layers = {f"model.layers.{i}" for i in range(LAYERS)}
    assert (layers & checkpointed) == (layers if settings.gradient_checkpointing else set())
    assert checkpointed == set(description["checkpointing"])
    assert description["embeddings_require_grad"] is (settings.gradient_checkpointing or settings.method is Method.FULL)
    dtype = str(model_setup.DTYPE[settings.precision])
    assert {description["dtypes"][name] for name in description["trainable"]} == {dtype}
    if settings.method is Method.LORA:
        adapted = {(r["default"], scaling["default"], dropout["default"])
                   for r, scaling, dropout in description["lora"].values()}
        assert adapted == {(settings.lora.rank, 2.0, settings.lora.dropout)}
        assert all(".lora_" in name for name in description["trainable"])
    else:
        assert not description["lora"]


@pytest.mark.parametrize("method", list(Method))
def test_a_checkpoint_on_disk_is_prepared_like_random_weights_from_a_config(tmp_path, method: Method) -> None:
    """from_pretrained returns a model in eval mode, where transformers skips gradient checkpointing and dropout:
    the trainer must train it in training mode, as the probes measure it."""
    settings = TrainingSettings(seq_len=SEQ_LEN, micro_batch=MICRO_BATCH, method=method, gradient_checkpointing=True,
                                lora=Lora(dropout=0.1))
    model_config = tiny_models.tiny_config("llama", LAYERS)
    # The same weights in 16 bits, as the Hub keeps them.
    plain = replace(settings, method=Method.FULL, gradient_checkpointing=False)
    tiny_models.trainer_model(model_config, plain).to(torch.bfloat16).save_pretrained(tmp_path)
    on_disk = tiny_models.trainer_config(model_config, settings).model_copy(
        update={"model": api.ModelSource(name=str(tmp_path))})
    loaded = tiny_models.as_deepspeed_casts(model_setup.build_model(on_disk), settings)
    inline, arch = tiny_models.build(model_config, settings)
    ids = torch.randint(0, arch.vocab_size, (MICRO_BATCH, SEQ_LEN))
    assert observed(loaded, ids) == observed(inline, ids)


def test_an_fp32_plan_trains_a_16_bit_checkpoint_in_fp32(tmp_path) -> None:
    """DeepSpeed casts nothing under FP32: the trainer loads the checkpoint as fp32, as the plan counts it."""
    settings = TrainingSettings(seq_len=SEQ_LEN, method=Method.FULL, precision=Precision.FP32)
    model_config = tiny_models.tiny_config("llama", LAYERS)
    tiny_models.trainer_model(model_config, settings).to(torch.bfloat16).save_pretrained(tmp_path)
    on_disk = tiny_models.trainer_config(model_config, settings).model_copy(
        update={"model": api.ModelSource(name=str(tmp_path))})
    assert {p.dtype for p in model_setup.build_model(on_disk).parameters()} == {torch.float32}


@pytest.mark.parametrize("model_type", FAMILIES)
def test_lora_adapts_exactly_the_modules_the_memory_model_counts(model_type: str) -> None:
    settings = TrainingSettings(seq_len=SEQ_LEN, method=Method.LORA)
    model_config = tiny_models.tiny_config(model_type, LAYERS)
    model = tiny_models.trainer_model(model_config, settings)
    adapted = [name for name, module in model.named_modules()
               if isinstance(getattr(module, "r", None), dict) and hasattr(module, "lora_A")]
    counted = set(architecture.from_hf_config(model_config).lora_modules(settings.lora.target_modules))
    assert {name.rsplit(".", 1)[-1] for name in adapted} == counted
    assert len(adapted) == LAYERS * len(counted)
