"""The tests' one float64 re-derivation of the KD contract, shared by the test files.

Written from the formula, not from the library, so that it checks the loss
engine rather than agreeing with it::

    soft_i = T^2 * sum_c p_t[i, c] * (log p_t[i, c] - log p_s[i, c])   (T^2 only with t2)
    hard_i = -log softmax(s_i)[y_i]
    row_i  = (1 - beta) * hard_i + beta * soft_i,   0 where y_i == ignore_index
    batchmean = sum_i row_i / max(1, number of rows not ignored)

with ``p = softmax(logits / T)`` and the convention ``0 * log 0 = 0``: a class
whose teacher logit is ``-inf`` contributes nothing, so a masked vocabulary
gives a finite reference. Everything is computed in float64 (the result stays
differentiable, so it also serves gradient, Hessian and ``torch.func`` checks).

References left in the test files on purpose are PyTorch's own one-liners
(``F.kl_div``, ``F.cross_entropy(label_smoothing=...)``): they are what the
losses are compared against where the point is to match PyTorch (or its float32
accuracy), not the contract.
"""

from __future__ import annotations

import torch


def kd_reference(
    s: torch.Tensor,
    t: torch.Tensor,
    temperature: float,
    target: torch.Tensor | None = None,
    beta: float = 1.0,
    ignore_index: int = -100,
    t2: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The KD loss of (rows, C) student logits ``s`` and teacher logits ``t``, in float64.

    Returns:
        ``(batchmean, rows)``: the ``"batchmean"`` value and the (rows,) per-row
        losses (the ``"none"`` reduction; their sum is the ``"sum"`` one).
    """
    s64, t64 = s.double(), t.double()
    lp_s = torch.log_softmax(s64 / temperature, 1)
    lp_t = torch.log_softmax(t64 / temperature, 1)
    p_t = lp_t.exp()
    kl = torch.where(p_t > 0, p_t * (lp_t - lp_s), 0.0).sum(1)
    soft = kl * (temperature**2 if t2 else 1.0)
    if target is None:
        valid = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
        hard = torch.zeros_like(soft)
    else:
        valid = target != ignore_index
        y = torch.where(valid, target, 0)
        hard = -torch.log_softmax(s64, 1).gather(1, y[:, None]).squeeze(1)
    rows = torch.where(valid, (1 - beta) * hard + beta * soft, 0.0)
    n = valid.sum().clamp_min(1)
    return rows.sum() / n, rows
