"""Knowledge distillation, Triton backend: the eager kernel's bindings, a Triton ``run``."""

from __future__ import annotations

import torch
from torch import Tensor

from lsdiffusion._kernels.eager.kd import KDKernel
from lsdiffusion._kernels.triton import launch

__all__ = ["TritonKDKernel"]


class TritonKDKernel(KDKernel):
    """One Triton program per row; see `lsdiffusion._kernels.triton.kernels`."""

    accelerated = True

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Row ``(total[, hard, soft])`` (scaled) and, if asked, the gradient."""
        from lsdiffusion._kernels.triton.kernels import kd_kernel

        if self.alpha:
            raise NotImplementedError("a label-smoothed hard term runs on the eager kernel")
        n, k = x.shape
        x = x if x.stride(1) == 1 else x.contiguous()
        teacher = self.teacher if self.teacher.stride(1) == 1 else self.teacher.contiguous()
        out_dtype = launch.out_dtype(x)
        loss = torch.empty(n, dtype=out_dtype, device=x.device)
        terms = self.need_terms
        hard = torch.empty(n, dtype=out_dtype, device=x.device) if terms else loss
        soft = torch.empty(n, dtype=out_dtype, device=x.device) if terms else loss
        grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
        outs = (loss, hard, soft) if terms else (loss,)
        if n == 0:
            return outs, grad
        target = self.target if (terms or self.beta < 1.0) else None
        t2 = self.temperature**2 if self.t2 else 1.0
        kd_kernel[(n,)](
            x,
            x.stride(0),
            teacher,
            teacher.stride(0),
            loss if target is None else target,
            launch.row_scale(self.scale, x),
            loss if self.valid is None else self.valid,
            loss,
            hard,
            soft,
            loss if grad is None else grad,
            0 if grad is None else grad.stride(0),
            k,
            launch.params(x, 1.0 / self.temperature, t2, self.beta),
            HAS_TARGET=target is not None,
            NEED_HARD=target is not None,
            UNIT_T=self.temperature == 1.0,
            HAS_VALID=self.valid is not None,
            WRITE_GRAD=grad is not None,
            TERMS=terms,
            BLOCK=launch.block(k),
            ACC=launch.acc(x),
            num_warps=launch.warps(k),
        )
        return outs, grad

    def scale_grad(self, grad: Tensor, upstream: Tensor) -> None:
        """Multiply by the upstream gradient in place, reading it on the device."""
        launch.scale_(grad, upstream)
