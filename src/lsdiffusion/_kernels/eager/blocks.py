"""Row-block helpers shared by the eager kernels.

The contention lesson: every large op opens one OpenMP parallel region, and
with a busy core each region waits for the stalled thread. Kernels therefore
keep the number of large ops per call small: the label-smoothing kernel works
on whole tensors, and the KD kernel (which needs a second, teacher-sized
temporary) splits the rows into at most `MAX_BLOCKS` blocks.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from lsdiffusion._kernels.base import compute_dtype

__all__ = ["row_blocks", "scratch", "split"]

# Elements per row block for the KD kernel: big enough that a call opens few
# parallel regions, small enough that a block's temporaries stay in the L3
# cache of a typical CPU.
CPU_BLOCK_ELEMS = 1 << 19
CUDA_BLOCK_ELEMS = 1 << 22
# Inputs up to this many elements run as one block (per-op overhead dominates).
SMALL_ELEMS = 1 << 18
# Kernels with block-sized temporaries use at least this many blocks, so that
# the temporaries stay within 1/8 of the input.
SCRATCH_BLOCKS = 8
# ... and at most this many, so that a call opens a bounded number of regions.
MAX_BLOCKS = 256


def row_blocks(x: Tensor, scratch_count: int) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` covering the ``(rows, C)`` tensor ``x``.

    When the kernel needs ``scratch_count`` block-sized temporaries, a block
    is also at most 1/`SCRATCH_BLOCKS` of the rows.
    """
    n, c = x.shape
    if n * c <= SMALL_ELEMS:  # small inputs: one block, fewest kernel launches
        step = max(1, n)
    else:
        step = max(1, (CUDA_BLOCK_ELEMS if x.is_cuda else CPU_BLOCK_ELEMS) // max(1, c))
        step = max(step, -(-n // MAX_BLOCKS))
        if scratch_count:
            step = min(step, -(-n // SCRATCH_BLOCKS))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


# Scratch blocks up to this many bytes are kept per thread and reused across calls:
# a fresh block costs its page faults on every call, which at 1 MB is a sizeable
# share of a small loss. Larger scratch (the fused-linear chunks) is allocated anew.
_CACHED_SCRATCH_BYTES = 1 << 22
_cache = threading.local()


def scratch(x: Tensor, blocks: list[tuple[int, int]], count: int) -> list[Tensor]:
    """``count`` compute-dtype buffers of the largest block's shape, reused by every block.

    Small CPU buffers come from a per-thread pool (they never leave the kernel,
    and a kernel call does not nest another on the same thread).
    """
    rows = max((hi - lo for lo, hi in blocks), default=0)
    cols = x.shape[1]
    dtype = compute_dtype(x)
    numel = rows * cols
    if x.device.type != "cpu" or numel * torch.finfo(dtype).bits // 8 > _CACHED_SCRATCH_BYTES:
        return [torch.empty(rows, cols, dtype=dtype, device=x.device) for _ in range(count)]
    pool: dict[torch.dtype, list[Tensor]] = getattr(_cache, "pool", None) or {}
    _cache.pool = pool
    flat = pool.setdefault(dtype, [])
    for i in range(count):
        if i == len(flat):
            flat.append(torch.empty(numel, dtype=dtype))
        elif flat[i].numel() < numel:
            flat[i] = torch.empty(numel, dtype=dtype)
    return [buf[:numel].view(rows, cols) for buf in flat[:count]]


def split(t: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
    """Row-block views of ``t``, made in one call."""
    return tuple(torch.split_with_sizes(t, sizes))
