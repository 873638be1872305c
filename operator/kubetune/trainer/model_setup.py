"""The model the trainer hands to DeepSpeed, prepared in one place: the trainer (run.py) and the memory probes
(kubetune.memprobe, under tests/measured) both call `build_model`, so the measured tests check the memory model
against what trains. The configuration's names (api/vocabulary.py) become transformers' here.

The weights are loaded in the training dtype. What DeepSpeed then does to the module (deepspeed.initialize): in
its bf16 or fp16 mode it casts every floating-point parameter, LoRA's adapters included, to that dtype and leaves
buffers (rotary frequencies) as they are; without one it casts nothing. The plan's ds_config turns that mode off
for fp32 LoRA adapters (PEFT creates them fp32 beside the bf16 model) and for pure bf16 without ZeRO (torch's AdamW
then steps on the bf16 weights), so what is loaded here is what trains (planner/ds_config.py).
"""

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel

from kubetune.api import contract
from kubetune.api.trainer_config import TrainerConfig
from kubetune.api.vocabulary import AdapterPrecision, Attention, Method, Precision
from kubetune.trainer import chunked_loss

ATTN_IMPLEMENTATION = {Attention.EAGER: "eager", Attention.SDPA: "sdpa",
                       Attention.FLASH_ATTENTION_2: "flash_attention_2"}
DTYPE = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16, Precision.FP32: torch.float32,
         Precision.PURE_BF16: torch.bfloat16}
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
    dtype = DTYPE[config.precision]
    if config.model.config:
        kwargs = {k: v for k, v in config.model.config.items() if k != "model_type"}
        hf_config = AutoConfig.for_model(config.model.config["model_type"], **kwargs)
        # Initialised in fp32 (as a checkpoint would have been trained), then the parameters cast as DeepSpeed
        # would: buffers (rotary frequencies) stay as built.
        model = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attention)
        for parameter in model.parameters():
            parameter.data = parameter.data.to(dtype)
        if config.method is Method.QLORA:
            # bitsandbytes quantises as a checkpoint loads: the random model goes through one, as a Hub model would.
            # Written by hand: under torch.distributed save_pretrained writes on rank 0 only, and every rank loads.
            with tempfile.TemporaryDirectory() as folder:
                model.config.save_pretrained(folder)
                safetensors.torch.save_model(model, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
                model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attention, dtype=dtype,
                                                             **quantized_loading(config))
    else:
        model = AutoModelForCausalLM.from_pretrained(on_claim(config, config.model.name), revision=config.model.revision,
                                                     attn_implementation=attention, dtype=dtype,
                                                     **(quantized_loading(config) if config.method is Method.QLORA
                                                        else {}))
    return prepare(model, config)


def quantized_loading(config: TrainerConfig) -> dict[str, Any]:
    """from_pretrained's arguments for QLoRA's 4-bit base: NF4 with double quantisation (the QLoRA paper's, and
    what planner/quantization.py counts), computing in the training dtype, loaded onto this rank's device (where
    bitsandbytes quantises). Without bitsandbytes the run is refused as invalid input: no retry would install it."""
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("method QLoRA needs bitsandbytes, which this trainer image lacks: run the trainer image of "
                         "kubetune's release (unset spec.images.trainer), or use method LoRA")
    from transformers import BitsAndBytesConfig

    device: int | str = int(os.environ.get("LOCAL_RANK", "0")) if torch.cuda.is_available() else "cpu"
    return {"quantization_config": BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                      bnb_4bit_use_double_quant=True,
                                                      bnb_4bit_compute_dtype=DTYPE[config.precision]),
            "device_map": {"": device}}


def prepare(model: PreTrainedModel, config: TrainerConfig) -> torch.nn.Module:
    """Checkpointing, the chunked loss and LoRA on a loaded model, in training mode."""
    model.config.use_cache = False
    # from_pretrained returns the model in eval mode and DeepSpeed leaves the mode alone: without this a Hub
    # model would train with dropout off (LoRA's too) and without gradient checkpointing, which transformers
    # applies in training mode only.
    model.train()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINTING_KWARGS)
        model.enable_input_require_grads()
    if config.loss_chunk_tokens is not None:
        # On the Hugging Face model itself, before PEFT wraps it: PEFT calls this model's forward.
        chunked_loss.use_chunked_loss(model, config.loss_chunk_tokens)
    # Not peft.prepare_model_for_kbit_training for QLoRA: its fp32 copy of the unquantised parameters would be cast
    # back by DeepSpeed's 16-bit mode, and checkpointing is set up above.
    if config.method.trains_adapters and (lora := config.lora) is not None:  # trainer.json has it with LoRA
        import peft

        # PEFT upcasts 16-bit adapters to fp32 unless told not to (autocast_adapter_dtype).
        return peft.get_peft_model(model, peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha,
                                                           target_modules=lora.targets, lora_dropout=lora.dropout),
                                   autocast_adapter_dtype=lora.adapter_precision is AdapterPrecision.FP32)
    return model
