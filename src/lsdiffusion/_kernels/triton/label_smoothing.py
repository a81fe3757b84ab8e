"""Label smoothing, Triton implementation: one program per row (``kernels.ls_kernel``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lsdiffusion._kernels.base import compute_dtype
from lsdiffusion._kernels.triton import launch

if TYPE_CHECKING:
    from lsdiffusion._kernels.label_smoothing import LabelSmoothingKernel

__all__ = ["run"]


def run(
    ls: LabelSmoothingKernel, x: Tensor, need_grad: bool
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Row losses (scaled) and, if asked, the gradient in ``x``'s dtype."""
    from lsdiffusion._kernels.triton.kernels import ls_kernel

    n, k = x.shape
    x = x if x.stride(1) == 1 else x.contiguous()
    loss = torch.empty(n, dtype=compute_dtype(x), device=x.device)
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
    if n == 0:
        return (loss,), grad
    probs = ls.probs
    target = ls.target
    if probs and target.stride(1) != 1:
        target = target.contiguous()
    dummy = loss  # any pointer for the arguments a specialisation does not read
    ls_kernel[(n,)](
        x,
        x.stride(0),
        dummy if probs else target,
        target if probs else dummy,
        target.stride(0) if probs else 0,
        dummy if ls.weight is None else ls.weight,
        launch.row_scale(ls.scale, x),
        dummy if ls.valid is None else ls.valid,
        loss,
        dummy if grad is None else grad,
        0 if grad is None else grad.stride(0),
        k,
        launch.params(x, ls.alpha),
        HAS_WEIGHT=ls.weight is not None,
        PROBS=probs,
        HAS_VALID=ls.valid is not None,
        WRITE_GRAD=grad is not None,
        BLOCK=launch.block(k),
        ACC=launch.acc(x),
        num_warps=launch.warps(k),
    )
    return (loss,), grad
