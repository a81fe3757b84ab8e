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


def _agree_across_ranks(
    owner: str,
    config: dict[str, object],
    group: Any | None,
    *,
    optional: tuple[str, ...] = (),
) -> dict[str, object]:
    """Check that every rank of ``group`` built ``owner`` with the same ``config``.

    One ``all_gather_object`` of the small ``config`` dict. Keys in ``optional``
    may be ``None`` on a rank that has not learnt them yet (no data seen); the
    other ranks' common value is returned for them. Every rank sees the same
    gathered list, so every rank raises the same error (nobody is left waiting
    in a collective).

    Returns:
        ``config`` with the optional ``None`` values filled in from other ranks.

    Raises:
        ValueError: naming the first mismatching key and the ranks that disagree.
    """
    import torch.distributed as dist

    gathered: list[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(gathered, config, group=group)
    resolved = dict(config)
    for key in config:
        values = [g.get(key) for g in gathered]
        known = [(r, v) for r, v in enumerate(values) if not (key in optional and v is None)]
        if not known:
            continue
        first_rank, first = known[0]
        for r, v in known[1:]:
            if v != first:
                raise ValueError(
                    f"{owner} is configured differently on the ranks of the process group: "
                    f"{key}={first!r} on rank {first_rank} but {key}={v!r} on rank {r}; every "
                    f"rank must build it with the same arguments (and see data of the same shape)"
                )
        resolved[key] = first
    return resolved
