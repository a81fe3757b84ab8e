r"""Knowledge distillation (Hinton, with the T² factor), eager kernel.

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

The hard term (cross-entropy with the labels at T = 1) is computed only when
it is asked for: ``beta < 1``, or [`kd_loss_terms`][lsdiffusion.kd_loss_terms].
"""

from __future__ import annotations

import torch
from torch import Tensor

from lsdiffusion._kernels import composite
from lsdiffusion._kernels.base import (
    LossKernel,
    host_any,
    replace_tensors,
    where_valid,
    zero_invalid,
    zero_rows,
)
from lsdiffusion._kernels.eager.blocks import compute_dtype, row_blocks, scratch, split

__all__ = ["KDKernel"]


class KDKernel(LossKernel):
    """KD over ``(rows, C)`` student logits against bound teacher logits."""

    def __init__(
        self,
        teacher: Tensor,
        temperature: float,
        t2: bool,
        beta: float,
        target: Tensor | None,
        need_terms: bool,
        scale: Tensor,
        valid: Tensor | None,
        alpha: float = 0.0,
        one_block: bool = False,
    ) -> None:
        self.teacher = teacher
        self.temperature = temperature
        self.t2 = t2
        self.beta = beta
        self.target = target
        # need_terms: return (total, hard, soft); otherwise (total,) alone
        self.need_terms = need_terms
        self.alpha = alpha  # label smoothing of the hard term (0: plain cross-entropy)
        self.one_block = one_block  # the caller already bounds the rows (fused linear chunks)
        self.scale = scale
        self.valid = valid

    def _names(self) -> tuple[str, ...]:
        # the class-index target too, so that a recomputing backward sees the forward's
        return ("teacher",) + (("target",) if self.target is not None else ())

    def user_tensors(self) -> tuple[Tensor, ...]:
        """The teacher logits and the class-index target, if any."""
        return tuple(getattr(self, name) for name in self._names())

    def rebind(self, tensors: tuple[Tensor, ...]) -> KDKernel:
        """A copy reading the saved teacher and target."""
        return replace_tensors(self, self._names(), tensors)

    def composite(self, x: Tensor) -> tuple[Tensor, ...]:
        """Differentiable plain-PyTorch evaluation."""
        s = zero_invalid(self.valid, x.to(compute_dtype(x)))
        teacher = zero_invalid(self.valid, self.teacher)
        total, hard, soft = composite.kd_rows(
            s,
            teacher,
            self.temperature,
            self.t2,
            self.beta,
            self.target,
            self.need_terms,
            self.alpha,
        )
        outs = (total, hard, soft) if self.need_terms else (total,)
        return tuple(where_valid(self.valid, o * self.scale) for o in outs)

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """Row ``(total, hard, soft)`` (scaled) and, if asked, the gradient."""
        n, _ = x.shape
        cdtype = compute_dtype(x)
        t_inv = 1.0 / self.temperature
        unit_t = self.temperature == 1.0
        beta, scale = self.beta, self.scale
        target = self.target if (self.need_terms or beta < 1.0) else None
        factor = self.temperature**2 if self.t2 else 1.0
        grad = torch.empty_like(x, memory_format=torch.contiguous_format) if need_grad else None
        same = x.dtype == cdtype
        # temporaries: one for the scaled logits (teacher, then student), and
        # exp(teacher) unless the gradient block can hold it
        # temporaries: the scaled teacher logits, the scaled student logits (kept apart so
        # that b - a is formed from two shifted, small values), and exp(teacher) unless
        # the gradient block can hold it
        n_scratch = 2 + (0 if need_grad and same else 1)
        blocks = [(0, n)] if self.one_block else row_blocks(x, n_scratch)
        spare = scratch(x, blocks, n_scratch)

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

        sizes = [hi - lo for lo, hi in blocks]
        max_s = x.amax(1, keepdim=True).to(cdtype)
        max_t = self.teacher.amax(1, keepdim=True).to(cdtype)
        per_block = (
            x,
            max_s,
            max_s * -t_inv,
            max_t * -t_inv,
            self.teacher,
            grad,
            sums_t,
            sums_s,
            dots,
            lse1,
            g_soft,
            g_soft_s,
            g_hard,
            target,
        )
        views = (
            [per_block]  # one block: no split ops
            if len(sizes) == 1
            else zip(
                *((None,) * len(sizes) if t is None else split(t, sizes) for t in per_block),
                strict=True,
            )
        )
        for s_raw, ms, shift_s, shift_t, t_raw, g, st, ss, dt, l1, gs, gss, gh, y in views:
            r = s_raw.shape[0]
            buf = spare[0][:r]
            buf_a = spare[1][:r]
            e_t = g if g is not None and same else spare[2][:r]
            b = torch.add(shift_t, t_raw, alpha=t_inv, out=buf)
            torch.exp(b, out=e_t)
            torch.sum(e_t, 1, out=st)
            a = torch.add(shift_s, s_raw, alpha=t_inv, out=buf_a)
            # sum_k e^b (b - a), in place in the teacher's block (no product temporary);
            # both are max-shifted, so the difference keeps its digits at any offset
            torch.sum(b.sub_(a).mul_(e_t), 1, out=dt)
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
                    # d hard / d s = p_s - (1 - alpha) onehot(y) - alpha / K
                    e_t.scatter_add_(1, y.unsqueeze(1), gh.mul(self.alpha - 1.0).unsqueeze(1))
                    if self.alpha:
                        e_t.sub_(gh.mul(self.alpha / e_t.shape[1]).unsqueeze(1))
                if e_t is not g:
                    g.copy_(e_t)

        kl = (dots / sums_t).sub_(sums_t.log_()).add_(sums_s.log_())
        nonfinite = ~torch.isfinite(kl)
        valid = self.valid
        if host_any(nonfinite):
            bad = nonfinite if valid is None else nonfinite & valid
            if host_any(bad):  # -inf logits: 0 * log 0 terms count as 0; no finite teacher: NaN
                idx = bad.nonzero().squeeze(1)
                s_bad, t_bad = x[idx].to(cdtype), self.teacher[idx].to(cdtype)
                kl[idx] = composite.kd_rows(
                    s_bad, t_bad, self.temperature, False, 1.0, None, False
                )[2]
            if valid is not None:
                zero_rows(grad, nonfinite & ~valid)
        soft = kl.mul_(factor) if factor != 1.0 else kl
        if target is None or lse1 is None:
            hard = soft if not self.need_terms else torch.zeros_like(soft)  # unused if alone
        else:
            # -log p_y = log s - (s_y - max s), on shifted logits (exact with large offsets)
            hard = lse1 - (x.gather(1, target[:, None]).to(cdtype) - max_s).squeeze(1)
            if self.alpha:  # label-smoothed: (1 - a) CE + a * mean_k (lse - s_k)
                mean_s = x.sum(1, dtype=cdtype) / x.shape[1] - max_s.squeeze(1)
                hard = (1.0 - self.alpha) * hard + self.alpha * (lse1 - mean_s)
        total = soft if beta == 1.0 else (1.0 - beta) * hard + beta * soft
        if not self.need_terms:
            return (where_valid(valid, total * scale),), grad
        return (
            where_valid(valid, total * scale),
            where_valid(valid, hard * scale),
            where_valid(valid, soft * scale),
        ), grad
