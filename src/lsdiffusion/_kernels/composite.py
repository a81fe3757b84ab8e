r"""The losses as ordinary differentiable PyTorch expressions.

These are the reference semantics of the fast kernels, written so that
autograd, forward-mode AD, ``torch.func`` transforms, ``torch.compile`` and
``torch.jit.trace`` can all see through them. They hold no data-dependent
Python control flow and never synchronise with an accelerator. They allocate
a few logits-sized temporaries, which is why they are not the first-order
CPU path.

Conventions shared with the fast kernels:

* a class whose logit is exactly ``-inf`` is outside the support: it takes
  no smoothing mass and its $0 \cdot \log 0$ KD terms count as 0;
* a row with no finite logit has no distribution: its loss is NaN;
* NaN propagates.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["kd_rows", "ls_rows"]

_NEG_INF = float("-inf")


def ls_rows(x: Tensor, target: Tensor, probs: bool, alpha: float, weight: Tensor | None) -> Tensor:
    """Per-row label-smoothing cross-entropy of ``(rows, C)`` logits (unreduced)."""
    k = x.shape[1]
    lp = torch.log_softmax(x, 1)
    w = torch.ones(k, dtype=x.dtype, device=x.device) if weight is None else weight.to(x.dtype)
    smooth = torch.where(x == _NEG_INF, 0.0, w * alpha / k)  # (alpha / k) would trace as float32
    if probs:
        hard = target.to(x.dtype) * ((1.0 - alpha) * w)
        c = smooth + hard
        rows = -torch.where(c == 0, 0.0, c * lp).sum(1)
    else:
        # gather, not one_hot or a comparison: one_hot reads values (vmap(grad(...))
        # forbids that), and a comparison silently matches no class for an index out of
        # range, where gather fails, under torch.func and tracing too
        col = target[:, None]
        c_y = (1.0 - alpha) * w.gather(0, target)
        lp_y = lp.gather(1, col)[:, 0]
        rows = -torch.where(smooth == 0, 0.0, smooth * lp).sum(1)
        rows = rows - torch.where(c_y == 0, 0.0, c_y * lp_y)
    # a row with no finite logit has no distribution: NaN, beside its NaN gradient,
    # even when its target carries no mass (alpha = 1, a zero class weight)
    return torch.where(x.amax(1) == _NEG_INF, float("nan"), rows)


def kd_rows(
    s: Tensor,
    t: Tensor,
    *,
    temperature: float,
    t2: bool,
    beta: float,
    target: Tensor | None,
    terms: bool,
    alpha: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row ``(total, hard, soft)`` KD terms of ``(rows, C)`` student/teacher logits.

    The hard term is the cross-entropy with the labels at T = 1, label-smoothed
    by ``alpha`` (`ls_rows`); it is computed when ``terms`` asks for it or
    ``beta < 1`` mixes it in, else it is 0.
    """
    lp_s = torch.log_softmax(s / temperature, 1)
    lp_t = torch.log_softmax(t.to(s.dtype) / temperature, 1)
    pointwise = torch.where(t == _NEG_INF, 0.0, lp_t.exp() * (lp_t - lp_s))
    kl = pointwise.sum(1)
    # a teacher row with no finite logit has no distribution to distil
    kl = torch.where(t.amax(1) == _NEG_INF, float("nan"), kl)
    soft = kl * (temperature**2 if t2 else 1.0)
    if target is None or not (terms or beta < 1.0):
        hard = torch.zeros_like(soft)
        if target is not None:
            # the target only masks rows here; index with it anyway, so that an
            # out-of-range class index fails (torch.func, tracing, compile) as in eager
            soft = soft + s.isfinite().gather(1, target[:, None])[:, 0].to(soft.dtype) * 0.0
    else:
        hard = ls_rows(s, target, False, alpha, None)
    total = soft if beta == 1.0 else (1.0 - beta) * hard + beta * soft
    return total, hard, soft
