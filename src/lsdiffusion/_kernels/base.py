"""The interface every loss kernel implements, shared by the backends."""

from __future__ import annotations

import copy
from typing import ClassVar, Literal, TypeVar

import torch
from torch import Tensor

__all__ = [
    "BackendName",
    "LossKernel",
    "compute_dtype",
    "host_any",
    "where_valid",
    "zero_invalid",
    "zero_rows",
]

K = TypeVar("K", bound="LossKernel")

# the implementations a bound loss can run on (chosen by ``select.resolve``)
BackendName = Literal["eager", "triton"]


def compute_dtype(x: Tensor) -> torch.dtype:
    """The one compute-dtype rule: float64 stays float64, everything else is float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def host_any(mask: Tensor) -> bool:
    """``mask.any()`` as a Python bool. Only ever called on CPU tensors (free there)."""
    return bool(mask.any())


def zero_rows(grad: Tensor | None, rows: Tensor) -> None:
    """Give ``rows`` (a CPU bool mask) an exactly zero gradient, whatever their logits."""
    if grad is not None and host_any(rows):
        grad[rows] = 0


def where_valid(valid: Tensor | None, rows: Tensor) -> Tensor:
    """``rows`` with ignored rows set to 0 (``valid=None``: every row counts)."""
    return rows if valid is None else torch.where(valid, rows, 0.0)


def zero_invalid(valid: Tensor | None, x: Tensor) -> Tensor:
    """``(rows, C)`` logits with ignored rows replaced by zeros, before any softmax.

    Masking only the output is not enough for autograd: an ignored row of NaN or
    ``-inf`` logits would still send ``0 * NaN`` back through the softmax.
    """
    return x if valid is None else torch.where(valid[:, None], x, 0.0)


class LossKernel:
    """A row-wise loss over a ``(rows, C)`` tensor, with everything but the logits bound.

    ``run`` (fast, first order, by the bound ``backend``'s implementation of the
    loss: ``eager/<loss>.py`` or ``triton/<loss>.py``) returns the per-row
    outputs, already multiplied
    by the per-row reduction factor ``scale`` and zero on ignored rows, and, if
    asked, the gradient of the sum of the first output in the input's dtype.
    ``composite`` returns the same outputs as an ordinary differentiable
    PyTorch expression. The first output carries the gradient; the others
    (KD's hard and soft terms) are for logging.

    ``user_tensors`` are the caller's tensors the kernel reads (teacher logits,
    probability targets, class weights): the autograd function saves them so
    that an in-place change before a recomputing backward raises PyTorch's
    usual error instead of giving a silently different gradient.
    """

    scale: Tensor
    valid: Tensor | None  # None: no ignored rows
    # eager implementations read values on the host and serve CPU tensors only;
    # Triton ones serve accelerator tensors without host reads
    backend: BackendName
    # an eager kernel whose `run` reads no values on the host (device-agnostic torch
    # ops, such as the cached top-k teacher's) serves accelerator tensors too
    host_free: bool = False
    # backend="auto" chose Triton: a Triton failure reruns the call on the eager engine
    fallback: bool = False
    # the loss's implementation files: eager/<impl>.py and triton/<impl>.py
    impl: ClassVar[str] = ""

    def tensor_names(self) -> tuple[str, ...]:
        """The attributes holding the caller's tensors this kernel reads (none by default)."""
        return ()

    def user_tensors(self) -> tuple[Tensor, ...]:
        """The caller's tensors this kernel reads (saved for backward)."""
        return tuple(getattr(self, name) for name in self.tensor_names())

    def rebind(self: K, tensors: tuple[Tensor, ...]) -> K:
        """A copy reading ``tensors`` (as returned by `user_tensors`) instead."""
        return replace_tensors(self, self.tensor_names(), tensors)

    def with_upstream(self: K, upstream: Tensor) -> K:
        """A copy whose gradient comes out multiplied by ``upstream`` (scalar or per row)."""
        scaled = copy.copy(self)
        scaled.scale = self.scale * upstream.to(self.scale.dtype)
        return scaled

    def scale_grad(self, grad: Tensor, upstream: Tensor) -> None:
        """``grad *= upstream`` (a scalar) in place; skipped for a unit upstream on the CPU."""
        from lsdiffusion._kernels import select

        select.scale_grad(self, grad, upstream)

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Fast first-order evaluation (see the class docstring) on the bound backend."""
        from lsdiffusion._kernels import select

        return select.run(self, x, need_grad)

    def composite(self, x: Tensor) -> tuple[Tensor, ...]:  # pragma: no cover - interface
        """The same outputs as `run`, differentiable by ordinary autograd."""
        raise NotImplementedError


def replace_tensors(obj: K, names: tuple[str, ...], tensors: tuple[Tensor, ...]) -> K:
    """A shallow copy of ``obj`` with the attributes ``names`` set to ``tensors``."""
    out = copy.copy(obj)
    for name, tensor in zip(names, tensors, strict=True):
        setattr(out, name, tensor)
    return out


def finfo_tiny(dtype: torch.dtype) -> float:
    """Smallest normal number of ``dtype``."""
    return float(torch.finfo(dtype).tiny)
