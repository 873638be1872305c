"""Random-weight Hugging Face models built from a config, small enough to train on a CPU in a test."""

from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from kubetune.planner import architecture
from kubetune.planner.architecture import Architecture

# Small shapes that keep every structural feature: GQA (4 query heads per KV head), an MLP wider than the
# hidden size by a non-integer factor, and a vocabulary large enough that logits matter.
TINY = {"hidden_size": 256, "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
        "intermediate_size": 688, "vocab_size": 1000}

# Family-specific config keys on top of TINY, for each model_type the memory model supports.
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


def build(config: dict[str, Any], attention: str, dtype: torch.dtype) -> tuple[PreTrainedModel, Architecture]:
    """The model with random weights, and the memory model's view of the same config."""
    torch.manual_seed(0)
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], **kwargs)
    hf_config.use_cache = False
    for key in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if hasattr(hf_config, key):
            setattr(hf_config, key, 0.0)
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attention, dtype=dtype)
    model.train()
    return model, architecture.from_hf_config(config, name=f"tiny-{config['model_type']}")
