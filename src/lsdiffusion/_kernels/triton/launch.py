"""Launch helpers shared by the Triton kernels: block sizes, dtypes, the in-place scale."""

from __future__ import annotations

import torch
from torch import Tensor

from lsdiffusion._kernels.base import compute_dtype

__all__ = ["acc", "block", "params", "row_scale", "scale_", "warps"]

# Largest block of a row processed at once (elements). Tests lower it to
# exercise the multi-block online softmax on tiny rows.
MAX_BLOCK = 8192
_SCALE_BLOCK = 4096


def block(k: int) -> int:
    """Power-of-two block covering ``k`` classes, at most `MAX_BLOCK`."""
    return min(MAX_BLOCK, max(16, 1 << max(0, (k - 1).bit_length())))


def warps(k: int) -> int:
    """Warps per program: more for long rows."""
    b = block(k)
    return 4 if b <= 1024 else (8 if b <= 4096 else 16)


def acc(x: Tensor) -> object:
    """The Triton spelling of `compute_dtype`."""
    import triton.language as tl

    return tl.float64 if compute_dtype(x) == torch.float64 else tl.float32


def params(x: Tensor, *values: float) -> Tensor:
    """Float kernel parameters as a tensor in the compute dtype (float args are float32).

    Filled on the device, one value at a time: ``torch.tensor(values, device=...)``
    would copy from pageable host memory, which synchronises with the GPU.
    """
    out = torch.empty(len(values), dtype=compute_dtype(x), device=x.device)
    for i, value in enumerate(values):
        out[i].fill_(value)
    return out


def row_scale(scale: Tensor, x: Tensor) -> Tensor:
    """The per-row reduction factor as a contiguous tensor on ``x``'s device."""
    return scale.to(device=x.device).contiguous()


def scale_(grad: Tensor, upstream: Tensor) -> None:
    """``grad *= upstream`` (a scalar tensor) in place, without reading it on the host."""
    from lsdiffusion._kernels.triton.kernels import scale_kernel

    n = grad.numel()
    if n == 0:
        return
    # in the compute dtype: a float64 gradient takes a float64 upstream
    up = upstream.detach().reshape(1).to(device=grad.device, dtype=compute_dtype(grad))
    scale_kernel[(triton_cdiv(n, _SCALE_BLOCK),)](grad, up, n, BLOCK=_SCALE_BLOCK, ACC=acc(grad))


def triton_cdiv(a: int, b: int) -> int:
    """Ceiling division."""
    return -(-a // b)
