"""All-reduce helpers shared by the DDP-aware accumulators (centroids, entropy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _all_reduce_sum(tensors: Sequence[torch.Tensor], group: Any | None) -> list[torch.Tensor]:
    """All-reduce (sum) *copies* of ``tensors``; the inputs are never modified."""
    import torch.distributed as dist

    backend = str(dist.get_backend(group))
    out: list[torch.Tensor] = []
    for tensor in tensors:
        work = tensor.detach().clone()
        if backend == "nccl" and work.device.type != "cuda":
            moved = work.to(torch.device("cuda", torch.cuda.current_device()))
            dist.all_reduce(moved, op=dist.ReduceOp.SUM, group=group)
            work = moved.to(tensor.device)
        else:
            dist.all_reduce(work, op=dist.ReduceOp.SUM, group=group)
        out.append(work)
    return out


def _resolve_device(device: torch.device | str) -> torch.device:
    """``torch.device``, with a bare ``"cuda"`` pinned to the current CUDA device."""
    d = torch.device(device)
    index: int | None = d.index  # None for a bare "cuda" (the stubs say int)
    if d.type == "cuda" and index is None and torch.cuda.is_available():
        d = torch.device("cuda", torch.cuda.current_device())
    return d


def _distributed_ready() -> bool:
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())
