"""Count what autograd saves for backward, and what parameters, gradients and optimizer states hold; describe
how a model was prepared for training."""

import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class SavedBytes:
    total: int  # unique non-parameter storages saved for backward
    loss: torch.Tensor


def saved_for_backward(model: nn.Module, input_ids: torch.Tensor) -> SavedBytes:
    """Run one forward pass with labels and sum the unique storages autograd keeps (parameters excluded)."""
    parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages and storage.nbytes() > 0:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    return SavedBytes(sum(storages.values()), loss)


@dataclass(frozen=True)
class StateBytes:
    weights: int
    trainable_params: int
    gradients: int
    optimizer_states: int


def quantization_constant_bytes(parameter: torch.Tensor) -> int:
    """What a bitsandbytes 4-bit weight keeps beside its packed codes, in its quant_state rather than as parameters:
    the absmaxes and code book, and with double quantisation the second level's absmaxes, code book and offset."""
    state = getattr(parameter, "quant_state", None)
    if state is None:
        return 0
    tensors = [state.absmax, state.code]
    if state.nested:
        tensors += [state.state2.absmax, state.state2.code, state.offset]
    return sum(t.numel() * t.element_size() for t in tensors)


def train_step_states(model: nn.Module, input_ids: torch.Tensor, optimizer: torch.optim.Optimizer) -> StateBytes:
    """Bytes of parameters, gradients and optimizer states after one real training step."""
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    params = list(model.parameters())
    states = [t for state in optimizer.state.values() for t in state.values()
              if isinstance(t, torch.Tensor) and t.dim() > 0]
    return StateBytes(
        weights=sum(p.numel() * p.element_size() + quantization_constant_bytes(p) for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        gradients=sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
        optimizer_states=sum(t.numel() * t.element_size() for t in states),
    )


def _described(function: Any) -> Any:
    if isinstance(function, functools.partial):
        return (_described(function.func), tuple(function.args), tuple(sorted(function.keywords.items())))
    return None if function is None else f"{function.__module__}.{function.__qualname__}"


def preparation(model: nn.Module, input_ids: torch.Tensor) -> dict[str, Any]:
    """What decides a model's training memory besides its shapes, as plain values to compare: training mode,
    attention kernel, KV cache, which modules checkpoint and with which function, whether the embeddings'
    output requires grad (what checkpointing needs with frozen embeddings), each LoRA layer's rank, scaling
    and dropout, which parameters train, and every parameter's and buffer's dtype."""
    base: Any = getattr(model, "get_base_model", lambda: model)()  # PEFT wraps the model
    embedded = base.get_input_embeddings()(input_ids)  # through its hooks, as the model's forward calls it
    lora = {}
    for name, module in model.named_modules():
        if isinstance(getattr(module, "r", None), dict) and hasattr(module, "lora_dropout"):
            dropout = {k: getattr(v, "p", 0.0) for k, v in module.lora_dropout.items()}
            lora[name] = (dict(module.r), dict(module.scaling), dropout)
    return {
        "training": sorted({m.training for m in model.modules()}),
        "attention": base.config._attn_implementation,
        "use_cache": base.config.use_cache,
        "checkpointing": {name: (m.gradient_checkpointing, _described(getattr(m, "_gradient_checkpointing_func", None)))
                          for name, m in base.named_modules() if getattr(m, "gradient_checkpointing", False)},
        "embeddings_require_grad": embedded.requires_grad,
        "lora": lora,
        "trainable": sorted(name for name, p in model.named_parameters() if p.requires_grad),
        "dtypes": {name: str(t.dtype) for name, t in [*model.named_parameters(), *model.named_buffers()]},
    }
