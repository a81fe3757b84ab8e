"""Row-block helpers shared by the eager kernels.

The contention lesson: every large op opens one OpenMP parallel region, and
with a busy core each region waits for the stalled thread. Kernels therefore
keep the number of large ops per call small: the label-smoothing kernel works
on whole tensors, and the KD kernel (which needs a second, teacher-sized
temporary) splits the rows into at most :data:`MAX_BLOCKS` blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compute_dtype", "row_blocks", "scratch", "split"]

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


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64; everything else is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def row_blocks(x: Tensor, scratch_count: int) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` covering the ``(rows, C)`` tensor ``x``.

    When the kernel needs ``scratch_count`` block-sized temporaries, a block
    is also at most 1/:data:`SCRATCH_BLOCKS` of the rows.
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


def scratch(x: Tensor, blocks: list[tuple[int, int]], count: int) -> list[Tensor]:
    """``count`` compute-dtype buffers of the largest block's shape, reused by every block."""
    rows = max((hi - lo for lo, hi in blocks), default=0)
    return [
        torch.empty(rows, x.shape[1], dtype=compute_dtype(x), device=x.device) for _ in range(count)
    ]


def split(t: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
    """Row-block views of ``t``, made in one call."""
    return tuple(torch.split_with_sizes(t, sizes))
