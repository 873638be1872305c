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

    @property
    def bytes(self) -> int:
        return 4 if self is Precision.FP32 else 2


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
