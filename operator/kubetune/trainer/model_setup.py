"""The model the trainer hands to DeepSpeed, prepared in one place: the trainer (run.py) and the memory probes
(kubetune.memprobe, under tests/measured) both call `build_model`, so the measured tests check the memory model
against what trains. The configuration's names (api/vocabulary.py) become transformers' here.

What DeepSpeed then does to the module (deepspeed.initialize): under BF16 or FP16 it casts every floating-point
parameter, LoRA's adapters included, to that dtype and leaves buffers (rotary frequencies) as they are; under FP32
it casts nothing.
"""

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from kubetune.api import contract
from kubetune.api.trainer_config import TrainerConfig
from kubetune.api.vocabulary import Attention, Method, Precision

ATTN_IMPLEMENTATION = {Attention.EAGER: "eager", Attention.SDPA: "sdpa",
                       Attention.FLASH_ATTENTION_2: "flash_attention_2"}
DTYPE = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16, Precision.FP32: torch.float32}
# Non-reentrant: autograd's saved-tensor hooks see through it, and it needs no input that requires grad.
CHECKPOINTING_KWARGS = {"use_reentrant": False}


def on_claim(config: TrainerConfig, name: str) -> str:
    """A model or tokenizer name that is a folder on the data claim means that folder; anything else is a Hub id
    (or an absolute path)."""
    if config.dataset.claim_name and not name.startswith("/") and (contract.DATA_MOUNT / name).is_dir():
        return str(contract.DATA_MOUNT / name)
    return name


def attn_implementation(requested: Attention) -> str:
    """transformers' name for the attention kernel: FlashAttention-2 falls back to SDPA where flash-attn is not
    installed or the GPU is older than Ampere (or there is none)."""
    if requested is Attention.FLASH_ATTENTION_2:
        try:
            import flash_attn  # noqa: F401
        except ImportError:
            return ATTN_IMPLEMENTATION[Attention.SDPA]
        if not (torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)):
            return ATTN_IMPLEMENTATION[Attention.SDPA]
    return ATTN_IMPLEMENTATION[requested]


def build_model(config: TrainerConfig) -> torch.nn.Module:
    """Random weights from an inline config (smoke tests and benchmarks, no download), else the Hub's or the
    claim's checkpoint, prepared for training as the plan says."""
    torch.manual_seed(config.training.seed)
    attention = attn_implementation(config.attention)
    if config.model.config:
        kwargs = {k: v for k, v in config.model.config.items() if k != "model_type"}
        hf_config = AutoConfig.for_model(config.model.config["model_type"], **kwargs)
        # fp32 weights, cast by DeepSpeed to the training dtype.
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attention)
    else:
        # The checkpoint's own dtype (transformers' default), which DeepSpeed casts under BF16 and FP16; under FP32
        # DeepSpeed casts nothing, so a 16-bit checkpoint is loaded as fp32 here, as the plan counts it.
        dtype = torch.float32 if config.precision is Precision.FP32 else None
        model = AutoModelForCausalLM.from_pretrained(on_claim(config, config.model.name), revision=config.model.revision,
                                                     attn_implementation=attention, dtype=dtype)
    return prepare(model, config)


def prepare(model: PreTrainedModel, config: TrainerConfig) -> torch.nn.Module:
    """Checkpointing and LoRA on a loaded model, in training mode."""
    model.config.use_cache = False
    # from_pretrained returns the model in eval mode and DeepSpeed leaves the mode alone: without this a Hub
    # model would train with dropout off (LoRA's too) and without gradient checkpointing, which transformers
    # applies in training mode only.
    model.train()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        model.enable_input_require_grads()
    if config.method is Method.LORA and (lora := config.lora) is not None:  # trainer.json has it with LoRA
        import peft

        return peft.get_peft_model(model, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha,
                                                           target_modules=lora.targets, lora_dropout=lora.dropout))
    return model
