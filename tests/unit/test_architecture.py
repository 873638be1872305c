"""Architectures parsed from Hugging Face configs count the parameters their model cards publish."""

import json
import re
from pathlib import Path

import pytest
import yaml

from kubetune.planner import architecture

# Parameter counts as published on each model's card or Hub safetensors metadata.
PUBLISHED_PARAMS = {
    "meta-llama/Llama-2-7b-hf": 6.738e9,
    "meta-llama/Llama-2-70b-hf": 68.977e9,
    "meta-llama/Llama-3.2-1B": 1.236e9,
    "meta-llama/Llama-3.1-8B": 8.030e9,
    "meta-llama/Llama-3.1-405B": 405.85e9,
    "mistralai/Mistral-7B-v0.1": 7.242e9,
    "mistralai/Mixtral-8x7B-v0.1": 46.703e9,
    "Qwen/Qwen2.5-0.5B": 0.494e9,
    "Qwen/Qwen2.5-7B": 7.616e9,
    "Qwen/Qwen2.5-72B": 72.706e9,
    "Qwen/Qwen3-8B": 8.191e9,
    "google/gemma-7b": 8.538e9,
    "microsoft/Phi-3-mini-4k-instruct": 3.821e9,
    "tiiuae/falcon-40b": 41.84e9,
    "tiiuae/falcon-180B": 179.52e9,
}


# Qwen (v1): the time model's reference check reads them (benchmarks/reference/qwen_v1_speed.yaml); they are
# not in the catalog, as the trainer cannot load their Hub code.
QWEN_V1_PUBLISHED_PARAMS = {"Qwen/Qwen-7B": 7.721e9, "Qwen/Qwen-72B": 72.288e9}
QWEN_V1 = Path(__file__).resolve().parents[2] / "benchmarks" / "reference" / "qwen_v1_speed.yaml"


@pytest.mark.parametrize(("name", "published"), PUBLISHED_PARAMS.items())
def test_parameter_count_matches_the_published_one(name: str, published: float) -> None:
    assert architecture.load(name).total_params == pytest.approx(published, rel=1e-3)


@pytest.mark.parametrize(("name", "published"), QWEN_V1_PUBLISHED_PARAMS.items())
def test_qwen_v1_reference_configs_count_the_published_parameters(name: str, published: float) -> None:
    config = yaml.safe_load(QWEN_V1.read_text())["models"][name]
    assert architecture.from_hf_config(config, name=name).total_params == pytest.approx(published, rel=1e-3)


def test_short_name_and_config_path_both_load(tmp_path) -> None:
    config = architecture.catalog()["Qwen/Qwen2.5-7B"] | {"architectures": ["Qwen2ForCausalLM"], "rope_theta": 1e6}
    (tmp_path / "config.json").write_text(json.dumps(config))
    from_path = architecture.load(str(tmp_path))
    assert from_path.total_params == architecture.load("qwen2.5-7b").total_params
    assert from_path.qkv_bias


def test_gqa_and_tied_embeddings_are_read() -> None:
    llama = architecture.load("Llama-3.2-1B")
    assert (llama.num_kv_heads, llama.head_dim, llama.tie_word_embeddings) == (8, 64, True)
    assert llama.lm_head_params == 0


def test_mixtral_counts_every_expert() -> None:
    mixtral = architecture.load("Mixtral-8x7B-v0.1")
    assert mixtral.num_experts == 8 and mixtral.experts_per_token == 2
    assert mixtral.mlp_params == 8 * 3 * 4096 * 14336 + 4096 * 8


def test_unknown_model_lists_the_catalog() -> None:
    with pytest.raises(architecture.UnknownModelError, match="Llama-3.1-8B"):
        architecture.load("gpt-5")


def test_unsupported_model_type_is_a_clear_error() -> None:
    with pytest.raises(architecture.UnsupportedArchitectureError, match="'bert'.*llama"):
        architecture.from_hf_config({"model_type": "bert"})


TINY = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 128, "vocab_size": 100}


@pytest.mark.parametrize(("change", "says"), [
    ({"hidden_size": 66}, "hidden_size (66) must be a multiple of num_attention_heads (4)"),
    ({"num_key_value_heads": 8}, "num_attention_heads (4) must be a multiple of num_key_value_heads (8)"),
    ({"num_key_value_heads": 3}, "num_attention_heads (4) must be a multiple of num_key_value_heads (3)"),
    ({"hidden_size": 60}, "the head dimension (15) must be even"),
])
def test_configs_transformers_cannot_build_are_refused_before_any_gpu_is_held(change: dict, says: str) -> None:
    """Each of these fails in transformers (at build, or at the first step), checked by hand on 2026-12-02."""
    with pytest.raises(ValueError, match=re.escape(says)):
        architecture.from_hf_config(TINY | change)


def test_an_explicit_head_dim_may_differ_from_hidden_over_heads() -> None:
    """Gemma's 7B: 16 heads of 256 over a hidden size of 3072."""
    arch = architecture.from_hf_config(TINY | {"hidden_size": 72, "head_dim": 32})
    assert arch.q_size == 128 and arch.hidden_size == 72
