"""Knowledge distillation, bound: everything but the student logits, and its composite formula.

The fast first-order evaluation is in ``eager/kd.py`` and ``triton/kd.py``
(the same function, ``run``, in each); `KDKernel.backend` says which.
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

__all__ = ["KDKernel"]


@dataclass(kw_only=True, eq=False)
class KDKernel(LossKernel):
    """KD over ``(rows, C)`` student logits against bound teacher logits.

    ``terms``: return ``(total, hard, soft)`` (the hard term computed even at
    ``beta = 1``); otherwise ``(total,)`` alone, the hard term only if ``beta < 1``.
    """

    teacher: Tensor
    temperature: float
    t2: bool
    beta: float
    target: Tensor | None
    terms: bool
    scale: Tensor
    valid: Tensor | None
    alpha: float = 0.0  # label smoothing of the hard term (0: plain cross-entropy)
    one_block: bool = False  # the caller already bounds the rows (fused linear chunks)
    backend: BackendName = "eager"
    fallback: bool = False  # backend="auto" chose Triton: a Triton failure reruns on eager

    impl: ClassVar[str] = "kd"

    @property
    def hard_wanted(self) -> bool:
        """Whether the hard term is computed: asked for, or mixed into the loss."""
        return self.target is not None and (self.terms or self.beta < 1.0)

    def tensor_names(self) -> tuple[str, ...]:
        # the class-index target too, so that a recomputing backward sees the forward's
        return ("teacher",) + (("target",) if self.target is not None else ())

    def composite(self, x: Tensor) -> tuple[Tensor, ...]:
        """Differentiable plain-PyTorch evaluation."""
        s = zero_invalid(self.valid, x.to(compute_dtype(x)))
        teacher = zero_invalid(self.valid, self.teacher)
        total, hard, soft = composite.kd_rows(
            s,
            teacher,
            temperature=self.temperature,
            t2=self.t2,
            beta=self.beta,
            target=self.target,
            terms=self.terms,
            alpha=self.alpha,
        )
        outs = (total, hard, soft) if self.terms else (total,)
        return tuple(where_valid(self.valid, o * self.scale) for o in outs)
