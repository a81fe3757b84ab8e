"""Peak tensor memory on the CPU, counted op by op (a stand-in for ``max_memory_allocated``).

`TensorMemory` is a ``TorchDispatchMode`` that sees every tensor an op
allocates and adds its storage's size to a running total until the storage
is freed; `peak` is the largest total reached. Views and outputs that reuse
an input's storage (``out=`` ops, in-place ops) allocate nothing. Memory the
code under test allocated before the mode started (a kernel's cached scratch,
the inputs) is not counted, so call the function once before measuring.
Triton's interpreter computes in NumPy arrays that this does not see; the
tensors a chunk allocates around the kernels (logits blocks, gradient blocks,
outputs, accumulators) are what it counts, exactly the allocations the same
code makes on a GPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


class TensorMemory(TorchDispatchMode):
    """Running and peak bytes of the tensor storages allocated inside the mode."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor)
        }
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key in inputs or key in self.live or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self._free, key)
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    """The peak bytes of tensors allocated while ``fn()`` runs (run it once before)."""
    with TensorMemory() as mode:
        fn()
    return mode.peak
