"""The losses the fused linear engine applies to each chunk of student logits.

A chunk loss holds everything the loss of a token needs besides the
student's logits (a teacher head, a cached top-k teacher, the targets), can
bind the bound kernel of one chunk of tokens (`kernel`), and knows its own
memory per token (`row_bytes`), so that the engine picks chunk sizes that
keep the temporaries within budget. Its tensors are handed to autograd for
saving (`tensors` / `rebind`), so that an in-place change before a
recomputing backward raises PyTorch's error.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lsdiffusion._kernels.base import BackendName, LossKernel
from lsdiffusion._kernels.kd import KDKernel
from lsdiffusion._kernels.label_smoothing import LabelSmoothingKernel
from lsdiffusion._kernels.topk import TopKKDKernel

if TYPE_CHECKING:
    from lsdiffusion._kernels.chunked.fused_linear import Head

__all__ = ["ChunkLoss", "KDChunks", "LSChunks", "TopKChunks"]


def _rows(t: Tensor | None, keep: Tensor) -> Tensor | None:
    return None if t is None else t.index_select(0, keep)


def _valid_rows(t: Tensor | None, valid: Tensor, fill: float | int) -> Tensor | None:
    if t is None:
        return None
    mask = valid.reshape(-1, *([1] * (t.dim() - 1)))
    return torch.where(mask, t, fill)


@dataclass(frozen=True, kw_only=True)
class ChunkLoss:
    """Interface: the loss of the tokens ``[lo, hi)``, given their student logits."""

    backend: BackendName
    fallback: bool  # backend="auto" chose Triton (a Triton failure reruns on eager)

    def tensors(self) -> tuple[Tensor, ...]:  # pragma: no cover - interface
        """The caller's tensors the loss reads (saved for backward)."""
        raise NotImplementedError

    def rebind(self, tensors: tuple[Tensor, ...]) -> ChunkLoss:  # pragma: no cover - interface
        """A copy reading ``tensors`` (as returned by `tensors`)."""
        raise NotImplementedError

    def kernel(self, lo: int, hi: int, scale: Tensor) -> LossKernel:  # pragma: no cover
        """The bound loss of tokens ``[lo, hi)``, rows scaled by ``scale``."""
        raise NotImplementedError

    def tokens(self, keep: Tensor) -> ChunkLoss:  # pragma: no cover - interface
        """The loss over the tokens ``keep`` (indices) only."""
        raise NotImplementedError

    def zero_ignored(self, valid: Tensor) -> ChunkLoss:  # pragma: no cover - interface
        """Ignored tokens (``~valid``) given harmless inputs (for the composite formula)."""
        raise NotImplementedError

    def row_bytes(self, vocab: int, dtype: torch.dtype) -> int:  # pragma: no cover
        """Temporaries per token of a chunk, in bytes: logits, gradient and scratch."""
        raise NotImplementedError

    def autocast(self, dtype: torch.dtype) -> ChunkLoss:
        """The loss with its float32 matmul inputs in ``dtype``, as autocast casts them."""
        return self


def _item(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True, kw_only=True)
class KDChunks(ChunkLoss):
    """KD against a teacher head: each chunk's teacher logits are computed beside the student's."""

    teacher: Head
    target: Tensor | None
    temperature: float
    t2: bool
    beta: float
    alpha: float

    def tensors(self) -> tuple[Tensor, ...]:
        """The teacher's head and the targets."""
        t = self.teacher
        return tuple(x for x in (t.hidden, t.weight, t.bias, self.target) if x is not None)

    def rebind(self, tensors: tuple[Tensor, ...]) -> KDChunks:
        """A copy reading the saved tensors."""
        from lsdiffusion._kernels.chunked.fused_linear import Head

        it = iter(tensors)
        hidden, weight = next(it), next(it)
        bias = next(it) if self.teacher.bias is not None else None
        target = next(it) if self.target is not None else None
        return replace(self, teacher=Head(hidden, weight, bias), target=target)

    def kernel(self, lo: int, hi: int, scale: Tensor) -> LossKernel:
        """KD of the chunk against its teacher logits (one block: the chunk is bounded)."""
        return KDKernel(
            teacher=self.teacher.logits(lo, hi),
            temperature=self.temperature,
            t2=self.t2,
            beta=self.beta,
            target=None if self.target is None else self.target[lo:hi],
            terms=False,
            scale=scale,
            valid=None,
            alpha=self.alpha,
            one_block=True,
            backend=self.backend,
            fallback=self.fallback,
        )

    def autocast(self, dtype: torch.dtype) -> KDChunks:
        """The teacher's head cast like the student's (its matmuls run under autocast too)."""
        from lsdiffusion._kernels.chunked.fused_linear import autocast_head

        return replace(self, teacher=autocast_head(self.teacher, dtype))

    def tokens(self, keep: Tensor) -> KDChunks:
        """The kept tokens' teacher states and targets."""
        return replace(self, teacher=self.teacher.tokens(keep), target=_rows(self.target, keep))

    def zero_ignored(self, valid: Tensor) -> KDChunks:
        """Ignored tokens' teacher states zeroed, their targets set to class 0."""
        target = _valid_rows(self.target, valid, 0)
        return replace(self, teacher=self.teacher.zero_tokens(valid), target=target)

    def row_bytes(self, vocab: int, dtype: torch.dtype) -> int:
        """Student and teacher logits and the gradient, plus the kernel's scratch.

        Eager: two float32 rows (three for half inputs, whose exponentials cannot
        live in the gradient block). Triton: none, but a label-smoothed hard term
        adds its own gradient block.
        """
        item = _item(dtype)
        if self.backend == "triton":
            smoothed = self.alpha and self.target is not None and self.beta < 1.0
            return vocab * item * (4 if smoothed else 3)
        return vocab * (3 * item + (3 * 4 if item < 4 else 2 * 4))


@dataclass(frozen=True, kw_only=True)
class TopKChunks(ChunkLoss):
    """KD against a cached top-k teacher: no teacher head, the chunk's cached rows."""

    indices: Tensor  # (N, k) int64
    values: Tensor  # (N, k), compute dtype
    bucket: bool
    log_r: Tensor | None  # (N,) the bucket's cached log-mass, if the teacher has it
    target: Tensor | None
    temperature: float
    t2: bool
    beta: float
    alpha: float

    def tensors(self) -> tuple[Tensor, ...]:
        """The cached teacher and the targets."""
        both = (self.indices, self.values, self.target, self.log_r)
        return tuple(x for x in both if x is not None)

    def rebind(self, tensors: tuple[Tensor, ...]) -> TopKChunks:
        """A copy reading the saved tensors."""
        it = iter(tensors)
        indices, values = next(it), next(it)
        target = next(it) if self.target is not None else None
        log_r = next(it) if self.log_r is not None else None
        return replace(self, indices=indices, values=values, target=target, log_r=log_r)

    def kernel(self, lo: int, hi: int, scale: Tensor) -> LossKernel:
        """The cached-teacher KD of the chunk (device-agnostic PyTorch ops, no host reads)."""
        return TopKKDKernel(
            indices=self.indices[lo:hi],
            values=self.values[lo:hi],
            temperature=self.temperature,
            t2=self.t2,
            bucket=self.bucket,
            beta=self.beta,
            target=None if self.target is None else self.target[lo:hi],
            with_terms=False,
            scale=scale,
            valid=None,
            alpha=self.alpha,
            log_r=None if self.log_r is None else self.log_r[lo:hi],
        )

    def tokens(self, keep: Tensor) -> TopKChunks:
        """The kept tokens' cached rows and targets."""
        return replace(
            self,
            indices=self.indices.index_select(0, keep),
            values=self.values.index_select(0, keep),
            target=_rows(self.target, keep),
            log_r=_rows(self.log_r, keep),
        )

    def zero_ignored(self, valid: Tensor) -> TopKChunks:
        """Ignored tokens cache the classes ``0..k-1`` uniformly, their targets class 0."""
        k = self.indices.shape[1]
        first = torch.arange(k, device=self.indices.device).expand_as(self.indices)
        uniform = torch.full_like(self.values, -float(torch.tensor(k).log()))
        mask = valid[:, None]
        return replace(
            self,
            indices=torch.where(mask, self.indices, first),
            values=torch.where(mask, self.values, uniform),
            target=_valid_rows(self.target, valid, 0),
            log_r=_valid_rows(self.log_r, valid, float("-inf")),  # uniform: no bucket mass
        )

    def row_bytes(self, vocab: int, dtype: torch.dtype) -> int:
        """The student logits and the kernel's float32 buffer, two with the hard term.

        Plus a float32 temporary while a row statistic (log-sum-exp, the
        smoothing sum) is formed.
        """
        hard = self.target is not None and self.beta < 1.0
        return vocab * (_item(dtype) + 4 * (3 if hard else 2))


@dataclass(frozen=True, kw_only=True)
class LSChunks(ChunkLoss):
    """Label smoothing with class-index targets (the LS teacher's own loss)."""

    target: Tensor  # (N,) int64, every token kept
    alpha: float
    weight: Tensor | None  # (V,) class weights in the compute dtype

    def tensors(self) -> tuple[Tensor, ...]:
        """The targets and the class weights."""
        return (self.target,) if self.weight is None else (self.target, self.weight)

    def rebind(self, tensors: tuple[Tensor, ...]) -> LSChunks:
        """A copy reading the saved tensors."""
        weight = tensors[1] if self.weight is not None else None
        return replace(self, target=tensors[0], weight=weight)

    def kernel(self, lo: int, hi: int, scale: Tensor) -> LossKernel:
        """Label smoothing of the chunk."""
        return LabelSmoothingKernel(
            target=self.target[lo:hi],
            probs=False,
            alpha=self.alpha,
            weight=self.weight,
            scale=scale,
            valid=None,
            backend=self.backend,
            fallback=self.fallback,
        )

    def tokens(self, keep: Tensor) -> LSChunks:
        """The kept tokens' targets."""
        return replace(self, target=self.target.index_select(0, keep))

    def zero_ignored(self, valid: Tensor) -> LSChunks:
        """Ignored tokens' targets set to class 0."""
        return replace(self, target=torch.where(valid, self.target, 0))

    def row_bytes(self, vocab: int, dtype: torch.dtype) -> int:
        """The student logits and the gradient, plus the eager kernel's float32 scratch.

        The eager kernel works in the gradient block for float32 and float64
        inputs (measured: 2 blocks per chunk); half inputs add two float32 rows.
        """
        item = _item(dtype)
        if self.backend == "triton" or item >= 4:
            return vocab * 2 * item
        return vocab * (2 * item + 2 * 4)
