"""The CPU counterpart of torch.cuda.max_memory_allocated: live tensor storage bytes at every allocation and free.

The CPU allocator keeps no statistics, so the probe counts storages itself. Every aten op runs through a
TorchDispatchMode (DeepSpeed's flattening, bucketing and ZeRO-3 gathers included: their torch calls and the C++
ops they reach pass the dispatcher like the model's own); a storage that an op returns and that none of its
inputs already held is a new allocation, added at its size, and a weakref finalizer on the storage subtracts it
when the storage itself dies (torch preserves a storage's Python object while anything, autograd's graph
included, still holds it, so the finalizer runs at the real free, not when a Python reference goes away).
Storages alive before the probe starts are counted once from the garbage collector's tensors and subtracted when
they die in the step. What kernels allocate inside themselves, and what gloo's worker threads allocate, is not
seen: on a GPU those are the kernels' workspaces and NCCL's buffers, which docs/memory-model.md bounds apart.
"""

import gc
import warnings
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


@dataclass(frozen=True)
class Moment:
    phase: str
    op: str
    live_bytes: int


def _key(storage: torch.UntypedStorage) -> int:
    return storage._cdata


def gc_tensors() -> Iterator[torch.Tensor]:
    """Every tensor with a Python object, and the gradients of those that have one (a .grad can live in C++
    alone until it is first read)."""
    with warnings.catch_warnings():  # isinstance on torch.distributed's deprecated names warns
        warnings.simplefilter("ignore")
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor) and not obj.is_meta]
    for tensor in tensors:
        yield tensor
        if tensor.grad is not None:
            yield tensor.grad


class PeakProbe(TorchDispatchMode):
    """Use as a context manager around the work to measure; `phase` names the part of the step under way."""

    def __init__(self, existing: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak = Moment("start", "", 0)
        self._phase = "start"
        self._sizes: dict[int, int] = {}
        self._finalizers: list[weakref.finalize] = []
        for tensor in existing:
            self._track(tensor.untyped_storage())
        self.peak = Moment("start", "", self.live_bytes)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        previous, self._phase = self._phase, name
        try:
            yield
        finally:
            self._phase = previous

    def _free(self, key: int) -> None:
        self.live_bytes -= self._sizes.pop(key)

    def _track(self, storage: torch.UntypedStorage) -> None:
        key = _key(storage)
        size = storage.nbytes()
        known = self._sizes.get(key)
        if known is None:
            if size == 0:
                return
            self._sizes[key] = size
            self.live_bytes += size
            self._finalizers.append(weakref.finalize(storage, self._free, key))
        elif known != size:  # an in-place resize (resize_, out= arguments)
            self._sizes[key] = size
            self.live_bytes += size - known

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        inputs = {_key(t.untyped_storage()) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and not tensor.is_meta:
                storage = tensor.untyped_storage()
                key = _key(storage)
                # A view of, or an in-place op on, a storage the probe does not know was allocated before it.
                if key in inputs and key not in self._sizes:
                    continue
                self._track(storage)
        if self.live_bytes > self.peak.live_bytes:
            self.peak = Moment(self._phase, str(func), self.live_bytes)
        return out

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        # Finalizers of storages still alive would keep counting into a probe no one reads.
        for finalizer in self._finalizers:
            finalizer.detach()
