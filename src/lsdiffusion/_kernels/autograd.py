"""The autograd function around a kernel, and the choice of path per call.

First order (the fast path, on the CPU or through a Triton kernel): float32,
float64 and bfloat16 inputs get their gradient written during the forward
pass, into the only logits-sized buffer, and backward scales it in place
(bfloat16 has float32's exponent range, so a ``GradScaler`` scale cannot
overflow it). float16 inputs get the gradient in backward, with the upstream
gradient applied in float32 before the cast: a float16 gradient multiplied
afterwards by a scale of 65536 would overflow or, unscaled, flush to zero.
A second backward (``retain_graph=True``) recomputes.

Every other mode goes through the kernel's composite formula, which ordinary
autograd differentiates to any order:

* ``create_graph=True`` (double backward, gradient penalties, Hessians): the
  backward of the fast path switches to the composite gradient;
* forward-mode AD, ``torch.func`` transforms, ``torch.compile`` and
  ``torch.jit.trace``: the call itself runs the composite formula;
* tensors on accelerators bound to the eager backend (its implementations
  read values on the host); the Triton backend serves them without host reads.

Mutation safety: the logits and every caller tensor a kernel reads (teacher,
probability targets, weights) are saved with ``save_for_backward``. A backward
that needs them (a recompute) then raises PyTorch's usual "modified by an
inplace operation" error after an in-place change; one that does not (the
gradient was computed in forward) returns the gradient of the values seen in
forward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd import forward_ad

from lsdiffusion._kernels.base import LossKernel

__all__ = ["apply", "composite_only", "tracing_or_transforming"]


def tracing_or_transforming() -> bool:
    """Whether ``torch.compile``, ``torch.jit.trace`` or a ``torch.func`` transform is running.

    Values cannot be read then (no data-dependent Python control flow).
    """
    return bool(
        torch.compiler.is_compiling()
        or torch._C._get_tracing_state() is not None
        or torch._C._are_functorch_transforms_active()
    )


def _is_dual(x: Tensor) -> bool:
    if forward_ad._current_level < 0:
        return False
    return forward_ad.unpack_dual(x).tangent is not None  # type: ignore[no-untyped-call]


def composite_only(x: Tensor) -> bool:
    """Whether only the composite formula can serve ``x``: tracing, a transform, forward AD."""
    return tracing_or_transforming() or _is_dual(x)


class FusedLoss(torch.autograd.Function):
    """Gradient-in-forward loss; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any, x: Tensor, kernel: LossKernel, reduce: bool, *saved: Tensor
    ) -> tuple[Tensor, ...]:
        # float16 gradients are formed in backward, after the upstream scale (below)
        outs, grad = kernel.run(x, need_grad=x.dtype != torch.float16)
        ctx.kernel = kernel
        ctx.reduce = reduce
        ctx.grad = grad
        ctx.save_for_backward(x, *saved)
        results = tuple(o.sum() if reduce else o for o in outs)
        ctx.mark_non_differentiable(*results[1:])
        return results

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor, *unused: Tensor) -> tuple[Tensor | None, ...]:
        nones = (None,) * (len(ctx.needs_input_grad) - 1)
        grad: Tensor | None = ctx.grad
        ctx.grad = None  # hand the buffer over; autograd can then adopt it without a copy
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            x, *saved = ctx.saved_tensors
            kernel = ctx.kernel.rebind(tuple(saved))
            return (_composite_grad(kernel, x, grad_out, ctx.reduce), *nones)
        if grad is None:  # half input, or a second backward: recompute, upstream folded in
            x, *saved = ctx.saved_tensors
            kernel = ctx.kernel.rebind(tuple(saved)).with_upstream(grad_out)
            _, grad = kernel.run(x, need_grad=True)
            return (grad, *nones)
        if ctx.reduce:
            ctx.kernel.scale_grad(grad, grad_out)
        else:
            grad.mul_(grad_out.to(grad.dtype)[:, None])
        return (grad, *nones)


def _composite_grad(kernel: LossKernel, x: Tensor, grad_out: Tensor, reduce: bool) -> Tensor:
    """d(kernel output)/dx · grad_out, as a graph differentiable in ``x`` and ``grad_out``."""
    with torch.enable_grad():
        (out, *_) = kernel.composite(x)
        if reduce:
            out = out.sum()
        (grad,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
    return grad


def apply(x2d: Tensor, kernel: LossKernel, reduce: bool) -> tuple[Tensor, ...]:
    """Evaluate ``kernel`` on ``(rows, C)`` logits by the right path; sum if ``reduce``."""
    if composite_only(x2d) or (
        x2d.device.type != "cpu" and kernel.backend == "eager" and not kernel.host_free
    ):
        outs = kernel.composite(x2d)
        outs = (outs[0], *(o.detach() for o in outs[1:]))
    elif torch.is_grad_enabled() and x2d.requires_grad:
        saved = kernel.user_tensors()
        result: tuple[Tensor, ...] = FusedLoss.apply(x2d, kernel, reduce, *saved)  # type: ignore[no-untyped-call]
        return result
    else:
        outs, _ = kernel.run(x2d.detach(), need_grad=False)
    return tuple(o.sum() if reduce else o for o in outs)
