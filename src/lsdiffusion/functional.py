r"""Label-smoothing and knowledge-distillation losses as pure functions.

Each function validates its arguments, flattens the logits to ``(rows, C)``
with the class dim last, folds the reduction into a per-row factor and hands
the rest to the loss engine (`lsdiffusion._kernels`):

* **first order on the CPU** (the training-loop case) runs a fused kernel: the
  gradient is written during the forward pass into the only logits-sized
  buffer and backward scales it in place. Peak extra memory is that one
  tensor, against three to five for the usual one-liners, and a call opens a
  handful of large parallel regions, so a busy core slows it no more than it
  slows PyTorch's own ops;
* **first order on CUDA** runs the Triton kernels the same way (one program
  per row, no host reads) when ``triton`` is importable (``backend="auto"``);
* **every other autograd mode** (``create_graph=True``, forward mode,
  ``torch.func`` transforms, ``torch.compile``, ``torch.jit.trace``), and
  accelerator tensors on the eager backend (``backend="eager"``, or no
  ``triton``), run the same loss as ordinary differentiable PyTorch ops, with
  the same values.

Half-precision logits (``float16``, ``bfloat16``) are computed in ``float32``
inside; the loss comes back in ``float32`` (``float64`` logits stay
``float64``), the gradient in the logits' own dtype. The caller's tensors are
never written to, and an in-place change to a tensor the loss still needs
raises PyTorch's usual error at ``backward``.

Classes whose logit is ``-inf`` (a masked vocabulary) are outside the support:
their smoothing / distillation terms contribute nothing (the convention
$0 \cdot \log 0 = 0$ extended to the smoothing mass), so the loss stays
finite and the gradient NaN-free as long as the target class itself is finite.
A row with no finite logit (student, or KD teacher) has no distribution: its
loss and gradient are NaN.

Host synchronisation: on the CPU the checks read values freely. On an
accelerator no call synchronises: the class-index range check is a
device-side assert (``torch._assert_async``), reported at the next sync.
Under ``torch.compile``, ``torch.export``, ``torch.jit.trace`` and
``torch.func`` transforms values cannot be read: there an out-of-range class
index fails in the composite formula's gather (PyTorch's "index out of
bounds" error; a device-side assert on CUDA), for every loss that takes a
target, ``kd_loss`` with ``beta=1`` included.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from lsdiffusion._kernels.autograd import apply, tracing_or_transforming
from lsdiffusion._kernels.base import BackendName, LossKernel, compute_dtype
from lsdiffusion._kernels.kd import KDKernel
from lsdiffusion._kernels.label_smoothing import LabelSmoothingKernel
from lsdiffusion._kernels.select import resolve
from lsdiffusion._validation import (
    Backend,
    check_backend,
    check_bool,
    check_finite_positive,
    check_fused_linear_ls_options,
    check_fused_linear_options,
    check_ignore_index,
    check_in_unit_interval,
    check_kd_reduction,
    check_reduction,
    normalize_dim,
)
from lsdiffusion.teachers import TopKTeacher

__all__ = [
    "KDTerms",
    "fused_linear_kd_loss",
    "fused_linear_label_smoothing_loss",
    "kd_loss",
    "kd_loss_terms",
    "label_smoothing_loss",
]

LSReduction = Literal["none", "mean", "sum"]
KDReduction = Literal["none", "batchmean", "sum"]

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _flatten_logits(name: str, logits: Tensor, dim: int) -> tuple[Tensor, int]:
    """Move the class dim last and flatten to ``(rows, C)``; returns (x2d, dim)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 1:
        raise ValueError(f"{name} must have a class dimension, got a 0-d tensor")
    if logits.dim() == 1:
        raise ValueError(
            f"{name} must be (N, C, ...) with a batch dimension, got shape {tuple(logits.shape)}; "
            "use logits.unsqueeze(0) for a single sample"
        )
    d = normalize_dim(name, dim, logits)
    if logits.shape[d] == 0:
        raise ValueError(f"{name} must have at least one class, got shape {tuple(logits.shape)}")
    x = logits.movedim(d, -1)
    return x.reshape(-1, x.shape[-1]), d


def _unflatten_rows(rows: Tensor, logits: Tensor, dim: int) -> Tensor:
    shape = logits.shape[:dim] + logits.shape[dim + 1 :]
    return rows.reshape(shape)


def _finish(out: Tensor, reduction: str, logits: Tensor, dim: int) -> Tensor:
    return _unflatten_rows(out, logits, dim) if reduction == "none" else out


def _check_index_target(
    target: Tensor, logits: Tensor, dim: int, ignore_index: int, name: str = "target"
) -> tuple[Tensor, bool]:
    """Validate class-index targets; return them flat ``(rows,)`` and if any may be ignored.

    The flag is ``False`` only when no target can equal ``ignore_index``.
    """
    expected = logits.shape[:dim] + logits.shape[dim + 1 :]
    if target.shape != expected:
        raise ValueError(
            f"{name} must hold class indices of shape {tuple(expected)} (the logits' shape "
            f"{tuple(logits.shape)} without the class dim {dim}), got {tuple(target.shape)}"
        )
    if target.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"{name} indices must be an integer tensor, got dtype {target.dtype}")
    if target.device != logits.device:
        raise ValueError(f"{name} is on {target.device} but the logits are on {logits.device}")
    return _check_range(target.reshape(-1).long(), logits.shape[dim], ignore_index, name)


def _check_range(
    flat: Tensor, num_classes: int, ignore_index: int, name: str
) -> tuple[Tensor, bool]:
    """Range-check flat class indices; also say whether some may equal ``ignore_index``."""
    if not flat.numel():
        return flat, False
    if _inspectable(flat):
        lo, hi = (int(v) for v in torch.aminmax(flat))
        if lo >= 0 and hi < num_classes:
            return flat, lo <= ignore_index <= hi
    bad = ((flat < 0) | (flat >= num_classes)) & (flat != ignore_index)
    message = (
        f"{name} contains {{}}, outside [0, {num_classes - 1}] "
        f"(and not ignore_index={ignore_index})"
    )
    if _inspectable(flat):
        if bool(bad.any()):
            raise ValueError(message.format(f"class index {int(flat[bad][0])}"))
    elif flat.device.type != "cpu" and not tracing_or_transforming():
        torch._assert_async(~bad.any(), message.format("a class index"))  # no host sync
    return flat, True


def _inspectable(t: Tensor) -> bool:
    """Whether checks may read values of ``t`` (a CPU tensor outside any tracing/transform)."""
    return t.device.type == "cpu" and not tracing_or_transforming()


def _check_weight(
    weight: Tensor | None, num_classes: int, x: Tensor, name: str = "weight"
) -> Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or None, got {type(weight).__name__}")
    if weight.dim() != 1 or weight.shape[0] != num_classes:
        raise ValueError(
            f"{name} must be 1-D with one entry per class ({num_classes}), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"{name} is on {weight.device} but the logits are on {x.device}")
    if weight.requires_grad:
        raise ValueError(
            f"{name} requires grad, but the losses give no gradient to the class weights; "
            f"pass {name}.detach()"
        )
    return weight.to(dtype=compute_dtype(x))


def _row_scale(
    valid: Tensor | None,
    x: Tensor,
    reduction: str,
    denominator: Tensor | None,
    dtype: torch.dtype,
) -> Tensor:
    """Per-row factor folding the reduction into the fused kernel.

    ``valid=None`` means every row counts (no ``ignore_index`` among the targets).
    """
    n = x.shape[0]
    if valid is None and denominator is None:
        scale = torch.ones(n, dtype=dtype, device=x.device)
        # divide in dtype: 1.0 / n would be a float32 constant under torch.jit.trace
        return scale.div_(n) if reduction in ("mean", "batchmean") and n > 0 else scale
    if valid is None:
        valid = torch.ones(n, dtype=torch.bool, device=x.device)
    scale = valid.to(dtype)
    if reduction in ("mean", "batchmean"):
        den = scale.sum() if denominator is None else denominator.to(dtype)
        # An all-ignored (or empty) batch gives a zero loss and a zero gradient; any
        # other denominator divides as in PyTorch (negative class weights included).
        inv = torch.where(valid.any(), 1.0 / den, 0.0)
        scale = scale * inv
    return scale


# ---------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------


def label_smoothing_loss(
    logits: Tensor,
    target: Tensor,
    alpha: float = 0.1,
    *,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: LSReduction = "mean",
    dim: int = 1,
    backend: Backend = "auto",
) -> Tensor:
    r"""Cross-entropy against label-smoothed targets.

    With $K$ classes, $p = \mathrm{softmax}(z)$ and smoothing
    $\alpha$, the smoothed target puts $1-\alpha$ on the true class and
    spreads $\alpha$ uniformly over *all* $K$ classes (the true class
    included, as in ``F.cross_entropy(label_smoothing=α)``, timm and the paper):

    $$
    y^{LS} = (1-\alpha)\,\mathrm{onehot}(y) + \alpha / K, \qquad
    \ell = -\sum_k w_k\, y^{LS}_k \log p_k .
    $$

    For index targets with class weights $w$ this is exactly PyTorch's
    formula: ``"mean"`` divides by $\sum_i w_{y_i}$ over non-ignored
    elements (by their count without weights). Probability targets are
    smoothed the same way, $(1-\alpha)\,y + \alpha/K$, and ``"mean"``
    averages over all elements. ``alpha=0`` is plain cross-entropy.

    Unlike PyTorch, a batch whose targets are all ``ignore_index`` gives ``0``
    with a zero gradient (not NaN), and ``-inf`` logits (a masked vocabulary)
    give a finite loss: their share of the smoothing mass is dropped.

    Args:
        logits: unnormalised scores, ``(N, C)``, ``(N, C, d1, ...)``, or with the
            class dim elsewhere (``dim=-1`` for ``(B, L, V)``). Any float dtype;
            half precision is computed in float32.
        target: class indices with the logits' shape minus the class dim, or
            probabilities with the logits' shape.
        alpha: smoothing in ``[0, 1]``.
        weight: optional per-class weights, shape ``(C,)``.
        ignore_index: index targets equal to it are skipped (index targets only).
        reduction: ``"none"`` (one value per element), ``"mean"`` or ``"sum"``.
        dim: the class dimension of ``logits``.
        backend: ``"auto"`` (the Triton kernel for CUDA tensors when ``triton`` is
            importable, else the eager engine), ``"eager"`` or ``"triton"`` (CUDA
            tensors; CPU tensors only under ``TRITON_INTERPRET=1``).

    Returns:
        A scalar, or the per-element losses for ``reduction="none"``; float32
        (float64 for float64 logits).

    Shape:
        - logits: $(N, C, d_1, \ldots)$ with ``dim=1``, or the class dim at ``dim``.
        - target: $(N, d_1, \ldots)$ indices or the logits' shape (probabilities).
        - output: scalar, or $(N, d_1, \ldots)$ for ``"none"``.

    Examples:
        >>> import torch
        >>> from lsdiffusion import label_smoothing_loss
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
        >>> target = torch.tensor([0, 2])
        >>> loss = label_smoothing_loss(logits, target, alpha=0.1)
        >>> round(loss.item(), 4)
        0.3276
        >>> ref = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
        >>> bool(torch.isclose(loss, ref))
        True
    """
    check_in_unit_interval("alpha", alpha)
    check_reduction(reduction, ("none", "mean", "sum"))
    check_ignore_index(ignore_index)
    x, d = _flatten_logits("logits", logits, dim)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    num_classes = x.shape[1]
    w = _check_weight(weight, num_classes, x)
    cdtype = compute_dtype(x)

    probs = target.is_floating_point()
    if probs:
        if target.shape != logits.shape:
            raise ValueError(
                f"probability target must have the logits' shape {tuple(logits.shape)}, "
                f"got {tuple(target.shape)} (class-index targets must be an integer tensor)"
            )
        if target.device != logits.device:
            raise ValueError(f"target is on {target.device} but the logits are on {logits.device}")
        if target.requires_grad:
            raise ValueError(
                "probability target requires grad, but label_smoothing_loss gives no gradient "
                "to the target; pass target.detach()"
            )
        tgt = target.movedim(d, -1).reshape(-1, num_classes)
        valid = None
        denominator = None
    else:
        flat, may_ignore = _check_index_target(target, logits, d, ignore_index)
        valid = (flat != ignore_index) if may_ignore else None
        tgt = flat if valid is None else torch.where(valid, flat, 0)
        if w is None:
            denominator = None
        else:
            denominator = w[tgt].sum() if valid is None else torch.where(valid, w[tgt], 0.0).sum()

    scale = _row_scale(valid, x, reduction, denominator, cdtype)
    kernel = LabelSmoothingKernel(
        target=tgt,
        probs=probs,
        alpha=float(alpha),
        weight=w,
        scale=scale,
        valid=valid,
        backend=resolve(check_backend(backend), x),
    )
    (loss,) = apply(x, kernel, reduce=reduction != "none")
    return _finish(loss, reduction, logits, d)


class KDTerms(NamedTuple):
    """The knowledge-distillation loss and its two parts, for logging.

    ``loss = (1 - beta) * hard + beta * soft``; ``loss`` carries the gradient,
    ``hard`` (cross-entropy with the labels, at T = 1) and ``soft`` (the
    T²-scaled KL term) are detached, reduced the same way as ``loss``. ``hard``
    is computed whenever a target is given, ``beta = 1`` included; without a
    target it is 0.
    """

    loss: Tensor
    hard: Tensor
    soft: Tensor


def kd_loss_terms(
    student_logits: Tensor,
    teacher_logits: Tensor | TopKTeacher,
    temperature: float,
    *,
    target: Tensor | None = None,
    beta: float = 1.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    dim: int = 1,
    backend: Backend = "auto",
) -> KDTerms:
    """Like [`kd_loss`][lsdiffusion.kd_loss], but returns the loss with its hard and soft parts.

    Examples:
        >>> import torch
        >>> from lsdiffusion import kd_loss_terms
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2.0, 0.0, 0.0]])
        >>> terms = kd_loss_terms(s, t, 2.0, target=torch.tensor([0]), beta=0.5)
        >>> tuple(round(v.item(), 4) for v in terms)
        (0.2495, 0.4076, 0.0914)
    """
    return _kd_terms(
        student_logits,
        teacher_logits,
        temperature,
        target=target,
        beta=beta,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        reduction=reduction,
        dim=dim,
        terms=True,
        backend=backend,
    )


def _kd_terms(
    student_logits: Tensor,
    teacher_logits: Tensor | TopKTeacher,
    temperature: float,
    *,
    target: Tensor | None,
    beta: float,
    t2_scaling: bool,
    ignore_index: int,
    reduction: str,
    dim: int,
    terms: bool,
    backend: str = "auto",
) -> KDTerms:
    """`kd_loss_terms`; ``terms=False`` returns the loss alone, in every field.

    Without the terms, the hard term is computed only when ``beta < 1``.
    """
    check_finite_positive("temperature", temperature)
    check_in_unit_interval("beta", beta)
    check_kd_reduction(reduction)
    check_bool("t2_scaling", t2_scaling)
    check_ignore_index(ignore_index)
    if not isinstance(student_logits, Tensor):
        raise TypeError(
            f"student_logits must be a torch.Tensor, got {type(student_logits).__name__}"
        )
    if not isinstance(teacher_logits, (Tensor, TopKTeacher)):
        raise TypeError(
            "teacher_logits must be a torch.Tensor or a TopKTeacher, got "
            f"{type(teacher_logits).__name__}"
        )
    if isinstance(teacher_logits, TopKTeacher):
        pass  # checked against the student's class dim below
    elif teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if isinstance(teacher_logits, Tensor) and teacher_logits.device != student_logits.device:
        raise ValueError(
            f"teacher_logits is on {teacher_logits.device} but student_logits is on "
            f"{student_logits.device}"
        )
    x, d = _flatten_logits("student_logits", student_logits, dim)
    cdtype = compute_dtype(x)
    if isinstance(teacher_logits, TopKTeacher):
        from lsdiffusion._kernels.topk import flatten_teacher

        topk = flatten_teacher(teacher_logits, student_logits, d)
    else:
        t2d, _ = _flatten_logits("teacher_logits", teacher_logits.detach(), dim)
        if t2d.dtype == torch.float64 and cdtype != torch.float64:
            t2d = t2d.to(cdtype)  # a float64 teacher for a float32 (or half) student

    if target is None:
        if beta < 1.0:
            raise ValueError(
                f"beta={beta} < 1 mixes in a hard-label cross-entropy, which needs target; "
                "pass target=... or use beta=1.0 for pure distillation"
            )
        flat = None
        valid = None
    else:
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor or None, got {type(target).__name__}")
        if target.is_floating_point():
            raise TypeError(
                f"target must hold class indices (an integer tensor), got dtype {target.dtype}"
            )
        idx, may_ignore = _check_index_target(target, student_logits, d, ignore_index)
        valid = (idx != ignore_index) if may_ignore else None
        flat = idx if valid is None else torch.where(valid, idx, 0)

    scale = _row_scale(valid, x, reduction, None, cdtype)
    kernel: LossKernel
    if isinstance(teacher_logits, TopKTeacher):
        from lsdiffusion._kernels.topk import TopKKDKernel

        if check_backend(backend) == "triton":
            raise ValueError(
                "a cached TopKTeacher has no Triton kernel (it runs as device-agnostic "
                "PyTorch ops on every device): use backend='auto' or 'eager'"
            )
        indices, values, bucket = topk
        kernel = TopKKDKernel(
            indices=indices,
            values=values,
            temperature=float(temperature),
            t2=t2_scaling,
            bucket=bucket,
            beta=float(beta),
            target=flat,
            with_terms=terms,
            scale=scale,
            valid=valid,
        )
    else:
        kernel = KDKernel(
            teacher=t2d,
            temperature=float(temperature),
            t2=t2_scaling,
            beta=float(beta),
            target=flat,
            terms=terms,
            scale=scale,
            valid=valid,
            backend=resolve(check_backend(backend), x),
        )
    outs = apply(x, kernel, reduce=reduction != "none")
    loss = _finish(outs[0], reduction, student_logits, d)
    if not terms:  # kd_loss: the loss alone
        return KDTerms(loss, loss.detach(), loss.detach())
    return KDTerms(
        loss,
        _finish(outs[1], reduction, student_logits, d).detach(),
        _finish(outs[2], reduction, student_logits, d).detach(),
    )


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | TopKTeacher,
    temperature: float,
    *,
    target: Tensor | None = None,
    beta: float = 1.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    dim: int = 1,
    backend: Backend = "auto",
) -> Tensor:
    r"""Hinton knowledge-distillation loss with the $T^2$ factor.

    With $p^T = \mathrm{softmax}(z / T)$ applied to both networks,

    $$
    \mathcal{L}_{KD} = T^2 \,\mathrm{KL}\big(p^T_{teacher} \,\|\, p^T_{student}\big)
                     = T^2 \sum_k p^T_{t,k}\,\big(\log p^T_{t,k} - \log p^T_{s,k}\big),
    $$

    summed over the class dim and averaged over the non-ignored rows or tokens
    (``"batchmean"``; never an elementwise mean, which would be off by a factor
    $C$). The $T^2$ factor keeps gradient magnitudes comparable
    across temperatures: the student's gradient is
    $T\,(p^T_s - p^T_t) / n_{rows}$. The teacher gets no gradient.

    With ``target`` and ``beta < 1`` the loss is
    $(1-\beta)\,\mathrm{CE}(y, p_s) + \beta\,\mathcal{L}_{KD}$ (the paper
    uses $\beta = 1$). ``target`` also masks rows whose label is
    ``ignore_index`` (padding tokens), in both terms, even with ``beta=1``.
    Use [`kd_loss_terms`][lsdiffusion.kd_loss_terms] to get the two parts for logging.

    Conditioning at high temperature: the KL of the two tempered distributions
    shrinks like $1/T^2$ while the terms it is computed from stay of order
    $|s - t|/T$, so any float32 evaluation loses digits as T grows (the $T^2$
    factor restores the scale, not the digits). The fast kernels write the KL as
    $\sum_k p^T_{t,k}(b_k - a_k) + \log(1 + D/S_t)$, with $a, b$ the max-shifted
    scaled logits, $S_t = \sum_k e^{b_k}$ and $D = \sum_k (e^{a_k} - e^{b_k})$
    summed from the elementwise differences, which keeps two to three more
    digits than `F.kl_div`: at C = 1000 in float32, for a student near its
    teacher, the median relative error is 5e-5 at T = 64 and 1e-2 at T = 1000,
    where `F.kl_div` has 1e-2 and over 100% (the Triton kernel, within 3x of the
    eager one). The composite formula (`torch.compile`, `torch.func`,
    `create_graph=True`, and the eager kernel's rows holding `-inf` logits) has
    `F.kl_div`'s accuracy. The gradient,
    $T\,(p^T_s - p^T_t)$, is well conditioned at every T. Pass float64 logits
    when the value at T in the hundreds matters to more than two digits.

    Args:
        student_logits: ``(N, C, ...)`` or with the class dim at ``dim``.
        teacher_logits: same shape as ``student_logits``, or a cached
            [`TopKTeacher`][lsdiffusion.TopKTeacher] whose indices have the
            student's shape with `k` classes at `dim` (cache with the same `dim`,
            e.g. `TopKTeacher.from_logits(t, k, dim=-1)` with `dim=-1` here); never
            receives a gradient.
        temperature: $T > 0$, finite.
        target: optional class indices (the logits' shape without the class dim).
        beta: weight of the distillation term in ``[0, 1]``.
        t2_scaling: multiply the KL term by $T^2$ (default ``True``).
        ignore_index: target value marking rows to skip.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"`` (one value per row/token).
        dim: the class dimension.
        backend: ``"auto"``, ``"eager"`` or ``"triton"``, as for
            [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss].

    Returns:
        The loss, float32 (float64 for float64 logits).

    Shape:
        - student_logits, teacher_logits: $(N, C, d_1, \ldots)$ (class dim at ``dim``).
        - target: $(N, d_1, \ldots)$.
        - output: scalar, or $(N, d_1, \ldots)$ for ``"none"``.

    Examples:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from lsdiffusion import kd_loss
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2.0, 0.0, 0.0]])
        >>> loss = kd_loss(s, t, temperature=2.0)
        >>> ref = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
        >>> round(loss.item(), 4), bool(torch.isclose(loss, ref))
        (0.0914, True)
    """
    return _kd_terms(
        student_logits,
        teacher_logits,
        temperature,
        target=target,
        beta=beta,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        reduction=reduction,
        dim=dim,
        terms=False,
        backend=backend,
    ).loss


def _check_hidden(name: str, hidden: object) -> Tensor:
    if not isinstance(hidden, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(hidden).__name__}")
    if not hidden.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {hidden.dtype}")
    if hidden.dim() not in (2, 3):
        raise ValueError(f"{name} must be (N, H) or (B, L, H), got shape {tuple(hidden.shape)}")
    return hidden


def _check_head(name: str, weight: object, bias: object, hidden: Tensor, bias_name: str) -> None:
    if not isinstance(weight, Tensor) or not weight.is_floating_point() or weight.dim() != 2:
        got = (
            f"shape {tuple(weight.shape)}, dtype {weight.dtype}"
            if isinstance(weight, Tensor)
            else type(weight).__name__
        )
        raise ValueError(f"{name} must be a 2-D floating-point (V, H) tensor, got {got}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{name} must be (V, H) with H = {hidden.shape[-1]} (the hidden size), "
            f"got shape {tuple(weight.shape)}"
        )
    if weight.device != hidden.device:
        raise ValueError(
            f"{name} is on {weight.device} but the hidden states are on {hidden.device}"
        )
    if weight.dtype != hidden.dtype:
        raise TypeError(
            f"{name} must have the hidden states' dtype {hidden.dtype} (the matmul runs in it), "
            f"got {weight.dtype}"
        )
    if bias is None:
        return
    if not isinstance(bias, Tensor) or bias.shape != (weight.shape[0],):
        got = f"shape {tuple(bias.shape)}" if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(f"{bias_name} must be a ({weight.shape[0]},) tensor or None, got {got}")
    if bias.dtype != hidden.dtype:
        raise TypeError(
            f"{bias_name} must have the hidden states' dtype {hidden.dtype}, got {bias.dtype}"
        )


def _fused_target(
    target: object, token_shape: torch.Size, hidden: Tensor, vocab: int, ignore_index: int
) -> tuple[Tensor, Tensor | None]:
    """Flat class-index targets of a fused loss, and the kept tokens' mask (None: all kept)."""
    if not isinstance(target, Tensor) or target.is_floating_point() or target.is_complex():
        got = f"dtype {target.dtype}" if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"target must be an integer tensor of class indices, got {got}")
    if target.dtype == torch.bool:
        raise TypeError("target must be an integer tensor of class indices, got dtype torch.bool")
    if target.shape != token_shape:
        raise ValueError(
            f"target must have the token shape {tuple(token_shape)}, got {tuple(target.shape)}"
        )
    if target.device != hidden.device:
        raise ValueError(
            f"target is on {target.device} but the hidden states are on {hidden.device}"
        )
    flat, may_ignore = _check_range(target.reshape(-1).long(), vocab, ignore_index, "target")
    return flat, (flat != ignore_index) if may_ignore else None


def _fused_backend(backend: str, hidden: Tensor) -> tuple[BackendName, bool]:
    """The chunk kernels' implementation, and whether a Triton failure falls back."""
    return resolve(backend, hidden), backend == "auto"


def fused_linear_kd_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor | TopKTeacher,
    teacher_weight: Tensor | None,
    temperature: float,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    target: Tensor | None = None,
    beta: float = 1.0,
    alpha: float = 0.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    r"""Knowledge distillation through the output heads, without ever holding the logits.

    The value is exactly [`kd_loss`][lsdiffusion.kd_loss] of
    $s = h_s W_s^\top + b_s$ against $t = h_t W_t^\top + b_t$
    ($T^2$ convention, ``batchmean`` over the non-ignored tokens), with
    ``target`` and ``beta < 1`` mixing in a hard term that ``alpha > 0``
    label-smooths (the LS-teacher recipe):

    $$
    \mathcal{L} = (1-\beta)\,\ell_{LS(\alpha)}(y, s) + \beta\,T^2\,
    \mathrm{KL}\big(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T)\big).
    $$

    The teacher may instead be a cached [`TopKTeacher`][lsdiffusion.TopKTeacher]
    (pass it as ``teacher_hidden`` with ``teacher_weight=None``): then no teacher
    head runs at all, and the soft term is the cached teacher's
    ([`kd_loss`][lsdiffusion.kd_loss] with that teacher, either tail rule).

    The tokens are processed ``chunk_size`` rows at a time: each chunk's logits
    are computed (matmul in the input dtype, softmax in float32), its loss and
    the gradients with respect to ``student_hidden``, ``student_weight`` and
    ``student_bias`` are accumulated, and the chunk's logits are dropped. With
    ``chunk_size=None`` the chunk temporaries take at most 64 MiB or 0.2 of
    one $N \times V$ logits tensor, whichever is larger, instead of the two or
    more logits tensors of the unfused loss. The same chunked loop runs on
    every device: on CUDA each chunk's loss and gradient come from the Triton
    kernels (``backend="auto"``), and a CPU tensor takes exactly that path with
    ``backend="triton"`` under ``TRITON_INTERPRET=1``. Half-precision heads
    accumulate the weight gradient in float32 when that buffer takes at most
    half of that budget, otherwise in their own dtype (one rounding per chunk,
    as Liger-Kernel does). Tokens whose target is ``ignore_index`` are dropped
    before the matmuls: with a ``target`` on an accelerator, finding them reads
    the mask on the host, the one synchronisation a call makes (none without a
    ``target``). The teacher receives no gradient.

    Every autograd mode of [`kd_loss`][lsdiffusion.kd_loss] works: ``create_graph=True``,
    ``torch.func`` transforms, forward mode and ``torch.compile`` run the
    unfused formula (correct, but with the unfused memory). Under autocast the
    matmuls run in the autocast dtype.

    Args:
        student_hidden: ``(N, H)`` or ``(B, L, H)`` inputs of the student's head.
        student_weight: the student's head weight ``(V, H)``.
        teacher_hidden: ``(N, H_t)`` or ``(B, L, H_t)`` (the teacher may be wider),
            or a `TopKTeacher` whose indices are ``(N, k)`` or ``(B, L, k)``.
        teacher_weight: ``(V, H_t)``; ``None`` with a `TopKTeacher`.
        temperature: $T > 0$.
        student_bias: optional ``(V,)``.
        teacher_bias: optional ``(V,)`` (not with a `TopKTeacher`).
        target: optional class indices ``(N,)`` or ``(B, L)``.
        beta: weight of the distillation term in ``[0, 1]``.
        alpha: label smoothing of the hard term in ``[0, 1]``.
        t2_scaling: multiply the KL term by $T^2$.
        ignore_index: target value marking tokens to skip.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"`` (one value per token).
        chunk_size: tokens per chunk; ``None`` picks the budget above.
        backend: ``"auto"`` (Triton chunk kernels for CUDA tensors when ``triton``
            is importable, else the eager engine), ``"eager"`` or ``"triton"``, as
            for [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss]. A cached
            teacher has one implementation (device-agnostic PyTorch ops, no host
            reads) and takes ``"auto"`` or ``"eager"``.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from lsdiffusion import TopKTeacher, fused_linear_kd_loss, kd_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h_s, w_s = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
        >>> h_t, w_t = torch.randn(6, 8, generator=g), torch.randn(10, 8, generator=g)
        >>> loss = fused_linear_kd_loss(h_s, w_s, h_t, w_t, 2.0, chunk_size=4)
        >>> bool(torch.isclose(loss, kd_loss(h_s @ w_s.T, h_t @ w_t.T, 2.0)))
        True
        >>> cached = TopKTeacher.from_logits(h_t @ w_t.T, k=3)  # no teacher head needed
        >>> loss = fused_linear_kd_loss(h_s, w_s, cached, None, 2.0)
        >>> bool(torch.isclose(loss, kd_loss(h_s @ w_s.T, cached, 2.0, dim=-1)))
        True
    """
    from lsdiffusion._kernels.chunked.fused_linear import Head, fused_linear_rows
    from lsdiffusion._kernels.chunked.losses import ChunkLoss, KDChunks, TopKChunks

    check_fused_linear_options(
        temperature, beta, alpha, reduction, t2_scaling, ignore_index, chunk_size, backend
    )
    h_s = _check_hidden("student_hidden", student_hidden)
    cached = isinstance(teacher_hidden, TopKTeacher)
    if not cached:
        h_t = _check_hidden("teacher_hidden", teacher_hidden)
        if h_t.shape[:-1] != h_s.shape[:-1]:
            raise ValueError(
                "teacher_hidden must have the student's token dims "
                f"{tuple(h_s.shape[:-1])} (+ its own hidden size), got {tuple(h_t.shape)}"
            )
        if h_t.device != h_s.device:
            raise ValueError(
                f"teacher_hidden is on {h_t.device} but student_hidden is on {h_s.device}"
            )
    _check_head("student_weight", student_weight, student_bias, h_s, "student_bias")
    vocab = student_weight.shape[0]
    token_shape = h_s.shape[:-1]
    h = h_s.reshape(-1, h_s.shape[-1])

    y: Tensor | None = None
    valid: Tensor | None = None
    if target is None:
        if beta < 1.0:
            raise ValueError(
                f"beta={beta} < 1 mixes in a hard-label term, which needs target; "
                "pass target=... or use beta=1.0 for pure distillation"
            )
    else:
        y, valid = _fused_target(target, token_shape, h, vocab, ignore_index)
        if valid is not None:
            y = torch.where(valid, y, 0)
    loss: ChunkLoss
    if isinstance(teacher_hidden, TopKTeacher):
        from lsdiffusion._kernels.topk import flatten_cached

        if teacher_weight is not None or teacher_bias is not None:
            raise ValueError(
                "a TopKTeacher needs no teacher head: pass teacher_weight=None "
                "(and no teacher_bias)"
            )
        if backend == "triton":
            raise ValueError(
                "a cached TopKTeacher has no Triton kernel (it runs as device-agnostic "
                "PyTorch ops on every device): use backend='auto' or 'eager'"
            )
        indices, values, bucket = flatten_cached(
            teacher_hidden,
            (*token_shape, vocab),
            -1 % (len(token_shape) + 1),
            h.device,
            compute_dtype(h),
            described=f"the student's token dims {tuple(token_shape)} with k classes last",
            other="student_hidden",
        )
        loss = TopKChunks(
            indices=indices, values=values, bucket=bucket, target=y, temperature=float(temperature),
            t2=t2_scaling, beta=float(beta), alpha=float(alpha), backend="eager", fallback=False,
        )  # fmt: skip
    else:
        if teacher_weight is None:
            raise ValueError(
                "teacher_weight must be the teacher's (V, H_t) head weight; None is only "
                "for a cached TopKTeacher passed as teacher_hidden"
            )
        _check_head("teacher_weight", teacher_weight, teacher_bias, h_t, "teacher_bias")
        if teacher_weight.shape[0] != vocab:
            raise ValueError(
                "student_weight and teacher_weight must have the same vocabulary V, got "
                f"{vocab} and {teacher_weight.shape[0]}"
            )
        b_t = None if teacher_bias is None else teacher_bias.detach()
        teacher = Head(h_t.detach().reshape(-1, h_t.shape[-1]), teacher_weight.detach(), b_t)
        impl, fallback = _fused_backend(backend, h)
        loss = KDChunks(
            teacher=teacher, target=y, temperature=float(temperature), t2=t2_scaling,
            beta=float(beta), alpha=float(alpha), backend=impl, fallback=fallback,
        )  # fmt: skip
    out = fused_linear_rows(
        Head(h, student_weight, student_bias),
        loss,
        valid,
        reduction=reduction,
        chunk_size=chunk_size,
    )
    return out.reshape(token_shape) if reduction == "none" else out


def fused_linear_label_smoothing_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    alpha: float = 0.1,
    *,
    bias: Tensor | None = None,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: LSReduction = "mean",
    chunk_size: int | None = None,
    backend: Backend = "auto",
) -> Tensor:
    r"""Label smoothing through the output head, without ever holding the logits.

    Exactly [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss] of the
    logits $z = h W^\top + b$ against class indices, in value and in the
    gradients of ``hidden``, ``weight`` and ``bias``:

    $$
    \ell = -\sum_k w_k\, y^{LS}_k \log \mathrm{softmax}(z)_k, \qquad
    y^{LS} = (1-\alpha)\,\mathrm{onehot}(y) + \alpha / V,
    $$

    ``"mean"`` dividing by the number of kept tokens (by $\sum_i w_{y_i}$ with
    class weights, as ``F.cross_entropy``). This is the LS teacher's own loss at
    a large vocabulary (the paper's NMT teachers are Transformers trained with
    $\alpha = 0.1$); it plays the part of
    ``torch.nn.functional.linear_cross_entropy(..., label_smoothing=alpha)``.

    Chunking, memory, devices and backends are those of
    [`fused_linear_kd_loss`][lsdiffusion.fused_linear_kd_loss]: the chunk
    temporaries take at most 64 MiB or 0.2 of one $N \times V$ logits tensor,
    the same loop runs on every device (Triton chunk kernels on CUDA with
    ``backend="auto"``; ``backend="triton"`` under ``TRITON_INTERPRET=1`` on the
    CPU), ignored tokens are dropped before the matmuls, and
    ``create_graph=True``, ``torch.func``, forward mode and ``torch.compile``
    run the unfused formula.

    Args:
        hidden: ``(N, H)`` or ``(B, L, H)`` inputs of the head.
        weight: the head weight ``(V, H)``.
        target: class indices ``(N,)`` or ``(B, L)``.
        alpha: smoothing in ``[0, 1]``.
        bias: optional ``(V,)``.
        class_weight: optional per-class weights ``(V,)`` (``weight`` of
            [`label_smoothing_loss`][lsdiffusion.label_smoothing_loss]).
        ignore_index: target value marking tokens to skip.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (one value per token).
        chunk_size: tokens per chunk; ``None`` picks the budget above.
        backend: ``"auto"``, ``"eager"`` or ``"triton"``.

    Returns:
        The loss, float32 (float64 for float64 inputs).

    Examples:
        >>> import torch
        >>> from lsdiffusion import fused_linear_label_smoothing_loss, label_smoothing_loss
        >>> g = torch.Generator().manual_seed(0)
        >>> h, w = torch.randn(6, 4, generator=g), torch.randn(10, 4, generator=g)
        >>> y = torch.tensor([1, 2, 3, -100, 5, 9])
        >>> loss = fused_linear_label_smoothing_loss(h, w, y, 0.1, chunk_size=4)
        >>> bool(torch.isclose(loss, label_smoothing_loss(h @ w.T, y, 0.1)))
        True
    """
    from lsdiffusion._kernels.chunked.fused_linear import Head, fused_linear_rows
    from lsdiffusion._kernels.chunked.losses import LSChunks

    check_fused_linear_ls_options(alpha, reduction, ignore_index, chunk_size, backend)
    hs = _check_hidden("hidden", hidden)
    _check_head("weight", weight, bias, hs, "bias")
    vocab = weight.shape[0]
    token_shape = hs.shape[:-1]
    h = hs.reshape(-1, hs.shape[-1])
    y, valid = _fused_target(target, token_shape, h, vocab, ignore_index)
    if valid is not None:
        y = torch.where(valid, y, 0)
    w = _check_weight(class_weight, vocab, h, name="class_weight")
    denominator: Tensor | None = None
    if w is not None:
        w_y = w[y]
        denominator = (w_y if valid is None else torch.where(valid, w_y, 0.0)).sum()
    impl, fallback = _fused_backend(backend, h)
    loss = LSChunks(target=y, alpha=float(alpha), weight=w, backend=impl, fallback=fallback)
    out = fused_linear_rows(
        Head(h, weight, bias),
        loss,
        valid,
        reduction=reduction,
        chunk_size=chunk_size,
        denominator=denominator,
    )
    return out.reshape(token_shape) if reduction == "none" else out
