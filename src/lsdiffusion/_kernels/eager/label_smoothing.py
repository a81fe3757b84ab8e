r"""Label-smoothing cross-entropy, eager implementation.

Whole-tensor formulation: a call opens a handful of large parallel regions
(a busy core then costs what it costs PyTorch's own ops, not one stall per
small block) and allocates one logits-sized buffer, the gradient.

Fast path (index targets, float32/float64): with $c_k = (1-\alpha) w_y
[k = y] + (\alpha/K) w_k$, $\mathrm{total} = \sum_k c_k$,

$$
\ell = (1-\alpha) w_y\,(\mathrm{lse} - z_y)
     + \tfrac{\alpha}{K}\big(\textstyle\sum_k w_k\,\mathrm{lse} - \sum_k w_k z_k\big),
\qquad \mathrm{lse} = z_y - \log p_y,
$$

so one softmax written straight into the gradient buffer, one row sum and
one affine pass give the loss and $\partial\ell/\partial z = \mathrm{total}\,p - c$.
Rows where this is not exact to working precision (a large common logit
offset, $p_y$ below the smallest normal number, a non-finite value)
send the call to the exact path: a log-softmax into the same buffer, the
smoothing sum taken over the shifted log-probabilities.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lsdiffusion._kernels import composite
from lsdiffusion._kernels.base import compute_dtype, finfo_tiny, host_any, where_valid, zero_rows
from lsdiffusion._kernels.eager.blocks import SCRATCH_BLOCKS, SMALL_ELEMS

if TYPE_CHECKING:
    from lsdiffusion._kernels.label_smoothing import LabelSmoothingKernel

__all__ = ["run"]

# |lse| above this (a large common offset of the logits) sends float32 rows to
# the exact path: the row sum of the raw logits would lose digits.
_OFFSET_LIMIT = {torch.float32: 128.0, torch.float64: float(2**40)}
# Up to this many elements the gradient's scale-and-shift runs as two in-place
# ops: PyTorch's broadcasting addcmul costs about 4x more there (1 MB: 165 vs 43 us).
_SMALL_AFFINE = 1 << 20


def run(
    ls: LabelSmoothingKernel, x: Tensor, need_grad: bool
) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Row losses (scaled) and, if asked, the gradient in ``x``'s dtype."""
    cdtype = compute_dtype(x)
    if x.dtype == cdtype:
        rows, grad = _run(ls, x, slice(None), need_grad)
        return (rows,), grad
    # half precision: float32 copies of at most 1/8 of the rows at a time
    n, k = x.shape
    if n == 0:  # an empty batch: no blocks to cut, the float32 path gives its zeros
        rows, g = _run(ls, x.to(cdtype), slice(None), need_grad)
        return (rows,), None if g is None else g.to(x.dtype)
    step = n if n * k <= SMALL_ELEMS else max(1, -(-n // SCRATCH_BLOCKS))
    grad = torch.empty_like(x) if need_grad else None
    parts = []
    for lo in range(0, n, step):
        sl = slice(lo, min(n, lo + step))
        part, g = _run(ls, x[sl].to(cdtype), sl, need_grad)
        parts.append(part)
        if grad is not None and g is not None:
            grad[sl].copy_(g)
    rows = torch.cat(parts) if len(parts) != 1 else parts[0]
    return (rows,), grad


def _run(
    ls: LabelSmoothingKernel, x: Tensor, sl: slice, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Rows ``sl`` of the problem on their compute-dtype logits ``x``."""
    w = ls.weight
    whole = sl == slice(None)
    scale = ls.scale if whole else ls.scale[sl]
    valid = ls.valid if whole or ls.valid is None else ls.valid[sl]
    buf = torch.empty_like(x, memory_format=torch.contiguous_format)
    x = x.contiguous()
    if ls.probs:
        rows = _exact_probs(ls, x, ls.target[sl], buf, scale, need_grad)
    else:
        y = ls.target[sl]
        wy = None if w is None else w[y]
        fast = _fast_index(ls, x, y, wy, buf, scale, need_grad)
        if fast is not None:  # every row finite and exact
            return fast * scale, buf if need_grad else None
        rows = _exact_index(ls, x, y, wy, buf, scale, need_grad)
    grad = buf if need_grad else None
    nonfinite = ~torch.isfinite(rows)
    if host_any(nonfinite):
        bad = nonfinite if valid is None else nonfinite & valid
        if host_any(bad):  # -inf logits (a masked vocabulary): the exact slow path
            idx = bad.nonzero().squeeze(1)
            fixed, fixed_grad = _masked_rows(ls, x[idx], idx, sl, scale[idx])
            rows[idx] = fixed
            if grad is not None:
                grad[idx] = fixed_grad
        if valid is not None:
            zero_rows(grad, nonfinite & ~valid)
    return where_valid(valid, rows * scale), grad


def _totals(
    ls: LabelSmoothingKernel, y: Tensor, wy: Tensor | None, k: int
) -> tuple[Tensor | float, float]:
    """Per-row true-class weight ``(1-a) w_y`` and the smoothing mass ``sum_k w_k``."""
    a = ls.alpha
    hard: Tensor | float = (1.0 - a) if wy is None else (1.0 - a) * wy
    wsum = float(k) if ls.weight is None else float(ls.weight.sum())
    return hard, wsum


def _affine_grad(
    ls: LabelSmoothingKernel,
    buf: Tensor,
    y: Tensor,
    hard: Tensor | float,
    total: Tensor | float,
    scale: Tensor,
) -> None:
    """``buf`` holds softmax(z): turn it into ``scale * (total * p - c)`` in place."""
    k = buf.shape[1]
    a, w = ls.alpha, ls.weight
    coef = (scale * total)[:, None]
    smooth = (scale * (-a / k))[:, None]
    if w is None:
        if buf.numel() <= _SMALL_AFFINE:  # broadcast addcmul is slow on small inputs
            buf.mul_(coef).add_(smooth)
        else:  # one pass over a large buffer
            torch.addcmul(smooth, buf, coef, out=buf)
    else:
        buf.mul_(coef)
        buf.addcmul_(smooth, w[None, :])
    neg_hard = -hard if isinstance(hard, float) else hard.neg()
    buf.scatter_add_(1, y[:, None], (scale * neg_hard)[:, None])


def _fast_index(
    ls: LabelSmoothingKernel,
    x: Tensor,
    y: Tensor,
    wy: Tensor | None,
    buf: Tensor,
    scale: Tensor,
    need_grad: bool,
) -> Tensor | None:
    """The softmax formulation; ``None`` where it would not be exact (then ``buf`` is junk)."""
    n, k = x.shape
    a, w = ls.alpha, ls.weight
    if n == 0:
        return x.new_zeros(0)
    lin = x.sum(1) if w is None else torch.mv(x, w)
    torch._softmax(x, 1, False, out=buf)
    col = y[:, None]
    xy = x.gather(1, col).squeeze(1)
    lpy = buf.gather(1, col).squeeze(1).log_()
    lse = xy - lpy
    hard, wsum = _totals(ls, y, wy, k)
    # rows = hard * (lse - xy) + a/K * (wsum * lse - lin)
    if wsum != 0.0:
        rows = torch.sub(lse, lin, alpha=1.0 / wsum).mul_(a * wsum / k).sub_(lpy * hard)
    else:  # class weights summing to zero: the same formula, unfactored
        rows = (lse * wsum - lin).mul_(a / k).sub_(lpy * hard)
    # Host reads decide: |lse| within the offset limit and p_y a normal number
    # (log p_y >= log tiny; NaN fails both), and the rows finite.
    limit = _OFFSET_LIMIT[x.dtype]
    tiny_factor = limit / -math.log(finfo_tiny(x.dtype))
    worst = float(torch.maximum(lse.abs_(), lpy.mul_(-tiny_factor)).amax())
    if not worst <= limit or not math.isfinite(float(rows.sum())):
        return None
    if need_grad:
        _affine_grad(ls, buf, y, hard, hard + (a / k) * wsum, scale)
    return rows


def _exact_index(
    ls: LabelSmoothingKernel,
    x: Tensor,
    y: Tensor,
    wy: Tensor | None,
    buf: Tensor,
    scale: Tensor,
    need_grad: bool,
) -> Tensor:
    """Log-softmax formulation: exact with large offsets and tiny probabilities."""
    k = x.shape[1]
    a, w = ls.alpha, ls.weight
    torch._log_softmax(x, 1, False, out=buf)
    lin = buf.sum(1) if w is None else torch.mv(buf, w)
    lpy = buf.gather(1, y[:, None]).squeeze(1)
    hard, wsum = _totals(ls, y, wy, k)
    rows = -hard * lpy - (a / k) * lin
    if need_grad:
        buf.exp_()
        _affine_grad(ls, buf, y, hard, hard + (a / k) * wsum, scale)
    return rows


def _exact_probs(
    ls: LabelSmoothingKernel, x: Tensor, t: Tensor, buf: Tensor, scale: Tensor, need_grad: bool
) -> Tensor:
    """Probability targets: ``c = ((1-a) t + a/K) w``, loss ``-sum_k c_k log p_k``."""
    k = x.shape[1]
    a, w = ls.alpha, ls.weight
    t = t.to(x.dtype)
    tw = t if w is None else t * w
    torch._log_softmax(x, 1, False, out=buf)
    lin = buf.sum(1) if w is None else torch.mv(buf, w)
    rows: Tensor = -(1.0 - a) * torch.linalg.vecdot(tw, buf) - (a / k) * lin
    if need_grad:
        wsum = float(k) if w is None else float(w.sum())
        total = (1.0 - a) * tw.sum(1) + (a / k) * wsum
        buf.exp_()
        buf.mul_((total * scale)[:, None])
        buf.addcmul_(tw, (scale * -(1.0 - a))[:, None])
        smooth = (scale * (-a / k))[:, None]
        if w is None:
            buf.add_(smooth)
        else:
            buf.addcmul_(smooth, w[None, :])
    return rows


def _masked_rows(
    ls: LabelSmoothingKernel, z: Tensor, idx: Tensor, sl: slice, scale: Tensor
) -> tuple[Tensor, Tensor]:
    """Rows holding ``-inf`` logits, by the composite formula and its analytic gradient."""
    target = ls.target[sl][idx]
    with torch.enable_grad():
        zz = z.detach().requires_grad_()
        rows = composite.ls_rows(zz, target, ls.probs, ls.alpha, ls.weight)
        (grad,) = torch.autograd.grad(rows, zz, scale.to(rows.dtype))
    return rows.detach(), grad.detach()
