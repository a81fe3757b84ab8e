"""Label smoothing, Triton backend: the eager kernel's bindings, a Triton ``run``."""

from __future__ import annotations

import torch
from torch import Tensor

from lsdiffusion._kernels.eager.label_smoothing import LabelSmoothingKernel
from lsdiffusion._kernels.triton import launch

__all__ = ["TritonLabelSmoothingKernel"]


class TritonLabelSmoothingKernel(LabelSmoothingKernel):
    """One Triton program per row; see `lsdiffusion._kernels.triton.kernels`."""

    accelerated = True

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Row losses (scaled) and, if asked, the gradient in ``x``'s dtype."""
        from lsdiffusion._kernels.triton.kernels import ls_kernel

        n, k = x.shape
        x = x if x.stride(1) == 1 else x.contiguous()
        loss = torch.empty(n, dtype=launch.out_dtype(x), device=x.device)
        grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
        if n == 0:
            return (loss,), grad
        probs = self.probs
        target = self.target
        if probs and target.stride(1) != 1:
            target = target.contiguous()
        dummy = loss  # any pointer for the arguments a specialisation does not read
        ls_kernel[(n,)](
            x,
            x.stride(0),
            dummy if probs else target,
            target if probs else dummy,
            target.stride(0) if probs else 0,
            dummy if self.weight is None else self.weight,
            launch.row_scale(self.scale, x),
            dummy if self.valid is None else self.valid,
            loss,
            dummy if grad is None else grad,
            0 if grad is None else grad.stride(0),
            k,
            launch.params(x, self.alpha),
            HAS_WEIGHT=self.weight is not None,
            PROBS=probs,
            HAS_VALID=self.valid is not None,
            WRITE_GRAD=grad is not None,
            BLOCK=launch.block(k),
            ACC=launch.acc(x),
            num_warps=launch.warps(k),
        )
        return (loss,), grad

    def scale_grad(self, grad: Tensor, upstream: Tensor) -> None:
        """Multiply by the upstream gradient in place, reading it on the device."""
        launch.scale_(grad, upstream)
