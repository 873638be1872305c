"""Count what autograd saves for backward, and what parameters, gradients and optimizer states hold."""

from dataclasses import dataclass

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


def train_step_states(model: nn.Module, input_ids: torch.Tensor, optimizer: torch.optim.Optimizer) -> StateBytes:
    """Bytes of parameters, gradients and optimizer states after one real training step."""
    loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    optimizer.step()
    params = list(model.parameters())
    states = [t for state in optimizer.state.values() for t in state.values()
              if isinstance(t, torch.Tensor) and t.dim() > 0]
    return StateBytes(
        weights=sum(p.numel() * p.element_size() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        gradients=sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None),
        optimizer_states=sum(t.numel() * t.element_size() for t in states),
    )
