"""Bytes saved for backward: one decoder layer, the parts outside the layers, and the logits.

The inventory follows what PyTorch autograd keeps for Hugging Face decoder models (measured with saved-tensor
hooks over unique storages; see tests/measured): a tensor is saved only when some input of the op that needs
it requires grad, so frozen weights (LoRA) change what is kept, not just how much the optimizer holds.
Sizes are per micro-batch on one GPU. The notation follows the memory-model survey: s sequence length,
b micro-batch, h hidden size, a heads, I intermediate size, B bytes per activation element.
"""

from dataclasses import dataclass

from kubetune.api.vocabulary import Attention, Method
from kubetune.planner.architecture import Architecture, MlpType, NormType
from kubetune.planner.settings import TrainingSettings

FP32 = 4
# Gemma's RMSNorm scales by (1 + weight) in fp32, so its normalised tensor is saved in fp32, not 16-bit.
FP32_NORM_PRODUCT = ("gemma", "gemma2")


@dataclass(frozen=True)
class Inventory:
    """Named saved tensors in bytes; names shared by several consumers are counted once."""

    terms: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.terms.values())


class _Layer:
    """Builds one decoder layer's inventory for a given architecture and settings."""

    def __init__(self, arch: Architecture, settings: TrainingSettings, input_requires_grad: bool = True,
                 device: str = "cuda") -> None:
        self.arch = arch
        self.device = device
        # False for the first layer under LoRA: the frozen embedding's output needs no gradient, so ops
        # that read it directly (the first norm, the q/k/v adapters' dropout) keep nothing for it.
        self.input_requires_grad = input_requires_grad
        self.settings = settings
        self.tokens = settings.tokens_per_micro_batch
        self.act = settings.precision.bytes
        self.full = settings.method is Method.FULL
        self.lora = settings.lora
        self.targets = set() if self.full else set(arch.lora_modules(settings.lora.target_modules))
        self.terms: dict[str, int] = {}

    def add(self, name: str, bytes_per_token: float) -> None:
        self.terms[name] = int(bytes_per_token * self.tokens)

    def adapted(self, module: str) -> bool:
        return module in self.targets

    def input_saved_by(self, module: str) -> bool:
        """Whether `module` keeps its input tensor itself (not a copy) for backward."""
        if self.full:
            return True
        # A LoRA layer feeds its input to lora_A; with dropout (or fp32 adapters) lora_A gets a new tensor.
        return self.adapted(module) and self.lora.dropout == 0 and not self.lora.adapters_fp32

    def lora_branch(self, module: str, width: int) -> None:
        """What one adapted module saves besides its input: its own input copies and lora_A's output."""
        if not self.adapted(module):
            return
        adapter = FP32 if self.lora.adapters_fp32 else self.act
        if self.lora.dropout > 0:
            if self.input_requires_grad or module not in ("q_proj", "k_proj", "v_proj"):
                # CUDA's fused dropout keeps a bool mask; the CPU kernel keeps one in the input dtype.
                mask = 1 if self.device == "cuda" else adapter
                self.add(f"{module}.lora_dropout_mask", mask * width)
            self.add(f"{module}.lora_dropout_out", adapter * width)
        elif self.lora.adapters_fp32:
            self.add(f"{module}.lora_input_fp32", FP32 * width)
        self.add(f"{module}.lora_a_out", adapter * self.lora.rank)

    def norm(self, name: str, width: int, consumers: tuple[str, ...], per_token_rows: int = 1,
             input_name: str | None = None) -> None:
        """A norm over `width`; its output is kept when a consumer saves its input."""
        rms = self.arch.norm_type is NormType.RMS
        if name != "attn_norm" or self.input_requires_grad:
            if rms:
                # HF RMSNorm upcasts to fp32 and keeps that copy (the input itself in fp32 training).
                self.add(f"{name}.input_fp32", FP32 * width)
                self.add(f"{name}.rstd", FP32 * per_token_rows)
            else:
                self.add(input_name or f"{name}.input", self.act * width)
                self.add(f"{name}.mean_rstd", 2 * FP32 * per_token_rows)
        if rms and self.full:
            normalised = FP32 if self.arch.model_type in FP32_NORM_PRODUCT else self.act
            self.add(f"{name}.normalised", normalised * width)
        if any(self.input_saved_by(c) for c in consumers):
            self.add(f"{name}.out", self.act * width)

    def attention(self) -> None:
        arch, s = self.arch, self.settings
        q, kv = arch.q_size, arch.kv_size
        if arch.qk_norm:
            self.norm("q_norm", q, (), per_token_rows=arch.num_heads)
            self.norm("k_norm", kv, (), per_token_rows=arch.num_kv_heads)
        if s.attention is Attention.EAGER:
            # repeat_kv materialises K and V at full head count before the matmuls save them.
            self.add("attn.q", self.act * q)
            self.add("attn.k_repeated", self.act * q)
            self.add("attn.v_repeated", self.act * q)
            # fp32 softmax output, then the probabilities in the activation dtype (a no-op cast in fp32).
            probs = FP32 + (self.act if self.act != FP32 else 0)
            self.add("attn.scores", probs * arch.num_heads * s.seq_len)
        else:
            # SDPA (flash / memory-efficient) and FlashAttention-2 keep q, k, v, the output and an fp32
            # log-sum-exp per head; K and V stay at the KV-head count.
            self.add("attn.q", self.act * q)
            self.add("attn.k", self.act * kv)
            self.add("attn.v", self.act * kv)
            self.add("attn.lse", FP32 * arch.num_heads)
        # The kernel's output doubles as o_proj's input.
        self.add("attn.out", self.act * q)
        for module, width in (("q_proj", arch.hidden_size), ("k_proj", arch.hidden_size),
                              ("v_proj", arch.hidden_size), ("o_proj", q)):
            self.lora_branch(module, width)

    def mlp(self) -> None:
        arch = self.arch
        i = arch.intermediate_size
        routed = arch.experts_per_token if arch.is_moe else 1
        if arch.mlp_type is MlpType.GATED:
            self.add("mlp.gate_out", routed * self.act * i)  # kept by the activation function
            self.add("mlp.act_out", routed * self.act * i)  # kept by the product
            self.add("mlp.up_out", routed * self.act * i)  # kept by the product
            if self.input_saved_by("down_proj"):
                self.add("mlp.product", routed * self.act * i)
            modules: tuple[tuple[str, int], ...] = (("gate_proj", arch.hidden_size), ("up_proj", arch.hidden_size),
                                                    ("down_proj", i))
        else:
            self.add("mlp.up_out", routed * self.act * i)  # kept by GELU
            if self.input_saved_by("down_proj"):
                self.add("mlp.act_out", routed * self.act * i)
            modules = (("up_proj", arch.hidden_size), ("down_proj", i))
        if arch.is_moe:
            # Each routed token is gathered into its experts' inputs (kept only by trained experts) and their
            # outputs are kept for the weighted sum; the router keeps fp32 probabilities per expert.
            if self.full:
                self.add("moe.expert_inputs", routed * self.act * arch.hidden_size)
            self.add("moe.expert_outputs", routed * self.act * arch.hidden_size)
            self.add("moe.router_probs", FP32 * arch.num_experts)
        for module, width in modules:
            self.lora_branch(module, width)

    def build(self) -> Inventory:
        arch = self.arch
        attn_inputs = ("q_proj", "k_proj", "v_proj")
        mlp_inputs = ("gate_proj", "up_proj") if arch.mlp_type is MlpType.GATED else ("up_proj",)
        if arch.norms_per_layer == 2:
            # Falcon's parallel block feeds the same layer input to both norms.
            shared = "layer_input" if arch.model_type == "falcon" else None
            self.norm("attn_norm", arch.hidden_size, attn_inputs, input_name=shared)
            self.norm("mlp_norm", arch.hidden_size, mlp_inputs, input_name=shared)
        else:
            self.norm("attn_norm", arch.hidden_size, attn_inputs + mlp_inputs)
        self.attention()
        self.mlp()
        return Inventory(self.terms)


def layer(arch: Architecture, settings: TrainingSettings, device: str = "cuda") -> Inventory:
    """What one decoder layer saves for backward when it runs without checkpointing. `device` "cpu" is
    for checking the model against CPU measurements, whose dropout kernel differs."""
    return _Layer(arch, settings, device=device).build()


def first_layer(arch: Architecture, settings: TrainingSettings, device: str = "cuda") -> Inventory:
    """The first layer saves less under LoRA: its input comes from the frozen embedding. With gradient
    checkpointing, Hugging Face makes that input require grad, so the first layer is like the others."""
    frozen_input = settings.method.trains_adapters and not settings.gradient_checkpointing
    return _Layer(arch, settings, input_requires_grad=not frozen_input, device=device).build()


def outside_layers(arch: Architecture, settings: TrainingSettings) -> Inventory:
    """What the embedding, the final norm and the rotary tables save (logits are counted apart)."""
    builder = _Layer(arch, settings)
    if settings.method is Method.FULL:
        builder.add("embedding.token_ids", 8)  # int64 ids for the embedding gradient
    # The head's input is saved only when the head itself is trained.
    builder.norm("final_norm", arch.hidden_size, ("lm_head",) if settings.method is Method.FULL else ())
    # cos and sin tables, one row per position (shared across the micro-batch), kept by the RoPE products.
    builder.terms["rotary.cos_sin"] = 2 * settings.precision.bytes * arch.head_dim * settings.seq_len
    return Inventory(builder.terms)


def checkpointed_layer(arch: Architecture, settings: TrainingSettings) -> int:
    """With gradient checkpointing a layer keeps only its input hidden states."""
    return settings.tokens_per_micro_batch * settings.precision.bytes * arch.hidden_size


def adapter_input_gradient(arch: Architecture, settings: TrainingSettings) -> int:
    """An adapted module's backward makes the base module's input gradient and the adapter's, then adds them: the
    adapter's, in the activation dtype, is held beside the base's; with fp32 adapters also its own fp32 copy (its
    input was cast up) before the cast down. The widest input (the MLP's down projection) sets it (measured on the
    CPU: Llama under ZeRO-2 with fp32 adapters, ZeRO-3 on two ranks and tied Qwen2 under ZeRO-2 with 16-bit ones,
    all with checkpointing, where the recomputed layer's backward is the step's peak)."""
    if not settings.method.trains_adapters:
        return 0
    widest = max(d_in for d_in, _ in arch.lora_modules(settings.lora.target_modules).values())
    own = FP32 + settings.precision.bytes if settings.lora.adapters_fp32 else settings.precision.bytes
    return own * widest * settings.tokens_per_micro_batch


def logits_peak(arch: Architecture, settings: TrainingSettings) -> int:
    """The loss's own peak, reached in its backward while every activation is still saved.

    Hugging Face's ForCausalLMLoss (transformers 5.24): the head's 16-bit logits and their fp32 upcast are freed
    once log_softmax has run (the trainer keeps only `.loss` of the model output, and log_softmax saves only its
    output), so the backward starts with the fp32 log-probabilities and the int64 targets, and holds two fp32
    gradients of the log-probabilities beside them (nll_loss's, then log_softmax's): 12 bytes per token per
    vocabulary entry in any precision, measured on the CPU (tests/measured/test_chunked_loss.py). The memory-model
    survey's 14 also counted the 16-bit logits, which only a caller holding the whole output keeps.

    With the chunked loss (trainer/chunked_loss.py) those 12 bytes are one chunk's, and what stays is small: the
    targets, the head's input saved for the recomputation (already counted outside the layers when the head
    trains), the chunks' input gradients produced so far (all but the last chunk's), and, when the head trains,
    its weight gradient summed over the chunks already done.
    """
    tokens = settings.tokens_per_micro_batch
    targets = 8 * tokens
    chunk = settings.loss_chunk_tokens
    if chunk is None or chunk >= tokens:
        chunk_tokens, chunks = tokens, 1
    else:
        chunk_tokens, chunks = chunk, -(-tokens // chunk)
    peak = 3 * FP32 * chunk_tokens * arch.vocab_size + targets
    if chunk is None:
        return peak
    act, hidden = settings.precision.bytes, arch.hidden_size
    head_trained = settings.method is Method.FULL
    peak += (tokens - chunk_tokens) * hidden * act
    if not head_trained:
        peak += tokens * hidden * act
    elif chunks > 1:
        peak += arch.vocab_size * hidden * act
    return peak


def logits_saved(arch: Architecture, settings: TrainingSettings) -> int:
    """The part of the loss that autograd itself saves: fp32 log-probabilities and the int64 targets."""
    return (FP32 * arch.vocab_size + 8) * settings.tokens_per_micro_batch
