"""Knowledge distillation, Triton implementation: one program per row (``kernels.kd_kernel``)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lsdiffusion._kernels.base import compute_dtype
from lsdiffusion._kernels.triton import launch

if TYPE_CHECKING:
    from lsdiffusion._kernels.kd import KDKernel

__all__ = ["run"]


def run(k: KDKernel, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Row ``(total[, hard, soft])`` (scaled) and, if asked, the gradient."""
    from lsdiffusion._kernels.triton.kernels import kd_kernel

    if k.alpha and k.target is not None and k.beta < 1.0:
        return _smoothed_hard(k, x, need_grad)
    n, classes = x.shape
    x = x if x.stride(1) == 1 else x.contiguous()
    teacher = k.teacher if k.teacher.stride(1) == 1 else k.teacher.contiguous()
    out_dtype = compute_dtype(x)
    loss = torch.empty(n, dtype=out_dtype, device=x.device)
    terms = k.terms
    hard = torch.empty(n, dtype=out_dtype, device=x.device) if terms else loss
    soft = torch.empty(n, dtype=out_dtype, device=x.device) if terms else loss
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
    outs = (loss, hard, soft) if terms else (loss,)
    if n == 0:
        return outs, grad
    target = k.target if k.hard_wanted else None
    t2 = k.temperature**2 if k.t2 else 1.0
    kd_kernel[(n,)](
        x,
        x.stride(0),
        teacher,
        teacher.stride(0),
        loss if target is None else target,
        launch.row_scale(k.scale, x),
        loss if k.valid is None else k.valid,
        loss,
        hard,
        soft,
        loss if grad is None else grad,
        0 if grad is None else grad.stride(0),
        classes,
        launch.params(x, 1.0 / k.temperature, t2, k.beta),
        HAS_TARGET=target is not None,
        UNIT_T=k.temperature == 1.0,
        HAS_VALID=k.valid is not None,
        WRITE_GRAD=grad is not None,
        TERMS=terms,
        BLOCK=launch.block(classes),
        ACC=launch.acc(x),
        num_warps=launch.warps(classes),
    )
    return outs, grad


def _smoothed_hard(
    k: KDKernel, x: Tensor, need_grad: bool
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """``beta * KD + (1 - beta) * LS(alpha)``: the KD kernel (soft term) plus the LS kernel.

    The fused linear loss's LS-teacher recipe; the two kernels' gradients are
    summed (one extra gradient block while it runs).
    """
    from lsdiffusion._kernels.label_smoothing import LabelSmoothingKernel
    from lsdiffusion._kernels.triton import label_smoothing

    if k.terms:  # pragma: no cover - kd_loss_terms has no alpha
        raise NotImplementedError("the terms of a label-smoothed hard term")
    assert k.target is not None
    soft = replace(k, beta=1.0, alpha=0.0, scale=k.scale * k.beta)
    (total,), grad = run(soft, x, need_grad)
    hard = LabelSmoothingKernel(
        target=k.target,
        probs=False,
        alpha=k.alpha,
        weight=None,
        scale=k.scale * (1.0 - k.beta),
        valid=k.valid,
        backend="triton",
    )
    (rows,), grad_hard = label_smoothing.run(hard, x, need_grad)
    if grad is not None and grad_hard is not None:
        grad += grad_hard
    return (total + rows,), grad
