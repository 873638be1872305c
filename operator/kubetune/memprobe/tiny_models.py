"""Random-weight Hugging Face models built from a config, small enough to train on a CPU in a test, and
prepared by the trainer's own code (trainer/model_setup.py) from the trainer.json the operator would write for
the same settings: the measured tests check the memory model against what trains."""

from typing import Any

import torch

from kubetune.api import v1alpha1 as api
from kubetune.api.trainer_config import LoraConfig, TrainerConfig
from kubetune.api.vocabulary import AdapterPrecision
from kubetune.planner import architecture
from kubetune.planner.architecture import Architecture
from kubetune.planner.ds_config import ds_config
from kubetune.planner.settings import TrainingSettings
from kubetune.trainer import model_setup

# Small shapes that keep every structural feature: GQA (4 query heads per KV head), an MLP wider than the
# hidden size by a non-integer factor, and a vocabulary large enough that logits matter.
TINY = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "intermediate_size": 688, "vocab_size": 1000}

# Family-specific config keys on top of TINY, for each model_type the memory model supports. Every family's
# dropouts default to 0 (as in the released checkpoints), so the trainer's model is deterministic here.
FAMILIES: dict[str, dict[str, Any]] = {
    "llama": {},
    "mistral": {"sliding_window": None},
    "qwen2": {"tie_word_embeddings": True},
    "qwen3": {"head_dim": 32},
    "gemma": {"head_dim": 32, "hidden_activation": "gelu_pytorch_tanh"},
    "phi3": {"num_key_value_heads": 8, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 1},
    "mixtral": {"num_local_experts": 4, "num_experts_per_tok": 2, "intermediate_size": 344},
    "falcon": {"new_decoder_architecture": True, "num_kv_heads": 2, "parallel_attn": True, "bias": False,
               "ffn_hidden_size": 1024, "alibi": False, "tie_word_embeddings": False},
}


def tiny_config(model_type: str, num_layers: int, **overrides: Any) -> dict[str, Any]:
    config = {"model_type": model_type, **TINY, **FAMILIES[model_type], **overrides}
    config["num_hidden_layers"] = num_layers
    if model_type == "falcon":
        config.pop("num_key_value_heads")
        config.pop("intermediate_size")
    return config


def trainer_config(model_config: dict[str, Any], settings: TrainingSettings, seed: int = 0) -> TrainerConfig:
    """The trainer.json the operator writes for these settings (resources/config_map.py), for a model given by
    its config: random weights, no download."""
    lora = settings.lora
    return TrainerConfig(
        job="memprobe", model=api.ModelSource(name=f"tiny-{model_config['model_type']}", config=model_config),
        dataset=api.Dataset(source="unused.jsonl"), training=api.Training(seq_len=settings.seq_len, seed=seed),
        output=api.Output(), checkpoint_interval_steps=1, method=settings.method,
        lora=LoraConfig(rank=lora.rank, alpha=2 * lora.rank, targets=list(lora.target_modules), dropout=lora.dropout,
                        adapter_precision=AdapterPrecision.FP32 if lora.adapters_fp32 else AdapterPrecision.MODEL)
        if settings.method.trains_adapters else None,
        gradient_checkpointing=settings.gradient_checkpointing, attention=settings.attention,
        precision=settings.precision, loss_chunk_tokens=settings.loss_chunk_tokens,
    )


def trainer_model(model_config: dict[str, Any], settings: TrainingSettings) -> torch.nn.Module:
    """The model the trainer hands to deepspeed.initialize for these settings."""
    return model_setup.build_model(trainer_config(model_config, settings))


def as_deepspeed_casts(model: torch.nn.Module, settings: TrainingSettings) -> torch.nn.Module:
    """What deepspeed.initialize does to the module's dtypes (engine._cast_module_mixed_precision) with the plan's
    ds_config: in its bf16 or fp16 mode every floating-point parameter, adapters included, in that dtype; buffers
    left as they are; without one (fp32, fp32 LoRA adapters, pure bf16 without ZeRO) nothing."""
    config = ds_config(settings)
    dtype = torch.bfloat16 if config["bf16"]["enabled"] else torch.float16 if config["fp16"]["enabled"] else None
    if dtype is not None:
        for parameter in model.parameters():
            if parameter.dtype.is_floating_point and parameter.dtype != dtype:
                parameter.data = parameter.data.to(dtype)
    return model


def build(model_config: dict[str, Any], settings: TrainingSettings) -> tuple[torch.nn.Module, Architecture]:
    """The model as it trains under DeepSpeed for these settings, and the memory model's view of its config."""
    model = as_deepspeed_casts(trainer_model(model_config, settings), settings)
    return model, architecture.from_hf_config(model_config, name=f"tiny-{model_config['model_type']}")
