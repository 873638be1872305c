"""Decoder architectures read from a Hugging Face config.json, and their parameter counts per module."""

import json
from enum import StrEnum
from functools import cache, cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class MlpType(StrEnum):
    GATED = "gated"  # SwiGLU/GeGLU: gate_proj, up_proj, down_proj
    PLAIN = "plain"  # GELU: dense_h_to_4h, dense_4h_to_h


class NormType(StrEnum):
    RMS = "rms"  # weight only; HF upcasts its input to fp32
    LAYER = "layer"  # weight and bias


class UnknownModelError(LookupError):
    """A model name that is not in the catalog and not a config.json path; the message lists the known ones."""


class UnsupportedArchitectureError(ValueError):
    """A config.json whose model_type the memory model does not know."""


class Architecture(BaseModel):
    """The shapes the memory and time models need, normalised across model families."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    model_type: str
    hidden_size: int = Field(gt=0)
    num_layers: int = Field(gt=0)
    num_heads: int = Field(gt=0)
    num_kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool
    mlp_type: MlpType
    norm_type: NormType
    # Norms per decoder layer: 2 for sequential blocks, 1 or 2 for Falcon's parallel attention.
    norms_per_layer: int = Field(ge=1, le=2)
    qkv_bias: bool = False
    linear_bias: bool = False  # bias on every linear layer (Falcon with bias=True)
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k
    num_experts: int = Field(default=1, ge=1)
    experts_per_token: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _buildable(self) -> "Architecture":
        """What transformers refuses when it builds the model (or breaks on at the first step), refused here
        first, before any GPU is held."""
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_attention_heads ({self.num_heads}) must be a multiple of num_key_value_heads "
                             f"({self.num_kv_heads}): each key/value head serves a whole group of query heads")
        if self.head_dim % 2:
            raise ValueError(f"the head dimension ({self.head_dim}) must be even: rotary embeddings rotate pairs")
        return self

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 1

    @cached_property
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear module in one layer (one expert for MoE), by HF name."""
        h, i = self.hidden_size, self.intermediate_size
        shapes = {"q_proj": (h, self.q_size), "k_proj": (h, self.kv_size), "v_proj": (h, self.kv_size),
                  "o_proj": (self.q_size, h)}
        if self.mlp_type is MlpType.GATED:
            shapes |= {"gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        else:
            shapes |= {"up_proj": (h, i), "down_proj": (i, h)}
        return shapes

    def lora_modules(self, targets: tuple[str, ...]) -> dict[str, tuple[int, int]]:
        """The LoRA targets that exist as linear layers here. Transformers fuses MoE experts into 3-D
        parameters, which PEFT's module targeting does not adapt, so an MoE model adapts attention only."""
        shapes = self.linear_shapes
        if self.is_moe:
            shapes = {name: shape for name, shape in shapes.items() if name in ("q_proj", "k_proj", "v_proj", "o_proj")}
        return {name: shapes[name] for name in targets if name in shapes}

    @cached_property
    def attention_params(self) -> int:
        shapes = self.linear_shapes
        weights = sum(a * b for name, (a, b) in shapes.items() if name in ("q_proj", "k_proj", "v_proj", "o_proj"))
        biases = 0
        if self.qkv_bias:
            biases += self.q_size + 2 * self.kv_size
        if self.linear_bias:
            biases += self.q_size + 2 * self.kv_size + self.hidden_size
        qk_norm = 2 * self.head_dim if self.qk_norm else 0
        return weights + biases + qk_norm

    @cached_property
    def expert_params(self) -> int:
        """One MLP (one expert for MoE)."""
        weights = sum(a * b for name, (a, b) in self.linear_shapes.items() if name.endswith(("gate_proj", "up_proj", "down_proj")))
        biases = self.intermediate_size + self.hidden_size if self.linear_bias else 0
        return weights + biases

    @cached_property
    def mlp_params(self) -> int:
        router = self.hidden_size * self.num_experts if self.is_moe else 0
        return self.num_experts * self.expert_params + router

    @cached_property
    def norm_params(self) -> int:
        return self.hidden_size * (2 if self.norm_type is NormType.LAYER else 1)

    @cached_property
    def layer_params(self) -> int:
        return self.attention_params + self.mlp_params + self.norms_per_layer * self.norm_params

    @cached_property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @cached_property
    def lm_head_params(self) -> int:
        """0 when tied: the head reuses the embedding matrix."""
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @cached_property
    def total_params(self) -> int:
        return (self.embedding_params + self.lm_head_params + self.num_layers * self.layer_params
                + self.norm_params)

    def layer_tensor_numels(self) -> list[int]:
        """Sizes of one layer's parameter tensors as transformers lays them out (MoE experts fused into one
        gate-up and one down tensor), for ZeRO-3's small-parameter persistence."""
        shapes = self.linear_shapes
        h, i = self.hidden_size, self.intermediate_size
        attention = [shapes[name][0] * shapes[name][1] for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
        if self.qkv_bias:
            attention += [self.q_size, self.kv_size, self.kv_size]
        if self.linear_bias:
            attention += [self.q_size, self.kv_size, self.kv_size, h, i, h]
        if self.qk_norm:
            attention += [self.head_dim, self.head_dim]
        if self.is_moe:
            mlp = [self.num_experts * 2 * i * h, self.num_experts * i * h, self.num_experts * h]
        else:
            mlp = [a * b for name, (a, b) in shapes.items() if name in ("gate_proj", "up_proj", "down_proj")]
        norms = [h] * (self.norms_per_layer * (2 if self.norm_type is NormType.LAYER else 1))
        return attention + mlp + norms

    @cached_property
    def largest_param_numel(self) -> int:
        """The largest single parameter tensor: what DeepSpeed's offload gradient buffer is sized on."""
        return max(self.embedding_params, *(a * b for a, b in self.linear_shapes.values()))


# What transformers assumes when a config.json leaves `tie_word_embeddings` out, per model_type.
_TIED_BY_DEFAULT = {"gemma", "gemma2", "falcon"}


def _tied(config: dict[str, Any]) -> bool:
    return bool(config.get("tie_word_embeddings", config.get("model_type") in _TIED_BY_DEFAULT))


def _gated_llama_like(name: str, config: dict[str, Any], **extra: Any) -> Architecture:
    heads = config["num_attention_heads"]
    hidden = config["hidden_size"]
    if isinstance(heads, int) and heads <= 0:
        raise ValueError(f"the model config's num_attention_heads ({heads}) must be more than 0")
    if isinstance(hidden, int) and isinstance(heads, int) and not config.get("head_dim") and hidden % heads:
        raise ValueError(f"the model config's hidden_size ({hidden}) must be a multiple of "
                         f"num_attention_heads ({heads}) unless it sets head_dim")
    return Architecture(
        name=name,
        model_type=config["model_type"],
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        intermediate_size=config["intermediate_size"],
        vocab_size=config["vocab_size"],
        tie_word_embeddings=_tied(config),
        mlp_type=MlpType.GATED,
        norm_type=NormType.RMS,
        norms_per_layer=2,
        **extra,
    )


def _falcon(name: str, config: dict[str, Any]) -> Architecture:
    heads = config["num_attention_heads"]
    new_arch = config.get("new_decoder_architecture", False)
    if new_arch:
        kv_heads = config.get("num_kv_heads") or heads
    else:
        kv_heads = 1 if config.get("multi_query", True) else heads
    parallel = config.get("parallel_attn", True)
    return Architecture(
        name=name,
        model_type="falcon",
        hidden_size=config["hidden_size"],
        num_layers=config["num_hidden_layers"],
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=config["hidden_size"] // heads,
        intermediate_size=config.get("ffn_hidden_size") or 4 * config["hidden_size"],
        vocab_size=config["vocab_size"],
        tie_word_embeddings=_tied(config),
        mlp_type=MlpType.PLAIN,
        norm_type=NormType.LAYER,
        # New-architecture Falcon (40B/180B) has separate ln_attn and ln_mlp; 7B's parallel block shares one.
        norms_per_layer=2 if (new_arch or not parallel) else 1,
        linear_bias=config.get("bias", False),
    )


def from_hf_config(config: dict[str, Any], name: str = "custom") -> Architecture:
    """Normalise a Hugging Face config.json (as a dict); a config that cannot describe a model (a field
    missing, of the wrong type or zero) raises ValueError naming what is wrong."""
    try:
        return _from_hf_config(config, name)
    except KeyError as missing:
        raise ValueError(f"the model config lacks {missing}, which a '{config.get('model_type')}' config.json "
                         "has") from None
    except ValidationError as error:
        first = error.errors()[0]
        # A field's error names the field; a whole-model check's is its own sentence.
        what = (f"{'.'.join(map(str, first['loc']))} {first['msg'].lower()}" if first["loc"]
                else str(first.get("ctx", {}).get("error", first["msg"])))
        raise ValueError(f"the model config is not a valid '{config.get('model_type')}' config.json: {what}") from None
    except (TypeError, ZeroDivisionError) as error:
        raise ValueError(f"the model config is not a valid '{config.get('model_type')}' config.json: "
                         f"{error}") from None


def _from_hf_config(config: dict[str, Any], name: str) -> Architecture:
    model_type = config.get("model_type")
    match model_type:
        case "llama" | "mistral" | "phi3" | "gemma" | "gemma2":
            return _gated_llama_like(name, config)
        case "qwen2":
            return _gated_llama_like(name, config, qkv_bias=True)
        case "qwen3":
            return _gated_llama_like(name, config, qk_norm=True)
        case "mixtral":
            return _gated_llama_like(name, config, num_experts=config["num_local_experts"],
                                     experts_per_token=config["num_experts_per_tok"])
        case "falcon":
            return _falcon(name, config)
        case "qwen":
            # Qwen (v1)'s own modelling code: a fused c_attn with bias for q, k and v, and w1, w2 and c_proj
            # each intermediate_size // 2 wide: the shapes of a Qwen2 layer without grouped heads.
            return _gated_llama_like(name, config | {"intermediate_size": config["intermediate_size"] // 2},
                                     qkv_bias=True)
    raise UnsupportedArchitectureError(
        f"model_type '{model_type}' is not supported; supported: "
        "llama, mistral, mixtral, qwen, qwen2, qwen3, gemma, gemma2, phi3, falcon"
    )


@cache
def catalog() -> dict[str, dict[str, Any]]:
    models: dict[str, dict[str, Any]] = yaml.safe_load(resources.files("kubetune.catalog").joinpath("models.yaml")
                                                       .read_text())
    return models


def load(name_or_path: str) -> Architecture:
    """A catalog model by name (with or without its organisation prefix), or a config.json by path."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" and path.exists():
        return from_hf_config(json.loads(path.read_text()), name=name_or_path)
    for full_name, config in catalog().items():
        if name_or_path.lower() in (full_name.lower(), full_name.split("/")[-1].lower()):
            return from_hf_config(config, name=full_name)
    known = ", ".join(catalog())
    raise UnknownModelError(f"unknown model '{name_or_path}': give a config.json path or one of: {known}")
