"""The training settings a memory estimate is made for: one candidate configuration."""

from dataclasses import dataclass
from enum import Enum, StrEnum

from pydantic import BaseModel, ConfigDict, Field

from kubetune.api.vocabulary import Attention, Method, Offload, Precision, ZeroStage


class Optimizer(StrEnum):
    ADAMW = "adamw"  # two moments
    SGD = "sgd"  # SGD with momentum: one momentum

    @property
    def moments(self) -> int:
        """State tensors per parameter, each in the dtype of the tensor the optimizer updates (torch's AdamW and
        DeepSpeed's FusedAdam create them with zeros_like): fp32 beside an fp32 master, bf16 in pure bf16."""
        return 2 if self is Optimizer.ADAMW else 1


# PEFT's usual LoRA targets for the decoder families we support.
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Lora(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    rank: int = Field(default=16, gt=0, le=1024)
    target_modules: tuple[str, ...] = ALL_LINEAR
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    # AdapterPrecision.FP32: adapters, their gradients and AdamW states in fp32, as PEFT keeps them (the trainer
    # then runs DeepSpeed without its bf16 cast); each adapted layer also saves its own fp32 copy of its input.
    # Otherwise adapters train in the model's 16-bit dtype, as DeepSpeed's bf16 mode casts them.
    adapters_fp32: bool = False


class Buckets(BaseModel):
    """DeepSpeed ZeRO bucket settings, in elements as DeepSpeed counts them (defaults are DeepSpeed's)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reduce_bucket_elements: int = Field(default=500_000_000, gt=0)
    allgather_bucket_elements: int = Field(default=500_000_000, gt=0)
    prefetch_bucket_elements: int = Field(default=50_000_000, ge=0)
    max_live_parameters: int = Field(default=1_000_000_000, gt=0)
    # ZeRO-3 keeps parameter tensors smaller than this whole on every GPU, besides their partition.
    param_persistence_threshold: int = Field(default=100_000, ge=0)
    # ZeRO-3 runs the optimizer one sub-group at a time, with an fp32 gradient buffer for that sub-group.
    sub_group_elements: int = Field(default=1_000_000_000, gt=0)
    overlap_comm: bool | None = None  # None: DeepSpeed's default, on for ZeRO-3 only

    @classmethod
    def for_hidden_size(cls, hidden_size: int) -> "Buckets":
        """What kubetune's generated ds_config uses: sized on the model like Hugging Face's "auto" values
        (h^2 buckets, 0.9 h^2 prefetch, 10 h persistence), not DeepSpeed's fixed 500M-element buckets, which cost
        1-2 GB per GPU whatever the model.

        ZeRO-3 prefetch stays on, with DeepSpeed's 1e9 live parameters, although DeepSpeed 0.19 prefetches another
        bucket at every hooked module, parameters of its own or not (a LoRA linear is five: the wrapper, the base
        layer, the dropout and both adapters), so the prefetch runs ahead of the layers until that many are
        gathered, and keeps what it gathers for backward while still gathered for forward
        (partitioned_param_coordinator.py, fetch_sub_module and __params_to_release; the memory model counts it:
        model_states._gathered). With a look-ahead that stalls (no prefetch, or a lower cap) DeepSpeed checks the
        fetch order against its trace and a run resumed under ZeRO-3 from another layout's checkpoints fails that
        check (tests/trainer, the replanned-resume test; DeepSpeed issue 3599 for others). The time model puts
        ZeRO-3's gathers on the critical path anyway (time_coefficients.yaml, zero3_seconds_per_module_pass)."""
        square = hidden_size * hidden_size
        return cls(reduce_bucket_elements=square, allgather_bucket_elements=square,
                   prefetch_bucket_elements=int(0.9 * square), param_persistence_threshold=10 * hidden_size)

    def overlaps(self, stage: ZeroStage) -> bool:
        return stage is ZeroStage.PARAMETERS if self.overlap_comm is None else self.overlap_comm


# DeepSpeed runs bf16 optimizer states with offload only in its compiled CPU Adam (fp32_optimizer_states=False;
# runtime/base_optimizer.py, _configure_master_weights), which the trainer cannot run off a GPU, so neither it nor
# the tests can check it; pure bf16 halves the optimizer states, which is what offload was for.
PURE_BF16_OFFLOAD = ("precision 'PureBF16' runs without offload: DeepSpeed offloads bf16 optimizer states only "
                     "through its compiled CPU Adam, which kubetune's trainer cannot run or check; pure bf16 already "
                     "halves the optimizer states")
# fp32 adapters run DeepSpeed without its 16-bit mode (which would cast them): no loss scaling for fp16, and pure
# bf16 is by definition bf16 adapters.
UNSCALED_FP32_ADAPTERS = (Precision.FP16, Precision.PURE_BF16)
FP32_ADAPTERS_PRECISION = ("LoRA adapter precision 'FP32' needs precision BF16 (or FP32): pure bf16 trains bf16 "
                           "adapters, and fp16 needs DeepSpeed's loss scaling, which would cast the adapters to fp16")

# ZeRO-3 partitions parameters by flattening them with the model's 16-bit ones, which 4-bit weights can join only
# stored as bf16 (bnb_4bit_quant_storage) and only under FSDP-style loading that the trainer does not do; ZeRO-0 to
# 2 keep the frozen 4-bit base whole on every GPU and partition the adapters' states, which is all QLoRA trains.
QLORA_ZERO3 = ("method 'QLoRA' runs with ZeRO stage 0-2: ZeRO-3 cannot partition bitsandbytes' 4-bit weights as "
               "kubetune's trainer loads them (that needs bnb_4bit_quant_storage and a zero.Init-aware "
               "quantised load); the 4-bit base is small enough to keep whole on every GPU")

_ENUM_FIELDS: tuple[tuple[str, type[Enum]], ...] = (
    ("precision", Precision), ("optimizer", Optimizer), ("method", Method), ("attention", Attention),
    ("zero_stage", ZeroStage), ("offload", Offload))


@dataclass(frozen=True)
class TrainingSettings:
    """One candidate configuration. A plain frozen dataclass rather than a pydantic model: the planner builds
    thousands per plan, and validation here is the few invariants below."""

    seq_len: int
    micro_batch: int = 1
    gradient_accumulation: int = 1
    precision: Precision = Precision.BF16
    optimizer: Optimizer = Optimizer.ADAMW
    method: Method = Method.LORA
    lora: Lora = Lora()
    gradient_checkpointing: bool = False
    attention: Attention = Attention.SDPA
    zero_stage: ZeroStage = ZeroStage.GRADIENTS
    offload: Offload = Offload.NONE
    buckets: Buckets = Buckets()
    num_gpus: int = 1
    gpus_per_node: int = 1
    # Tokens per chunk of the trainer's chunked cross-entropy (trainer/chunked_loss.py); None: the stock loss.
    loss_chunk_tokens: int | None = None

    def __post_init__(self) -> None:
        # Accept enum values given as plain strings or ints (from JSON, the CLI or tests). Members are left as
        # they are: the planner passes members, and an enum lookup per field per candidate is measurable.
        for name, kind in _ENUM_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, kind):
                object.__setattr__(self, name, kind(value))
        for name in ("seq_len", "micro_batch", "gradient_accumulation", "num_gpus", "gpus_per_node"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if self.loss_chunk_tokens is not None and self.loss_chunk_tokens < 1:
            raise ValueError("`loss_chunk_tokens` must be at least 1")
        if self.offload is Offload.ALL and self.zero_stage is not ZeroStage.PARAMETERS:
            raise ValueError("`offload` 'all' (parameters too) needs `zero_stage` 3")
        if self.offload is not Offload.NONE and self.zero_stage is ZeroStage.DISABLED:
            raise ValueError("`offload` needs `zero_stage` 1 or higher")
        if self.precision is Precision.PURE_BF16 and self.offload is not Offload.NONE:
            raise ValueError(PURE_BF16_OFFLOAD)
        if self.method.trains_adapters and self.lora.adapters_fp32 and self.precision in UNSCALED_FP32_ADAPTERS:
            raise ValueError(FP32_ADAPTERS_PRECISION)
        if self.method is Method.QLORA and self.zero_stage is ZeroStage.PARAMETERS:
            raise ValueError(QLORA_ZERO3)
        if self.num_gpus > self.gpus_per_node and self.num_gpus % self.gpus_per_node:
            raise ValueError("`num_gpus` must be a multiple of `gpus_per_node` across nodes")

    @property
    def num_nodes(self) -> int:
        return max(1, -(-self.num_gpus // self.gpus_per_node))

    @property
    def tokens_per_micro_batch(self) -> int:
        return self.seq_len * self.micro_batch
