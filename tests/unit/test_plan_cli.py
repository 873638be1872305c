"""`kubetune plan`: the stable command-line interface other tools call."""

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

KUBETUNE = [str(Path(sys.executable).parent / "kubetune")]
MEMORY_KEYS = {"weights_bytes", "gradients_bytes", "optimizer_states_bytes", "activations_bytes", "logits_bytes",
               "buffers_bytes", "overhead_bytes", "total_bytes"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBETUNE, "plan", *args], capture_output=True, text=True, timeout=60, check=False)


def test_json_has_the_chosen_configuration_and_a_memory_breakdown() -> None:
    result = run("--model", "Llama-3.1-8B", "--gpu", "H100-SXM-80GB", "--gpus", "8", "--seq-len", "4096", "--json")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["fits"] is True
    chosen = plan["chosen"]
    for field in ("gpu", "num_gpus", "seq_len", "micro_batch", "method", "lora_rank", "zero_stage", "offload",
                  "gradient_checkpointing", "attention"):
        assert field in chosen
    assert chosen["num_gpus"] == 8
    assert MEMORY_KEYS <= plan["memory"].keys()
    parts = sum(plan["memory"][k] for k in MEMORY_KEYS - {"total_bytes"}) + plan["memory"]["allocator_margin_bytes"]
    assert parts == plan["memory"]["total_bytes"]
    assert plan["memory"]["total_bytes"] < plan["memory"]["capacity_bytes"]
    assert plan["step_time_seconds"] > 0 and plan["tokens_per_second"] > 0
    assert plan["reasons"] and plan["runners_up"]
    # What the step goes to, summing to the whole, and the largest named as the explanation names it.
    split = plan["step_time_split"]
    assert set(split) == {"compute", "fixed overhead", "ZeRO traffic", "offload"}
    assert sum(split.values()) == pytest.approx(1, abs=1e-3)
    assert plan["dominant_cost"] == max(split, key=split.__getitem__)
    assert any(f"dominated by {plan['dominant_cost']}" in line for line in plan["reasons"])
    assert all(sum(r["step_time_split"].values()) == pytest.approx(1, abs=1e-3) for r in plan["runners_up"])


def test_pinned_options_come_back_as_given() -> None:
    result = run("--model", "Qwen2.5-7B", "--gpu", "NVIDIA-A100-SXM4-80GB", "--gpus", "4", "--seq-len", "2048",
                 "--method", "full", "--zero-stage", "3", "--gradient-checkpointing", "on", "--micro-batch", "2",
                 "--attention", "sdpa", "--json")
    chosen = json.loads(result.stdout)["chosen"]
    assert (chosen["method"], chosen["zero_stage"], chosen["gradient_checkpointing"], chosen["micro_batch"],
            chosen["attention"], chosen["gpu"]) == ("Full", 3, True, 2, "SDPA", "A100-SXM4-80GB")


def test_unknown_model_lists_the_known_ones_without_a_traceback() -> None:
    result = run("--model", "gpt-17", "--gpu", "H100-SXM-80GB", "--seq-len", "1024")
    assert result.returncode == 2
    assert "unknown model 'gpt-17'" in result.stdout and "Llama-3.1-8B" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_unknown_gpu_lists_the_known_ones() -> None:
    result = run("--model", "Llama-3.1-8B", "--gpu", "RTX-9090", "--seq-len", "1024")
    assert result.returncode == 2
    assert "RTX-9090" in result.stdout and "NVIDIA-H100-80GB-HBM3" in result.stdout


def test_nothing_fits_names_the_smallest_need_and_exits_non_zero() -> None:
    result = run("--model", "Llama-3.1-405B", "--gpu", "T4-16GB", "--gpus", "1", "--seq-len", "4096", "--json")
    assert result.returncode == 1
    plan = json.loads(result.stdout)
    assert plan["fits"] is False
    assert plan["smallest_need"]["memory"]["total_bytes"] > plan["smallest_need"]["memory"]["capacity_bytes"]
    assert any("smallest need" in reason for reason in plan["reasons"])


def test_human_output_and_svg_chart(tmp_path: Path) -> None:
    chart = tmp_path / "plan.svg"
    result = run("--model", "Mixtral-8x7B-v0.1", "--gpu", "all", "--seq-len", "2048", "--chart", str(chart))
    assert result.returncode == 0, result.stderr
    assert "Chose" in result.stdout and "why not chosen" in result.stdout
    root = ElementTree.parse(chart).getroot()
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}rect")) > 8


@pytest.mark.parametrize("flag", [["--gradient-checkpointing", "maybe"], ["--zero-stage", "5"]])
def test_bad_option_values_are_refused_clearly(flag: list[str]) -> None:
    result = run("--model", "Llama-3.1-8B", "--gpu", "H100-SXM-80GB", "--seq-len", "1024", *flag)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("stage", ["1", "3"])
def test_a_zero_stage_pinned_on_one_gpu_is_planned(stage: str) -> None:
    """ZeRO-1 and ZeRO-3 partition nothing on one GPU, so the planner does not try them there unless asked;
    asked, it plans them (DeepSpeed runs them) instead of refusing with a message about the global batch."""
    result = run("--model", "Llama-3.1-8B", "--gpu", "H100-SXM-80GB", "--gpus", "1", "--zero-stage", stage,
                 "--offload", "None", "--seq-len", "2048", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    chosen = json.loads(result.stdout)["chosen"]
    assert (chosen["num_gpus"], chosen["zero_stage"], chosen["offload"]) == (1, int(stage), "None")


def test_an_unknown_lora_target_is_refused_with_the_models_modules() -> None:
    result = run("--model", "Llama-3.1-8B", "--gpu", "H100-SXM-80GB", "--seq-len", "2048", "--lora-target", "q_proj",
                 "--lora-target", "qkv_proj")
    assert result.returncode == 2
    assert "qkv_proj match no linear module of meta-llama/Llama-3.1-8B" in result.stdout
    assert "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
