"""The names of a training configuration, one set from the spec's hints through the planner to status, the
trainer's config and the metrics' labels. The spec's hint enums (v1alpha1: MethodType, OffloadType, ...) are
these values plus Auto; what DeepSpeed and transformers call them is translated once, where each is called
(planner/ds_config.py, trainer/model_setup.py)."""

from enum import IntEnum, StrEnum


class Method(StrEnum):
    LORA = "LoRA"
    # LoRA on a frozen base quantised to 4 bits (bitsandbytes NF4): about a quarter of LoRA's weight memory, but
    # the base the adapters learn on is not the model's own weights, so the planner never picks it unasked.
    QLORA = "QLoRA"
    FULL = "Full"

    @property
    def trains_adapters(self) -> bool:
        """LoRA adapters on a frozen base: LoRA and QLoRA."""
        return self is not Method.FULL


class Offload(StrEnum):
    NONE = "None"
    OPTIMIZER = "Optimizer"  # optimizer states (and the fp32 master weights) on the CPU
    ALL = "All"  # optimizer and parameters on the CPU: ZeRO-3 only


class Attention(StrEnum):
    EAGER = "Eager"
    SDPA = "SDPA"
    FLASH_ATTENTION_2 = "FlashAttention2"

    @property
    def min_compute_capability(self) -> tuple[int, int]:
        # FlashAttention-2 kernels exist for Ampere (8.0) and newer only; V100 (7.0) and T4 (7.5) cannot run it.
        return (8, 0) if self is Attention.FLASH_ATTENTION_2 else (0, 0)


class Precision(StrEnum):
    BF16 = "BF16"  # DeepSpeed bf16: 16-bit weights and activations, fp32 master weights in the optimizer
    FP16 = "FP16"  # as BF16, with loss scaling
    FP32 = "FP32"
    # bf16 weights, gradients and optimizer states with no fp32 master (torchtune's and plain torch's bf16):
    # 8-10 bytes per trained parameter with AdamW instead of 16-20. Updates below bf16's resolution are lost.
    PURE_BF16 = "PureBF16"

    @property
    def bytes(self) -> int:
        """Bytes of a weight and of an activation."""
        return 4 if self is Precision.FP32 else 2

    @property
    def is_bf16(self) -> bool:
        return self in (Precision.BF16, Precision.PURE_BF16)


class AdapterPrecision(StrEnum):
    """What dtype LoRA's adapters train in."""

    MODEL = "Model"  # the weights' 16-bit dtype, as DeepSpeed casts them: 2-byte adapters and gradients
    FP32 = "FP32"  # as PEFT keeps them: fp32 adapters, gradients and AdamW states, the frozen model in 16 bits


class ZeroStage(IntEnum):
    DISABLED = 0
    OPTIMIZER = 1
    GRADIENTS = 2
    PARAMETERS = 3


class Objective(StrEnum):
    CHEAPEST = "Cheapest"  # lowest GPU cost per trained token
    FASTEST = "Fastest"  # most tokens per second
    FEWEST_GPUS = "FewestGPUs"  # fewest GPUs, then cheapest


class Phase(StrEnum):
    """The moments of a training step the memory model compares; the peak is the largest."""

    BACKWARD_START = "BackwardStart"  # all activations and the logits alive, loss backward starting
    BACKWARD_END = "BackwardEnd"  # activations freed, all gradients produced
    OPTIMIZER_STEP = "OptimizerStep"  # the fp32 gradient partition and the optimizer update
