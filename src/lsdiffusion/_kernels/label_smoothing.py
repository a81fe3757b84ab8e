"""Label smoothing, bound: targets, class weights and reduction, and its composite formula.

The fast first-order evaluation is in ``eager/label_smoothing.py`` and
``triton/label_smoothing.py`` (the same function, ``run``, in each);
`LabelSmoothingKernel.backend` says which.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from lsdiffusion._kernels import composite
from lsdiffusion._kernels.base import (
    BackendName,
    LossKernel,
    compute_dtype,
    where_valid,
    zero_invalid,
)

__all__ = ["LabelSmoothingKernel"]


@dataclass(kw_only=True, eq=False)
class LabelSmoothingKernel(LossKernel):
    """Label smoothing over ``(rows, C)`` logits."""

    target: Tensor  # (rows,) long, ignored rows clamped to 0 -- or (rows, C) probabilities
    probs: bool
    alpha: float
    weight: Tensor | None
    scale: Tensor
    valid: Tensor | None
    backend: BackendName = "eager"
    fallback: bool = False  # backend="auto" chose Triton: a Triton failure reruns on eager

    impl: ClassVar[str] = "label_smoothing"

    def tensor_names(self) -> tuple[str, ...]:
        # index targets too: a recomputing backward must see the values of the forward
        # pass, or raise PyTorch's in-place error (as F.cross_entropy does)
        return ("target",) + (("weight",) if self.weight is not None else ())

    def composite(self, x: Tensor) -> tuple[Tensor, ...]:
        """Differentiable plain-PyTorch evaluation."""
        xc = zero_invalid(self.valid, x.to(compute_dtype(x)))
        rows = composite.ls_rows(xc, self.target, self.probs, self.alpha, self.weight)
        return (where_valid(self.valid, rows * self.scale),)
