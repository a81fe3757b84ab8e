r"""Knowledge distillation (Hinton, with the T² factor), eager implementation.

The KL needs the teacher's and the student's softmax at once, so this kernel
walks the rows in blocks: one block-sized temporary (two for half inputs)
besides the gradient buffer, at most `MAX_BLOCKS` blocks per
call. With the scaled, max-shifted logits $b = (t - \max t)/T$ and
$a = (s - \max s)/T$,

$$
\mathrm{KL} = \frac{\sum_k e^{b_k}(b_k - a_k)}{\sum_k e^{b_k}}
              - \log\sum_k e^{b_k} + \log\sum_k e^{a_k},
\qquad
\frac{\partial\, T^2\mathrm{KL}}{\partial s} = T\,(p^T_s - p^T_t).
$$

The two log-sums are taken together, as ``log1p(D / S_t)`` with
``D = sum_k (e^a_k - e^b_k)`` summed from the elementwise differences: at high T
the KL is a small difference of O(|a - b|) terms, and two separate logs would
lose the digits (``kd_loss`` documents the conditioning). Rows with a
non-finite term (``-inf`` logits of a masked vocabulary, NaN) are recomputed,
value and gradient, by the composite formula (``_masked_rows``).

The hard term (cross-entropy with the labels at T = 1) is computed only when
it is asked for: ``beta < 1``, or [`kd_loss_terms`][lsdiffusion.kd_loss_terms].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lsdiffusion._kernels import composite
from lsdiffusion._kernels.base import compute_dtype, host_any, where_valid, zero_rows
from lsdiffusion._kernels.eager.blocks import row_blocks, scratch, split

if TYPE_CHECKING:
    from lsdiffusion._kernels.kd import KDKernel

__all__ = ["run"]


@dataclass
class _Block:
    """One row block: views of the inputs and of the per-row outputs a block writes.

    The ``coef_*`` are the per-row gradient coefficients: with
    ``factor`` = T² or 1, d soft / d s = factor / T (p_s^T - p_t^T) and
    d hard / d s = p_s - onehot(y) at T = 1.
    """

    s: Tensor  # student logits, input dtype
    t: Tensor  # teacher logits
    max_s: Tensor  # (rows, 1) max of s, compute dtype
    shift_s: Tensor  # -max s / T
    shift_t: Tensor  # -max t / T
    grad: Tensor | None  # the gradient block, written
    sum_t: Tensor  # out: sum_k exp(b)
    sum_s: Tensor  # out: sum_k exp(a)
    dot: Tensor  # out: sum_k exp(b) (b - a)
    diff: Tensor  # out: sum_k (exp(a) - exp(b)), summed from the differences
    lse1: Tensor | None  # out: log sum_k exp(s_k - max s), the hard term's normaliser
    coef_p_t: Tensor  # coefficient of p_t^T (negative)
    coef_p_s: Tensor  # coefficient of p_s^T (the hard term's p_s folded in at T = 1)
    coef_hard: Tensor  # (1 - beta) * scale
    target: Tensor | None


def _block(blk: _Block, spare: list[Tensor], k: KDKernel, *, same_dtype: bool, hard: bool) -> None:
    """The sums of one block and, if asked, its gradient, in the block's scratch."""
    t_inv = 1.0 / k.temperature
    unit_t = k.temperature == 1.0
    r = blk.s.shape[0]
    buf_b = spare[0][:r]
    buf_a = spare[1][:r]
    g = blk.grad
    e_t = g if g is not None and same_dtype else spare[2][:r]
    b = torch.add(blk.shift_t, blk.t, alpha=t_inv, out=buf_b)
    torch.exp(b, out=e_t)
    torch.sum(e_t, 1, out=blk.sum_t)
    a = torch.add(blk.shift_s, blk.s, alpha=t_inv, out=buf_a)
    # sum_k e^b (b - a), in place in the teacher's block (no product temporary);
    # both are max-shifted, so the difference keeps its digits at any offset
    torch.sum(b.sub_(a).mul_(e_t), 1, out=blk.dot)
    e_s = a.exp_()
    torch.sum(e_s, 1, out=blk.sum_s)
    torch.sum(torch.sub(e_s, e_t, out=buf_b), 1, out=blk.diff)
    lse1 = blk.lse1 if hard else None
    if lse1 is not None and unit_t:
        torch.log(blk.sum_s, out=lse1)
    if g is not None:
        e_t.mul_(blk.coef_p_t.div(blk.sum_t).unsqueeze(1))
        e_t.addcmul_(e_s, blk.coef_p_s.div(blk.sum_s).unsqueeze(1))
    if lse1 is not None and not unit_t:  # the T = 1 softmax for the hard term
        e_1 = torch.sub(blk.s, blk.max_s, out=buf_b).exp_()
        s_1 = e_1.sum(1)
        torch.log(s_1, out=lse1)
        if g is not None and k.beta < 1.0:
            e_t.addcmul_(e_1, blk.coef_hard.div(s_1).unsqueeze(1))
    if g is None:
        return
    y = blk.target
    if y is not None and k.beta < 1.0:
        # d hard / d s = p_s - (1 - alpha) onehot(y) - alpha / K
        e_t.scatter_add_(1, y.unsqueeze(1), blk.coef_hard.mul(k.alpha - 1.0).unsqueeze(1))
        if k.alpha:
            e_t.sub_(blk.coef_hard.mul(k.alpha / e_t.shape[1]).unsqueeze(1))
    if e_t is not g:
        g.copy_(e_t)


def _blocks(
    k: KDKernel, x: Tensor, grad: Tensor | None, hard: bool
) -> tuple[
    list[_Block], list[tuple[int, int]], int, tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor]
]:
    """The row blocks of ``x`` and the full-length outputs they write into."""
    n = x.shape[0]
    cdtype = compute_dtype(x)
    t_inv = 1.0 / k.temperature
    factor = k.temperature**2 if k.t2 else 1.0
    sum_t = x.new_empty(n, dtype=cdtype)
    sum_s = x.new_empty(n, dtype=cdtype)
    dot = x.new_empty(n, dtype=cdtype)
    diff = x.new_empty(n, dtype=cdtype)
    lse1 = x.new_empty(n, dtype=cdtype) if hard else None
    coef_soft = k.beta * factor * t_inv * k.scale
    coef_hard = (1.0 - k.beta) * k.scale
    unit_mix = k.temperature == 1.0 and k.beta < 1.0
    coef_p_s = coef_soft + coef_hard if unit_mix else coef_soft
    coef_p_t = -coef_soft
    # temporaries: the scaled teacher logits, the scaled student logits (kept apart so
    # that b - a is formed from two shifted, small values), and exp(teacher) unless
    # the gradient block can hold it
    n_scratch = 2 + (0 if grad is not None and x.dtype == cdtype else 1)
    ranges = [(0, n)] if k.one_block else row_blocks(x, n_scratch)
    max_s = x.amax(1, keepdim=True).to(cdtype)
    max_t = k.teacher.amax(1, keepdim=True).to(cdtype)
    full: dict[str, Any] = {
        "s": x,
        "t": k.teacher,
        "max_s": max_s,
        "shift_s": max_s * -t_inv,
        "shift_t": max_t * -t_inv,
        "grad": grad,
        "sum_t": sum_t,
        "sum_s": sum_s,
        "dot": dot,
        "diff": diff,
        "lse1": lse1,
        "coef_p_t": coef_p_t,
        "coef_p_s": coef_p_s,
        "coef_hard": coef_hard,
        "target": k.target if hard else None,
    }
    if len(ranges) == 1:  # one block: no split ops
        blocks = [_Block(**full)]
    else:
        sizes = [hi - lo for lo, hi in ranges]
        parts: dict[str, Any] = {
            name: (None,) * len(sizes) if t is None else split(t, sizes) for name, t in full.items()
        }
        blocks = [_Block(**{name: p[i] for name, p in parts.items()}) for i in range(len(sizes))]
    return blocks, ranges, n_scratch, (sum_t, dot, diff, lse1, max_s)


def run(k: KDKernel, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
    """Row ``(total[, hard, soft])`` (scaled) and, if asked, the gradient."""
    cdtype = compute_dtype(x)
    hard_wanted = k.hard_wanted
    factor = k.temperature**2 if k.t2 else 1.0
    grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
    blocks, ranges, n_scratch, (sum_t, dot, diff, lse1, max_s) = _blocks(k, x, grad, hard_wanted)
    spare = scratch(x, ranges, n_scratch)
    for blk in blocks:
        _block(blk, spare, k, same_dtype=x.dtype == cdtype, hard=hard_wanted)

    # KL = sum p_t (b - a) + log(S_s / S_t), the log written as log1p((S_s - S_t) / S_t)
    # with S_s - S_t summed from the elementwise differences: at high T the two terms
    # nearly cancel, and this keeps the digits two separate logs would lose
    kl = (dot / sum_t).add_(torch.log1p(diff / sum_t))
    soft = kl.mul_(factor) if factor != 1.0 else kl
    if k.target is None or lse1 is None:
        hard = soft if not k.terms else torch.zeros_like(soft)  # unused if alone
    else:
        # -log p_y = log s - (s_y - max s), on shifted logits (exact with large offsets)
        hard = lse1 - (x.gather(1, k.target[:, None]).to(cdtype) - max_s).squeeze(1)
        if k.alpha:  # label-smoothed: (1 - a) CE + a * mean_k (lse - s_k)
            mean_s = x.sum(1, dtype=cdtype) / x.shape[1] - max_s.squeeze(1)
            hard = (1.0 - k.alpha) * hard + k.alpha * (lse1 - mean_s)
    total = soft if k.beta == 1.0 else (1.0 - k.beta) * hard + k.beta * soft
    outs = (total, hard, soft) if k.terms else (total,)
    nonfinite = ~torch.isfinite(total if hard is soft else total + hard)
    valid = k.valid
    if host_any(nonfinite):
        bad = nonfinite if valid is None else nonfinite & valid
        if host_any(bad):  # -inf logits (a masked vocabulary), NaN: the exact slow path
            _masked_rows(k, x, bad.nonzero().squeeze(1), outs, grad)
        if valid is not None:
            zero_rows(grad, nonfinite & ~valid)
    return tuple(where_valid(valid, o * k.scale) for o in outs), grad


def _masked_rows(
    k: KDKernel, x: Tensor, idx: Tensor, outs: tuple[Tensor, ...], grad: Tensor | None
) -> None:
    """Rows ``idx`` (non-finite terms) by the composite formula and its autograd gradient.

    The fast formulas above sum over every class; with ``-inf`` logits the
    composite one lets masked classes take no smoothing mass and counts their
    0 log 0 KD terms as 0 (a row without a finite teacher logit is NaN), in the
    value and in the gradient. ``outs`` (unscaled) and
    ``grad`` (scaled) are written in place.
    """
    cdtype = compute_dtype(x)
    target = None if k.target is None else k.target[idx]
    with torch.enable_grad():
        s = x[idx].detach().to(cdtype).requires_grad_(grad is not None)
        rows = composite.kd_rows(
            s,
            k.teacher[idx].to(cdtype),
            temperature=k.temperature,
            t2=k.t2,
            beta=k.beta,
            target=target,
            terms=k.terms,
            alpha=k.alpha,
        )
        if grad is not None:
            (g,) = torch.autograd.grad(rows[0], s, k.scale[idx].to(cdtype))
            grad[idx] = g.to(grad.dtype)
    for out, row in zip(outs, rows, strict=False):
        out[idx] = row.detach()
