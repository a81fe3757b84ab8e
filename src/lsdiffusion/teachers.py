r"""Cached teachers: a teacher given by its top-k outputs instead of its logits.

Distilling a language model from a cached teacher (its top-k classes per token,
stored once) saves running the teacher, and its memory, at every step. A
[`TopKTeacher`][lsdiffusion.TopKTeacher] is passed to
[`kd_loss`][lsdiffusion.kd_loss] (and [`kd_loss_terms`][lsdiffusion.kd_loss_terms],
[`KDLoss`][lsdiffusion.KDLoss]) in place of the teacher logits; the teacher is
never expanded to the student's full `(N, V)` shape.

**The two tail rules.** With the student's $p^T = \mathrm{softmax}(z_s / T)$
over all $V$ classes and the cached classes $I$ (k of them per row):

* `tail="renormalize"`: the teacher is the softmax of the cached values at $T$,
  $q_j = \mathrm{softmax}(v / T)_j$ over $j \in I$ (for log-probabilities this is
  the tempered teacher $p_t^{1/T}$ renormalised over the top k), and

    $$ \mathcal{L} = T^2 \sum_{j \in I} q_j \,\big(\log q_j - \log p^T_j\big). $$

  The student keeps its full softmax, so its mass outside $I$ is pushed down.
  Its gradient is $T\,(p^T - q)$, with $q$ zero outside $I$.
* `tail="bucket"` (needs `kind="logprobs"`): the teacher's remaining mass
  $r = 1 - \sum_{j \in I} e^{v_j}$ is one more category, the *bucket*. The
  tempered teacher over the $k + 1$ categories is
  $q = \mathrm{softmax}\big([v, \log r] / T\big)$, the student's is
  $P_j = p^T_j$ for $j \in I$ and $P_b = \sum_{i \notin I} p^T_i$, and

    $$ \mathcal{L} = T^2 \Big(\sum_{j \in I} q_j \log\frac{q_j}{P_j}
        + q_b \log\frac{q_b}{P_b}\Big). $$

  The student's tail classes share the bucket's gradient in proportion to
  their probabilities: $T\,p^T_i\,(1 - q_b / P_b)$ for $i \notin I$.
  `from_logits` also caches $\log r$ itself (`residual`), computed from the
  uncached classes: $1 - \sum_j e^{v_j}$ cancels when the top k hold nearly
  all the mass (float32: within 1e-6 of 1), and $r^{1/T}$ magnifies the error
  at high T (10% at T = 16 without it, 3e-7 with it).

With $k = V$ (every class cached, so there is no tail and no bucket) both rules
equal dense KD exactly. A cached value of `-inf` carries no teacher mass;
its class still counts as cached (outside the bucket).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from lsdiffusion._validation import normalize_dim

__all__ = ["TopKTeacher"]

TopKKind = Literal["logits", "logprobs"]
TopKTail = Literal["renormalize", "bucket"]
_KINDS = ("logits", "logprobs")
_TAILS = ("renormalize", "bucket")


@dataclass(frozen=True, eq=False)
class TopKTeacher:
    r"""A teacher given by `k` cached classes per row: their indices and values.

    Args:
        indices: integer tensor, the student logits' shape with the class dim
            of size `k` (e.g. `(N, k)` for `(N, V)` logits, `(B, L, k)` for
            `(B, L, V)` with `dim=-1`); distinct classes per row.
        values: the teacher's logits (`kind="logits"`) or log-probabilities
            (`kind="logprobs"`, $\le 0$) at those classes, same shape as `indices`.
        kind: what `values` hold.
        tail: `"renormalize"` or `"bucket"` (see the module page for the math);
            `"bucket"` needs `kind="logprobs"`, which knows the remaining mass.
        residual: optional, `tail="bucket"` only: the log of the teacher's mass
            outside the cached classes, $\log r$, shaped like `indices` with the
            class dim of size 1. Without it, $r = 1 - \sum_j e^{v_j}$ is computed
            from the values, which loses every digit of a tiny $r$ (float32: top-k
            mass within 1e-6 of 1), and the bucket's tempered weight
            $r^{1/T}$ magnifies that at high T. `from_logits` stores it, computed
            from the uncached classes themselves.

    Examples:
        >>> import torch
        >>> from lsdiffusion import TopKTeacher, kd_loss
        >>> s, t = torch.randn(4, 10), torch.randn(4, 10)
        >>> cached = TopKTeacher.from_logits(t, k=10, kind="logprobs", tail="bucket")
        >>> bool(torch.allclose(kd_loss(s, cached, 2.0), kd_loss(s, t, 2.0), atol=1e-6))
        True
        >>> cached = TopKTeacher.from_logits(t, k=3)  # 3 of 10 classes, renormalised
        >>> cached.indices.shape
        torch.Size([4, 3])
    """

    indices: Tensor
    values: Tensor
    kind: TopKKind = "logits"
    tail: TopKTail = "renormalize"
    residual: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.indices, Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(self.indices).__name__}")
        if not isinstance(self.values, Tensor):
            raise TypeError(f"values must be a torch.Tensor, got {type(self.values).__name__}")
        if self.indices.is_floating_point() or self.indices.is_complex():
            raise TypeError(f"indices must be an integer tensor, got dtype {self.indices.dtype}")
        if self.indices.dtype == torch.bool:
            raise TypeError("indices must be an integer tensor, got dtype torch.bool")
        if not self.values.is_floating_point():
            raise TypeError(
                f"values must be a floating-point tensor, got dtype {self.values.dtype}"
            )
        if self.indices.shape != self.values.shape:
            raise ValueError(
                "indices and values must have the same shape, got "
                f"{tuple(self.indices.shape)} and {tuple(self.values.shape)}"
            )
        if self.indices.dim() < 2:
            raise ValueError(
                "indices must be (N, k, ...) with a batch and a class dimension, got shape "
                f"{tuple(self.indices.shape)}"
            )
        if self.indices.device != self.values.device:
            raise ValueError(
                f"indices are on {self.indices.device} but values are on {self.values.device}"
            )
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {list(_KINDS)}, got {self.kind!r}")
        if self.tail not in _TAILS:
            raise ValueError(f"tail must be one of {list(_TAILS)}, got {self.tail!r}")
        if self.tail == "bucket" and self.kind != "logprobs":
            raise ValueError(
                "tail='bucket' needs kind='logprobs': the bucket holds the teacher's mass "
                "outside the cached classes, which logits alone do not give"
            )
        r = self.residual
        if r is None:
            return
        if self.tail != "bucket":
            raise ValueError(
                "residual is the bucket's log-mass and only tail='bucket' uses it; "
                f"got tail={self.tail!r}"
            )
        if not isinstance(r, Tensor) or not r.is_floating_point():
            got = f"dtype {r.dtype}" if isinstance(r, Tensor) else type(r).__name__
            raise TypeError(f"residual must be a floating-point tensor or None, got {got}")
        if r.dim() != self.indices.dim():
            raise ValueError(
                "residual must have the indices' dims with the class dim of size 1, got shape "
                f"{tuple(r.shape)} for indices of shape {tuple(self.indices.shape)}"
            )
        if r.device != self.indices.device:
            raise ValueError(f"residual is on {r.device} but indices are on {self.indices.device}")

    @classmethod
    def from_logits(
        cls,
        teacher_logits: Tensor,
        k: int,
        *,
        kind: TopKKind = "logits",
        tail: TopKTail = "renormalize",
        dim: int = -1,
    ) -> TopKTeacher:
        """Cache the top `k` classes of dense teacher logits (class dim `dim`).

        With `kind="logprobs"` the values are the log-probabilities
        `log_softmax(teacher_logits)` at T = 1 of the top `k` classes.
        The result keeps the class dim at `dim`.

        Raises:
            TypeError: `teacher_logits` not a floating-point tensor; `k` or `dim`
                not an int.
            ValueError: `dim` out of range; fewer than two dims (a batch and a
                class dim); `k` outside [1, number of classes].
        """
        if not isinstance(teacher_logits, Tensor) or not teacher_logits.is_floating_point():
            raise TypeError("teacher_logits must be a floating-point torch.Tensor")
        given: object = k  # numpy and torch integers too, never a bool
        if isinstance(given, bool) or not isinstance(given, numbers.Integral):
            raise TypeError(f"k must be an int, got {type(given).__name__} {given!r}")
        k = int(given)
        axis = normalize_dim("teacher_logits", dim, teacher_logits)
        shape = tuple(teacher_logits.shape)
        if teacher_logits.dim() < 2:
            raise ValueError(
                f"teacher_logits must be (N, V, ...) with a batch and a class dimension, got "
                f"shape {shape}"
            )
        size = shape[axis]
        if size == 0:
            raise ValueError(f"teacher_logits has no classes: dim {axis} of {shape} has size 0")
        if not 1 <= k <= size:
            raise ValueError(
                f"k must be in [1, {size}] (the size of dim {axis} of teacher_logits {shape}, "
                f"its classes), got {k}"
            )
        dim = axis
        t = teacher_logits.detach()
        if kind == "logprobs":
            t = torch.log_softmax(t.float() if t.dtype != torch.float64 else t, dim=dim)
        values, indices = torch.topk(t, k, dim=dim)
        residual = None
        if tail == "bucket" and kind == "logprobs":
            # log of the mass outside the top k, from those classes themselves (exact where
            # 1 - sum exp(values) would cancel)
            rest = t.scatter(dim, indices, float("-inf"))
            residual = torch.logsumexp(rest, dim=dim, keepdim=True)
        return cls(indices, values, kind=kind, tail=tail, residual=residual)

    def to(self, *args: Any, **kwargs: Any) -> TopKTeacher:
        """`Tensor.to`'s forms: `to(device, dtype)`, `to(dtype)`, `to(other_tensor)`, keywords.

        `values` are converted as `Tensor.to` would (and must stay floating
        point); `indices` keep their integer dtype and follow the device.

        Raises:
            TypeError: a dtype that is not floating point (the values' target).
        """
        values = self.values.to(*args, **kwargs)  # every form of Tensor.to, parsed by torch
        if not values.is_floating_point():
            raise TypeError(
                f"TopKTeacher.to: the values must stay floating point, got {values.dtype} "
                "(the indices keep their integer dtype on their own)"
            )
        flags = [a for a in args if isinstance(a, bool)]  # non_blocking, copy (positional)
        non_blocking = bool(kwargs.get("non_blocking", flags[0] if flags else False))
        copy = bool(kwargs.get("copy", flags[1] if len(flags) > 1 else False))
        extra = {"memory_format": kwargs["memory_format"]} if "memory_format" in kwargs else {}
        indices = self.indices.to(values.device, non_blocking=non_blocking, copy=copy, **extra)
        residual = None if self.residual is None else self.residual.to(*args, **kwargs)
        return TopKTeacher(indices, values, kind=self.kind, tail=self.tail, residual=residual)
