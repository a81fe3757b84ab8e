r"""Label-smoothing and knowledge-distillation losses as pure functions.

Both losses run as a chunked, fused custom autograd function: the logits are
read once, row block by row block, and when (and only when) a gradient is
needed it is written during the forward pass into one buffer of the logits'
shape. Backward then scales that buffer in place. Peak extra memory is one
logits-sized tensor (the gradient itself) plus a few cache-sized temporaries,
against three to five full tensors for the usual one-liners. The caller's
tensors are never written to.

Half-precision logits (``float16``, ``bfloat16``) are computed in ``float32``
inside; the loss comes back in ``float32`` (``float64`` logits stay
``float64``), the gradient in the logits' own dtype.

Classes whose logit is ``-inf`` (a masked vocabulary) are outside the support:
their smoothing / distillation terms contribute nothing (the convention
:math:`0 \cdot \log 0 = 0` extended to the smoothing mass), so the loss stays
finite and the gradient NaN-free as long as the target class itself is finite.
"""

from __future__ import annotations

import copy
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor

from lsdiffusion._validation import (
    check_finite_positive,
    check_in_unit_interval,
    check_reduction,
    normalize_dim,
)

__all__ = [
    "KDTerms",
    "kd_loss",
    "kd_loss_terms",
    "label_smoothing_loss",
]

LSReduction = Literal["none", "mean", "sum"]
KDReduction = Literal["none", "batchmean", "sum"]

# Elements per row block. On the CPU a block should sit in the L2/L3 cache
# (2 MiB of float32 measured best on a 2-core machine); on a GPU blocks are
# larger so that kernel-launch overhead stays negligible, while the block
# temporaries stay well under a quarter of a 250 MiB logits tensor.
_CPU_BLOCK_ELEMS = 1 << 19
_CUDA_BLOCK_ELEMS = 1 << 22
# Inputs up to this many elements run as one block: per-op overhead dominates
# there, and the temporaries are a few hundred KiB at most.
_SMALL_ELEMS = 1 << 16
# Kernels that need block-sized temporaries split the rows into at least this
# many blocks, so that the temporaries stay within 1/8 of the input.
_SCRATCH_BLOCKS = 8


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _row_blocks(x: Tensor, scratch: int) -> list[tuple[int, int]]:
    """Row ranges ``[lo, hi)`` covering ``x``.

    Blocks fit in cache; when the kernel needs ``scratch`` block-sized
    temporaries, a block is also at most 1/8 of the rows, so that the
    temporaries stay a small fraction of the input.
    """
    n, c = x.shape
    if n * c <= _SMALL_ELEMS:  # small inputs: one block, fewest kernel launches
        step = max(1, n)
    else:
        step = max(1, (_CUDA_BLOCK_ELEMS if x.is_cuda else _CPU_BLOCK_ELEMS) // max(1, c))
        if scratch:
            step = min(step, -(-n // _SCRATCH_BLOCKS))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _scratch(x: Tensor, blocks: list[tuple[int, int]], count: int) -> list[Tensor]:
    """``count`` compute-dtype buffers of the largest block's shape, reused by every block."""
    rows = max((hi - lo for lo, hi in blocks), default=0)
    return [
        torch.empty(rows, x.shape[1], dtype=_compute_dtype(x), device=x.device)
        for _ in range(count)
    ]


def _split(t: Tensor, sizes: list[int]) -> tuple[Tensor, ...]:
    """Row-block views of ``t``, made in one call."""
    return tuple(torch.split_with_sizes(t, sizes))


def _any(mask: Tensor) -> bool:
    """``mask.any()`` as a Python bool (a host sync on accelerators)."""
    return bool(mask.any())


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


def _check_index_target(
    target: Tensor, logits: Tensor, dim: int, ignore_index: int, name: str = "target"
) -> Tensor:
    """Validate class-index targets and return them flattened to ``(rows,)``."""
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
    flat = target.reshape(-1).long()
    num_classes = logits.shape[dim]
    bad = ((flat < 0) | (flat >= num_classes)) & (flat != ignore_index)
    if flat.numel() and _any(bad):
        value = int(flat[bad][0])
        raise ValueError(
            f"{name} contains class index {value}, outside [0, {num_classes - 1}] "
            f"(and not ignore_index={ignore_index})"
        )
    return flat


def _check_weight(weight: Tensor | None, num_classes: int, x: Tensor) -> Tensor | None:
    if weight is None:
        return None
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor or None, got {type(weight).__name__}")
    if weight.dim() != 1 or weight.shape[0] != num_classes:
        raise ValueError(
            f"weight must be 1-D with one entry per class ({num_classes}), "
            f"got shape {tuple(weight.shape)}"
        )
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got dtype {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but the logits are on {x.device}")
    return weight.to(dtype=_compute_dtype(x))


def _check_kd_reduction(reduction: str) -> None:
    """Validate a KD reduction; ``"mean"`` gets an error explaining ``"batchmean"``."""
    if reduction == "mean":
        raise ValueError(
            "reduction='mean' is not offered for KD: an elementwise mean divides the KL by "
            "the number of classes. Use 'batchmean' (sum over classes, mean over rows), "
            "'sum' or 'none'"
        )
    check_reduction(reduction, ("none", "batchmean", "sum"))


def _row_scale(
    valid: Tensor, reduction: str, denominator: Tensor | None, dtype: torch.dtype
) -> Tensor:
    """Per-row factor folding the reduction into the fused kernel."""
    scale = valid.to(dtype)
    if reduction in ("mean", "batchmean"):
        den = scale.sum() if denominator is None else denominator.to(dtype)
        # An all-ignored (or empty) batch gives a zero loss and a zero gradient; any
        # other denominator divides as in PyTorch (negative class weights included).
        inv = torch.where(valid.any(), 1.0 / den, 0.0)
        scale = scale * inv
    return scale


# ---------------------------------------------------------------------------
# the fused kernels: one row block in, row losses (and the scaled gradient) out
# ---------------------------------------------------------------------------


class _Kernel:
    """A loss evaluated block by block over the rows of a ``(rows, C)`` tensor.

    ``run`` returns the row losses (already multiplied by the per-row
    reduction scale, zero on ignored rows) and, if asked, the gradient of
    their sum with respect to the input, in the input's dtype. Only the
    passes over the logits run per block; everything per-row is vectorised
    over all rows before or after the block loop. Block temporaries are
    allocated once per call and reused (fresh pages are expensive).
    """

    extras: int = 0  # number of extra detached per-row outputs (KD: hard, soft)
    scale: Tensor  # per-row factor of the loss and its gradient (the reduction)

    def with_upstream(self, upstream: Tensor) -> _Kernel:
        """A copy whose gradient comes out multiplied by ``upstream`` (scalar or per row)."""
        scaled = copy.copy(self)
        scaled.scale = self.scale * upstream.to(self.scale.dtype)
        return scaled

    def run(
        self, x: Tensor, need_grad: bool
    ) -> tuple[tuple[Tensor, ...], Tensor | None]:  # pragma: no cover - interface
        raise NotImplementedError


def _zero_ignored(grad: Tensor | None, rows: Tensor) -> None:
    """Ignored rows get an exactly zero gradient, even when their logits are not finite."""
    if grad is not None and _any(rows):
        grad[rows] = 0


def _new_grad(x: Tensor, need_grad: bool) -> Tensor | None:
    return torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None


class _LabelSmoothingKernel(_Kernel):
    def __init__(
        self,
        target: Tensor,
        probs: bool,
        alpha: float,
        weight: Tensor | None,
        scale: Tensor,
        valid: Tensor,
    ) -> None:
        self.target = target  # (rows,) long, ignored rows clamped to 0 -- or (rows, C) probs
        self.probs = probs
        self.alpha = alpha
        self.weight = weight
        self.scale = scale
        self.valid = valid

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        n, k = x.shape
        cdtype = _compute_dtype(x)
        a, w, scale = self.alpha, self.weight, self.scale
        same = x.dtype == cdtype
        grad = _new_grad(x, need_grad)
        # temporaries: a compute-dtype copy of the block (half inputs), and
        # exp(z - max) unless the gradient block can hold it
        n_scratch = (0 if same else 1) + (0 if need_grad and same else 1)
        blocks = _row_blocks(x, n_scratch)
        spare = _scratch(x, blocks, n_scratch)

        # loss_i = total_i * lse_i - sum_k c_ik z_ik with c = (1-a) w_y onehot(y) + a/K w,
        # computed on max-shifted logits (exact with large offsets):
        # loss_i = total_i * log s_i - sum_k c_ik (z_ik - m_i), s_i = sum_k exp(z_ik - m_i)
        maxes = x.new_empty(n, dtype=cdtype)
        log_s = x.new_empty(n, dtype=cdtype)
        linear = x.new_empty(n, dtype=cdtype)  # index: sum_k w_k (z_k - m); probs: c . (z - m)
        if self.probs:
            total = x.new_empty(n, dtype=cdtype)
        else:
            y = self.target
            wy = torch.ones(n, dtype=cdtype, device=x.device) if w is None else w[y]
            total = (1.0 - a) * wy + (a / k) * (float(k) if w is None else w.sum())
            if need_grad:
                coef = total * scale
                at_target = (-(1.0 - a) * wy * scale)[:, None]
                smooth = scale[:, None] * (-a / k)

        for lo, hi in blocks:
            r = hi - lo
            buffers = iter(b[:r] for b in spare)
            z = x[lo:hi] if same else next(buffers).copy_(x[lo:hi])
            g = None if grad is None else grad[lo:hi]
            e = g if g is not None and same else next(buffers)
            m = torch.amax(z, 1, keepdim=True, out=maxes[lo:hi, None])
            torch.sub(z, m, out=e)
            if self.probs:
                c = self.target[lo:hi].to(cdtype) * (1.0 - a) + a / k
                if w is not None:
                    c = c * w
                torch.sum(c, 1, out=total[lo:hi])
                torch.linalg.vecdot(c, e, out=linear[lo:hi])
            elif w is None:
                torch.sum(e, 1, out=linear[lo:hi])
            else:
                torch.mv(e, w, out=linear[lo:hi])
            e.exp_()
            s = e.sum(1)
            torch.log(s, out=log_s[lo:hi])
            if self.probs:
                if g is not None:
                    e.mul_((total[lo:hi] * scale[lo:hi] / s)[:, None])
                    e.sub_(c * scale[lo:hi, None])
            elif g is not None:
                if w is None:  # e <- e * total * scale / s - a/K * scale, one pass
                    torch.addcmul(smooth[lo:hi], e, (coef[lo:hi] / s)[:, None], out=e)
                else:
                    e.mul_((coef[lo:hi] / s)[:, None])
                    e.addcmul_(w[None, :], smooth[lo:hi])
                e.scatter_add_(1, y[lo:hi, None], at_target[lo:hi])
            if g is not None and e is not g:
                g.copy_(e)

        if self.probs:
            rows = total * log_s - linear
        else:
            zy = x.gather(1, y[:, None]).squeeze(1).to(cdtype) - maxes
            rows = total * log_s - (a / k) * linear - (1.0 - a) * wy * zy
        nonfinite = ~torch.isfinite(rows)
        if _any(nonfinite):
            bad = nonfinite & self.valid
            if _any(bad):  # rows with -inf logits (masked vocabulary): the exact slow path
                idx = bad.nonzero().squeeze(1)
                fixed_rows, fixed_grad = self._masked_rows(x[idx].to(cdtype), idx, scale[idx])
                rows[idx] = fixed_rows
                if grad is not None:
                    grad[idx] = fixed_grad.to(grad.dtype)
            _zero_ignored(grad, nonfinite & ~self.valid)
        return (torch.where(self.valid, rows * scale, 0.0),), grad

    def _masked_rows(self, z: Tensor, rows_idx: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        """Slow path for rows holding ``-inf`` logits: drop the smoothing mass there."""
        k = z.shape[1]
        a = self.alpha
        masked = z == float("-inf")
        w = torch.ones(k, dtype=z.dtype, device=z.device) if self.weight is None else self.weight
        smooth = torch.where(masked, 0.0, (a / k) * w.expand_as(z))
        if self.probs:
            hard = self.target[rows_idx].to(z.dtype) * (1.0 - a) * w
        else:
            hard = torch.zeros_like(z)
            y = self.target[rows_idx]
            hard.scatter_(1, y[:, None], ((1.0 - a) * w[y])[:, None])
        c = smooth + hard
        total = c.sum(1)
        lse = torch.logsumexp(z, 1)
        linear = (c * torch.where(masked, 0.0, z)).sum(1)
        rows = total * lse - linear
        impossible = ((hard > 0) & masked).any(1)  # true target mass on a masked class
        rows = torch.where(impossible, float("inf"), rows)
        grad = (total[:, None] * torch.softmax(z, 1) - c) * scale[:, None]
        return rows, grad


class _KDKernel(_Kernel):
    extras = 2  # hard, soft per-row terms (detached, for logging)

    def __init__(
        self,
        teacher: Tensor,
        temperature: float,
        t2: bool,
        beta: float,
        target: Tensor | None,
        scale: Tensor,
        valid: Tensor,
    ) -> None:
        self.teacher = teacher
        self.temperature = temperature
        self.t2 = t2
        self.beta = beta
        self.target = target
        self.scale = scale
        self.valid = valid

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        n, _ = x.shape
        cdtype = _compute_dtype(x)
        t_inv = 1.0 / self.temperature
        unit_t = self.temperature == 1.0
        beta, target, scale = self.beta, self.target, self.scale
        factor = self.temperature**2 if self.t2 else 1.0
        grad = _new_grad(x, need_grad)
        same = x.dtype == cdtype
        # temporaries: one for the scaled logits (teacher, then student), and
        # exp(teacher) unless the gradient block can hold it
        blocks = _row_blocks(x, 1 + (0 if need_grad and same else 1))
        spare = _scratch(x, blocks, 1 + (0 if need_grad and same else 1))

        sums_t = x.new_empty(n, dtype=cdtype)  # sum_k exp(b)
        sums_s = x.new_empty(n, dtype=cdtype)  # sum_k exp(a)
        dots = x.new_empty(n, dtype=cdtype)  # sum_k exp(b) (b - a)
        # log sum_k exp(s_k - max s): the T = 1 normaliser of the hard term
        lse1 = None if target is None else x.new_empty(n, dtype=cdtype)
        # d soft / d s = factor / T * (p_s^T - p_t^T); d hard / d s = p_s - onehot(y)
        g_soft = beta * factor * t_inv * scale
        g_hard = (1.0 - beta) * scale
        g_soft_s = g_soft + g_hard if unit_t and beta < 1.0 else g_soft  # coefficient of p_s
        g_soft = -g_soft  # coefficient of p_t

        # Per-block views made in one call each: at medium sizes the per-op
        # dispatch cost, not the arithmetic, is what a block loop pays for.
        sizes = [hi - lo for lo, hi in blocks]
        max_s = x.amax(1, keepdim=True).to(cdtype)
        max_t = self.teacher.amax(1, keepdim=True).to(cdtype)
        views = zip(
            _split(x, sizes),
            _split(max_s, sizes),
            _split(max_s * -t_inv, sizes),
            _split(max_t * -t_inv, sizes),
            _split(self.teacher, sizes),
            (None,) * len(sizes) if grad is None else _split(grad, sizes),
            _split(sums_t, sizes),
            _split(sums_s, sizes),
            _split(dots, sizes),
            (None,) * len(sizes) if lse1 is None else _split(lse1, sizes),
            _split(g_soft, sizes),
            _split(g_soft_s, sizes),
            _split(g_hard, sizes),
            (None,) * len(sizes) if target is None else _split(target, sizes),
            strict=True,
        )
        for s_raw, ms, shift_s, shift_t, t_raw, g, st, ss, dt, l1, gs, gss, gh, y in views:
            r = s_raw.shape[0]
            buf = spare[0][:r]
            e_t = g if g is not None and same else spare[1][:r]
            # KL = sum p_t (b - a) - log sum e^b + log sum e^a, with the scaled,
            # max-shifted logits b = (t - max t) / T and a = (s - max s) / T,
            # written into scratch: the caller's tensors are never touched.
            b = torch.add(shift_t, t_raw, alpha=t_inv, out=buf)
            torch.exp(b, out=e_t)
            torch.sum(e_t, 1, out=st)
            dot = torch.linalg.vecdot(e_t, b)
            a = torch.add(shift_s, s_raw, alpha=t_inv, out=buf)
            torch.sub(dot, torch.linalg.vecdot(e_t, a), out=dt)
            e_s = a.exp_()
            torch.sum(e_s, 1, out=ss)
            if l1 is not None and unit_t:
                torch.log(ss, out=l1)
            if g is not None:
                e_t.mul_(gs.div(st).unsqueeze(1))
                e_t.addcmul_(e_s, gss.div(ss).unsqueeze(1))
            if l1 is not None and not unit_t:  # the T = 1 softmax for the hard term
                e_1 = torch.sub(s_raw, ms, out=buf).exp_()
                s_1 = e_1.sum(1)
                torch.log(s_1, out=l1)
                if g is not None and beta < 1.0:
                    e_t.addcmul_(e_1, gh.div(s_1).unsqueeze(1))
            if g is not None:
                if y is not None and beta < 1.0:
                    e_t.scatter_add_(1, y.unsqueeze(1), gh.neg().unsqueeze(1))
                if e_t is not g:
                    g.copy_(e_t)

        kl = dots / sums_t - sums_t.log() + sums_s.log()
        nonfinite = ~torch.isfinite(kl)
        if _any(nonfinite):
            bad = nonfinite & self.valid
            if _any(bad):  # rows with -inf logits: 0 * log 0 terms count as 0
                idx = bad.nonzero().squeeze(1)
                kl[idx] = self._masked_kl(x[idx].to(cdtype), self.teacher[idx].to(cdtype))
            _zero_ignored(grad, nonfinite & ~self.valid)
        soft = kl * factor
        if target is None or lse1 is None:
            hard = torch.zeros_like(soft)
        else:
            # -log p_y = log s - (s_y - max s), on shifted logits (exact with large offsets)
            hard = lse1 - (x.gather(1, target[:, None]).to(cdtype) - max_s).squeeze(1)
        total = (1.0 - beta) * hard + beta * soft
        zero = torch.zeros((), dtype=cdtype, device=x.device)
        return (
            torch.where(self.valid, total * scale, zero),
            torch.where(self.valid, hard * scale, zero),
            torch.where(self.valid, soft * scale, zero),
        ), grad

    def _masked_kl(self, s: Tensor, t: Tensor) -> Tensor:
        """Slow path for rows with ``-inf`` logits: 0 * log 0 terms count as 0."""
        lp_s = torch.log_softmax(s / self.temperature, 1)
        lp_t = torch.log_softmax(t / self.temperature, 1)
        p_t = lp_t.exp()
        # only an exactly -inf teacher logit means "no mass": NaN and +inf propagate
        terms = torch.where(t == float("-inf"), 0.0, p_t * (lp_t - lp_s))
        return terms.sum(1)


class _FusedLoss(torch.autograd.Function):
    """Autograd wrapper around a :class:`_Kernel`.

    float32 / float64 inputs: the gradient is written during the forward pass
    and backward only scales it in place. Half-precision inputs: the gradient
    is computed in backward instead, with the upstream gradient applied in
    float32 before the cast to half (as autocast does): a half gradient
    multiplied afterwards by a ``GradScaler`` scale (65536 > the float16 max)
    would overflow or flush to zero. A second backward (``retain_graph=True``)
    also recomputes.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, kernel: _Kernel, reduce: bool) -> tuple[Tensor, ...]:
        outs, grad = kernel.run(x, need_grad=x.dtype == _compute_dtype(x))
        ctx.kernel = kernel
        ctx.reduce = reduce
        ctx.grad = grad
        ctx.save_for_backward(x)
        results = tuple(o.sum() if reduce else o for o in outs)
        ctx.mark_non_differentiable(*results[1:])
        return results

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor, *unused: Tensor) -> tuple[Tensor | None, None, None]:
        grad: Tensor | None = ctx.grad
        ctx.grad = None  # hand the buffer over; autograd can then adopt it without a copy
        if grad is None:  # half input, or a second backward: recompute, upstream folded in
            (x,) = ctx.saved_tensors
            _, grad = ctx.kernel.with_upstream(grad_out).run(x, need_grad=True)
            return grad, None, None
        if ctx.reduce:
            # Skip the multiply for the common unit upstream gradient on the CPU, where
            # reading the scalar costs nothing (on accelerators it would be a host sync).
            if not (grad_out.device.type == "cpu" and float(grad_out) == 1.0):
                grad.mul_(grad_out.to(grad.dtype))
        else:
            grad.mul_(grad_out.to(grad.dtype)[:, None])
        return grad, None, None


def _apply(x2d: Tensor, kernel: _Kernel, reduce: bool) -> tuple[Tensor, ...]:
    if torch.is_grad_enabled() and x2d.requires_grad:
        out: tuple[Tensor, ...] = _FusedLoss.apply(x2d, kernel, reduce)  # type: ignore[no-untyped-call]
        return out
    outs, _ = kernel.run(x2d.detach(), need_grad=False)
    return tuple(o.sum() if reduce else o for o in outs)


def _finish(out: Tensor, reduction: str, logits: Tensor, dim: int) -> Tensor:
    return _unflatten_rows(out, logits, dim) if reduction == "none" else out


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
) -> Tensor:
    r"""Cross-entropy against label-smoothed targets.

    With :math:`K` classes, :math:`p = \mathrm{softmax}(z)` and smoothing
    :math:`\alpha`, the smoothed target puts :math:`1-\alpha` on the true class and
    spreads :math:`\alpha` uniformly over *all* :math:`K` classes (the true class
    included, as in ``F.cross_entropy(label_smoothing=α)``, timm and the paper):

    .. math::

        y^{LS} = (1-\alpha)\,\mathrm{onehot}(y) + \alpha / K, \qquad
        \ell = -\sum_k w_k\, y^{LS}_k \log p_k .

    For index targets with class weights :math:`w` this is exactly PyTorch's
    formula: ``"mean"`` divides by :math:`\sum_i w_{y_i}` over non-ignored
    elements (by their count without weights). Probability targets are
    smoothed the same way, :math:`(1-\alpha)\,y + \alpha/K`, and ``"mean"``
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

    Returns:
        A scalar, or the per-element losses for ``reduction="none"``; float32
        (float64 for float64 logits).

    Shape:
        - logits: :math:`(N, C, d_1, \ldots)` with ``dim=1``, or the class dim at ``dim``.
        - target: :math:`(N, d_1, \ldots)` indices or the logits' shape (probabilities).
        - output: scalar, or :math:`(N, d_1, \ldots)` for ``"none"``.

    Example:
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
    x, d = _flatten_logits("logits", logits, dim)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    num_classes = x.shape[1]
    w = _check_weight(weight, num_classes, x)
    cdtype = _compute_dtype(x)

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
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        denominator = None
    else:
        flat = _check_index_target(target, logits, d, ignore_index)
        valid = flat != ignore_index
        tgt = torch.where(valid, flat, 0)
        denominator = None if w is None else torch.where(valid, w[tgt], 0.0).sum()

    scale = _row_scale(valid, reduction, denominator, cdtype)
    kernel = _LabelSmoothingKernel(tgt, probs, float(alpha), w, scale, valid)
    (loss,) = _apply(x, kernel, reduce=reduction != "none")
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
    teacher_logits: Tensor,
    temperature: float,
    *,
    target: Tensor | None = None,
    beta: float = 1.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    dim: int = 1,
) -> KDTerms:
    """Like :func:`kd_loss`, but returns the loss with its hard and soft parts.

    Example:
        >>> import torch
        >>> from lsdiffusion import kd_loss_terms
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2.0, 0.0, 0.0]])
        >>> terms = kd_loss_terms(s, t, 2.0, target=torch.tensor([0]), beta=0.5)
        >>> tuple(round(v.item(), 4) for v in terms)
        (0.2495, 0.4076, 0.0914)
    """
    check_finite_positive("temperature", temperature)
    check_in_unit_interval("beta", beta)
    _check_kd_reduction(reduction)
    if not isinstance(student_logits, Tensor):
        raise TypeError(
            f"student_logits must be a torch.Tensor, got {type(student_logits).__name__}"
        )
    if not isinstance(teacher_logits, Tensor):
        raise TypeError(
            f"teacher_logits must be a torch.Tensor, got {type(teacher_logits).__name__}"
        )
    if teacher_logits.shape != student_logits.shape:
        raise ValueError(
            "student_logits and teacher_logits must have the same shape, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    if teacher_logits.device != student_logits.device:
        raise ValueError(
            f"teacher_logits is on {teacher_logits.device} but student_logits is on "
            f"{student_logits.device}"
        )
    x, d = _flatten_logits("student_logits", student_logits, dim)
    t2d, _ = _flatten_logits("teacher_logits", teacher_logits.detach(), dim)
    cdtype = _compute_dtype(x)
    if t2d.dtype == torch.float64 and cdtype != torch.float64:
        t2d = t2d.to(cdtype)  # a float64 teacher for a float32 (or half) student

    if target is None:
        if beta < 1.0:
            raise ValueError(
                f"beta={beta} < 1 mixes in a hard-label cross-entropy, which needs target; "
                "pass target=... or use beta=1.0 for pure distillation"
            )
        flat = None
        valid = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    else:
        if not isinstance(target, Tensor):
            raise TypeError(f"target must be a torch.Tensor or None, got {type(target).__name__}")
        if target.is_floating_point():
            raise TypeError(
                f"target must hold class indices (an integer tensor), got dtype {target.dtype}"
            )
        idx = _check_index_target(target, student_logits, d, ignore_index)
        valid = idx != ignore_index
        flat = torch.where(valid, idx, 0)

    scale = _row_scale(valid, reduction, None, cdtype)
    kernel = _KDKernel(t2d, float(temperature), t2_scaling, float(beta), flat, scale, valid)
    loss, hard, soft = _apply(x, kernel, reduce=reduction != "none")
    return KDTerms(
        _finish(loss, reduction, student_logits, d),
        _finish(hard, reduction, student_logits, d).detach(),
        _finish(soft, reduction, student_logits, d).detach(),
    )


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    *,
    target: Tensor | None = None,
    beta: float = 1.0,
    t2_scaling: bool = True,
    ignore_index: int = -100,
    reduction: KDReduction = "batchmean",
    dim: int = 1,
) -> Tensor:
    r"""Hinton knowledge-distillation loss with the :math:`T^2` factor.

    With :math:`p^T = \mathrm{softmax}(z / T)` applied to both networks,

    .. math::

        \mathcal{L}_{KD} = T^2 \,\mathrm{KL}\big(p^T_{teacher} \,\|\, p^T_{student}\big)
                         = T^2 \sum_k p^T_{t,k}\,\big(\log p^T_{t,k} - \log p^T_{s,k}\big),

    summed over the class dim and averaged over the non-ignored rows or tokens
    (``"batchmean"``; never an elementwise mean, which would be off by a factor
    :math:`C`). The :math:`T^2` factor keeps gradient magnitudes comparable
    across temperatures: the student's gradient is
    :math:`T\,(p^T_s - p^T_t) / n_{rows}`. The teacher gets no gradient.

    With ``target`` and ``beta < 1`` the loss is
    :math:`(1-\beta)\,\mathrm{CE}(y, p_s) + \beta\,\mathcal{L}_{KD}` (the paper
    uses :math:`\beta = 1`). ``target`` also masks rows whose label is
    ``ignore_index`` (padding tokens), in both terms, even with ``beta=1``.
    Use :func:`kd_loss_terms` to get the two parts for logging.

    Args:
        student_logits: ``(N, C, ...)`` or with the class dim at ``dim``.
        teacher_logits: same shape as ``student_logits``; never receives a gradient.
        temperature: :math:`T > 0`, finite.
        target: optional class indices (the logits' shape without the class dim).
        beta: weight of the distillation term in ``[0, 1]``.
        t2_scaling: multiply the KL term by :math:`T^2` (default ``True``).
        ignore_index: target value marking rows to skip.
        reduction: ``"batchmean"``, ``"sum"`` or ``"none"`` (one value per row/token).
        dim: the class dimension.

    Returns:
        The loss, float32 (float64 for float64 logits).

    Shape:
        - student_logits, teacher_logits: :math:`(N, C, d_1, \ldots)` (class dim at ``dim``).
        - target: :math:`(N, d_1, \ldots)`.
        - output: scalar, or :math:`(N, d_1, \ldots)` for ``"none"``.

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from lsdiffusion import kd_loss
        >>> s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[2.0, 0.0, 0.0]])
        >>> loss = kd_loss(s, t, temperature=2.0)
        >>> ref = F.kl_div(F.log_softmax(s / 2, 1), F.softmax(t / 2, 1), reduction="batchmean") * 4
        >>> round(loss.item(), 4), bool(torch.isclose(loss, ref))
        (0.0914, True)
    """
    return kd_loss_terms(
        student_logits,
        teacher_logits,
        temperature,
        target=target,
        beta=beta,
        t2_scaling=t2_scaling,
        ignore_index=ignore_index,
        reduction=reduction,
        dim=dim,
    ).loss
