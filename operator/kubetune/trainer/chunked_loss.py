"""Causal-LM cross-entropy a chunk of tokens at a time, so the whole micro-batch's fp32 logits never exist.

Hugging Face's loss (ForCausalLMLoss) projects every token onto the vocabulary, upcasts the logits to fp32 and
runs cross-entropy over all of them: its backward holds the fp32 log-probabilities and two fp32 gradients of
them at once, 12 bytes per token per vocabulary entry (docs/memory-model.md). Here the final hidden states are
split into chunks of tokens and each chunk's head, upcast and cross-entropy run under non-reentrant activation
checkpointing: the forward keeps only the chunk's loss, and the backward recomputes one chunk's logits at a time.
The cost is one more forward of the head per micro-batch (the time model counts it).

The loss is the stock one: the labels shifted left by one with -100 padding, -100 ignored, the mean over the
micro-batch's non-ignored tokens, Gemma-2's final logit soft-capping applied; only the summation order differs.
It is pure torch and runs on the CPU and on any GPU. A fused kernel (Liger-Kernel's fused linear
cross-entropy) would also save the recomputation, but it is Triton-only and no GPU has been lent to test it.
"""

import torch
from torch.nn import functional
from torch.utils.checkpoint import checkpoint
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

IGNORE_INDEX = -100


def _chunk_loss_sum(hidden: torch.Tensor, labels: torch.Tensor, head: torch.nn.Module,
                    softcap: float | None) -> torch.Tensor:
    logits = head(hidden)
    if softcap is not None:  # in the head's dtype, before the upcast, as Gemma-2's forward does
        logits = torch.tanh(logits / softcap) * softcap
    return functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum")


def causal_lm_loss(hidden: torch.Tensor, head: torch.nn.Module, labels: torch.Tensor, chunk_tokens: int,
                   softcap: float | None = None) -> torch.Tensor:
    """The mean next-token cross-entropy of `hidden` (batch, seq, hidden: after the final norm) through `head`
    against `labels` (batch, seq, unshifted), `chunk_tokens` tokens at a time."""
    shifted = functional.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:].reshape(-1)
    tokens = hidden.reshape(-1, hidden.size(-1))
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    # split (not slicing): its backward concatenates the chunks' gradients once, where a slice's backward would
    # write each chunk's into a fresh zero tensor of the whole micro-batch's size.
    for chunk, chunk_labels in zip(tokens.split(chunk_tokens), shifted.split(chunk_tokens), strict=True):
        # The head has no randomness to replay, so no RNG state is saved per chunk.
        total = total + checkpoint(_chunk_loss_sum, chunk, chunk_labels, head, softcap, use_reentrant=False,
                                   preserve_rng_state=False)
    # As nll_loss's mean: the sum over the kept tokens divided by their count (0/0 = nan when none is kept).
    return total / (shifted != IGNORE_INDEX).sum()


def use_chunked_loss(model: PreTrainedModel, chunk_tokens: int) -> None:
    """Make `model`'s own forward (the one PEFT and DeepSpeed call) compute its loss with `causal_lm_loss`.

    Set on the instance, so the module tree, its parameter names and what DeepSpeed and PEFT save are the model's
    own. With labels it returns the loss only: the trainer reads nothing else."""
    if getattr(model.config, "output_router_logits", False):
        raise ValueError("the chunked loss does not add the router's auxiliary loss (output_router_logits)")
    body = getattr(model, model.base_model_prefix)
    head = model.get_output_embeddings()
    softcap = getattr(model.config, "final_logit_softcapping", None)
    stock = model.forward

    def forward(input_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: object) -> CausalLMOutputWithPast:
        if labels is None:
            return stock(input_ids=input_ids, **kwargs)
        kwargs.pop("return_dict", None)  # the stock forward's decorator takes it; the body returns an object
        hidden = body(input_ids=input_ids, **kwargs).last_hidden_state
        return CausalLMOutputWithPast(loss=causal_lm_loss(hidden, head, labels, chunk_tokens, softcap))

    model.forward = forward
