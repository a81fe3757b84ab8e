r"""Fused linear KD: the loss of ``h_s W_s^T + b_s`` against ``h_t W_t^T + b_t``, chunked.

The N×V logits are never held: tokens are processed ``chunk`` rows at a time.
For each chunk the two logits blocks are computed (matmul in the input dtype),
the eager KD kernel (`KDKernel`) gives
the chunk's loss and the gradient with respect to the student's logits
$G$, and that gradient is pushed through the head at once:

$$
\frac{\partial L}{\partial h_s} = G\,W_s, \qquad
\frac{\partial L}{\partial W_s} \mathrel{+}= G^\top h_s, \qquad
\frac{\partial L}{\partial b_s} \mathrel{+}= \textstyle\sum_{rows} G .
$$

The chunk's logits are then dropped. Backward only scales the accumulated
gradients by the upstream gradient (float16 inputs, whose precomputed
gradients would underflow, and ``reduction="none"`` recompute instead, with
the upstream gradient folded in). ``create_graph=True`` recomputes through the
unfused composite formula: correct to any order, at the memory of the unfused
loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lsdiffusion._kernels import composite
from lsdiffusion._kernels.autograd import use_composite
from lsdiffusion._kernels.base import compute_dtype
from lsdiffusion._kernels.kd import KDKernel

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "FusedLinearKD",
    "FusedLinearSpec",
    "Head",
    "chunk_rows",
    "fused_linear_kd",
    "fused_linear_kd_rows",
]

# Temporaries per chunk (the two logits blocks, the gradient block and the
# kernel's float32 scratch) are bounded by this many bytes when chunk_size=None.
DEFAULT_BUDGET_BYTES = 64 * 2**20


def chunk_rows(vocab: int, dtype: torch.dtype, budget: int = DEFAULT_BUDGET_BYTES) -> int:
    """Rows per chunk so that a chunk's temporaries stay within ``budget`` bytes.

    A chunk row holds the student and teacher logits and the gradient in the
    input dtype, plus two float32 rows of kernel scratch (three for half inputs,
    whose exponentials cannot live in the gradient buffer).
    """
    item = torch.empty((), dtype=dtype).element_size()
    per_row = vocab * (3 * item + (3 * 4 if item < 4 else 2 * 4))
    return max(1, budget // max(1, per_row))


@dataclass(frozen=True)
class FusedLinearSpec:
    """Everything but the tensors: the KD options and the chunking."""

    temperature: float
    t2: bool
    beta: float
    alpha: float
    reduce: bool  # sum the rows (the reduction's scale is in ``scale``)
    scale: float  # per-row factor: 1 / n for batchmean, else 1
    chunk: int


def _logits(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    return h @ w.T if b is None else torch.addmm(b, h, w.T)


@dataclass(frozen=True)
class Head:
    """A linear output head and its inputs: ``logits = hidden @ weight.T + bias``."""

    hidden: Tensor  # (N, H)
    weight: Tensor  # (V, H)
    bias: Tensor | None  # (V,) or None

    def logits(self, lo: int = 0, hi: int | None = None) -> Tensor:
        """The logits of tokens ``[lo, hi)`` (all tokens by default)."""
        return _logits(self.hidden[lo:hi], self.weight, self.bias)

    def tokens(self, keep: Tensor) -> Head:
        """The head over the tokens ``keep`` (indices) only."""
        return Head(self.hidden.index_select(0, keep), self.weight, self.bias)

    def zero_tokens(self, valid: Tensor) -> Head:
        """The head with the states of tokens outside ``valid`` (a mask) set to zero."""
        return Head(torch.where(valid[:, None], self.hidden, 0.0), self.weight, self.bias)


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _run(
    spec: FusedLinearSpec,
    student: Head,
    teacher: Head,
    y: Tensor | None,
    upstream: Tensor | None,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss rows (or their sum) and the requested gradients, chunk by chunk.

    ``upstream`` (None: 1) multiplies every row's gradient: a scalar, or one
    value per row for unreduced outputs. ``need``: gradients of the student's
    hidden states, weight and bias.
    """
    h, w, b = student.hidden, student.weight, student.bias
    n = h.shape[0]
    cdtype = compute_dtype(h)
    need_h, need_w, need_b = need
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(w.shape, dtype=cdtype, device=w.device) if need_w else None
    grad_b = (
        torch.zeros(w.shape[0], dtype=cdtype, device=w.device) if need_b and b is not None else None
    )
    any_grad = need_h or need_w or need_b
    rows = torch.empty(n, dtype=cdtype, device=h.device) if not spec.reduce else None
    total = torch.zeros((), dtype=cdtype, device=h.device)
    for lo, hi in _chunks(n, spec.chunk):
        h_c = h[lo:hi]
        s_c = student.logits(lo, hi)
        t_c = teacher.logits(lo, hi)
        scale = torch.full((hi - lo,), spec.scale, dtype=cdtype, device=h.device)
        if upstream is not None:
            scale = scale * (upstream if upstream.dim() == 0 else upstream[lo:hi]).to(cdtype)
        kernel = KDKernel(
            teacher=t_c,
            temperature=spec.temperature,
            t2=spec.t2,
            beta=spec.beta,
            target=None if y is None else y[lo:hi],
            terms=False,
            scale=scale,
            valid=None,
            alpha=spec.alpha,
            one_block=True,  # the chunk is the block: its scratch is in the budget
        )
        (out,), g = kernel.run(s_c, need_grad=any_grad)
        del s_c, t_c
        if rows is not None:  # unreduced: the scale is 1
            rows[lo:hi] = out
        else:
            total += out.sum()
        if g is None:
            continue
        if grad_h is not None:
            torch.mm(g, w, out=grad_h[lo:hi])
        if grad_w is not None:
            grad_w.addmm_(g.T.to(cdtype), h_c.to(cdtype))
        if grad_b is not None:
            grad_b += g.sum(0, dtype=cdtype)
    return (total if rows is None else rows), grad_h, grad_w, grad_b


class FusedLinearKD(torch.autograd.Function):
    """Gradients of the head computed in forward, chunk by chunk; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        w: Tensor,
        b: Tensor | None,
        h_t: Tensor,
        w_t: Tensor,
        b_t: Tensor | None,
        y: Tensor | None,
        spec: FusedLinearSpec,
    ) -> Tensor:
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        # Precompute the gradients when backward can just scale them: reduced outputs,
        # and not float16 (1/n-scaled float16 gradients underflow before the GradScaler
        # scale reaches them).
        precompute = spec.reduce and h.dtype != torch.float16 and any(need)
        out, grad_h, grad_w, grad_b = _run(
            spec,
            Head(h, w, b),
            Head(h_t, w_t, b_t),
            y,
            None,
            need if precompute else (False, False, False),
        )
        tensors = (h, w, b, h_t, w_t, b_t, y)
        ctx.spec = spec
        ctx.need = need
        ctx.grads = (grad_h, grad_w, grad_b) if precompute else None
        ctx.save_for_backward(*(t for t in tensors if t is not None))
        ctx.present = tuple(t is not None for t in tensors)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        h, w, b, h_t, w_t, b_t, y = (next(saved) if p else None for p in ctx.present)
        assert h is not None
        assert w is not None
        assert h_t is not None
        assert w_t is not None
        student, teacher = Head(h, w, b), Head(h_t, w_t, b_t)
        nones = (None,) * 5
        if torch.is_grad_enabled():  # create_graph=True: differentiate the unfused formula
            composite_grads = _composite_grads(ctx.spec, student, teacher, y, grad_out, ctx.need)
            return (*composite_grads, *nones)
        grads: tuple[Tensor | None, ...]
        if ctx.grads is not None:
            grads = ctx.grads
            ctx.grads = None
            if not (grad_out.device.type == "cpu" and float(grad_out) == 1.0):
                grads = tuple(None if g is None else g.mul_(grad_out.to(g.dtype)) for g in grads)
        else:
            grads = _run(ctx.spec, student, teacher, y, grad_out, ctx.need)[1:]
        grad_h, grad_w, grad_b = grads
        return (
            grad_h,
            None if grad_w is None else grad_w.to(w.dtype),
            None if grad_b is None or b is None else grad_b.to(b.dtype),
            *nones,
        )


def _composite_grads(
    spec: FusedLinearSpec,
    student: Head,
    teacher: Head,
    y: Tensor | None,
    grad_out: Tensor,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    params = (student.hidden, student.weight, student.bias)
    wanted = [n and t is not None for t, n in zip(params, need, strict=True)]
    with torch.enable_grad():
        out = composite_loss(spec, student, teacher, y)
        inputs = [t for t, want in zip(params, wanted, strict=True) if want and t is not None]
        grads = iter(torch.autograd.grad(out, inputs, grad_out, create_graph=True))
    grad_h, grad_w, grad_b = (next(grads) if want else None for want in wanted)
    return grad_h, grad_w, grad_b


def composite_loss(spec: FusedLinearSpec, student: Head, teacher: Head, y: Tensor | None) -> Tensor:
    """The unfused loss as plain differentiable ops (all logits at once)."""
    s = student.logits()
    t = teacher.logits()
    cdtype = compute_dtype(s)
    total, _, _ = composite.kd_rows(
        s.to(cdtype),
        t.to(cdtype),
        temperature=spec.temperature,
        t2=spec.t2,
        beta=spec.beta,
        target=y,
        terms=False,
        alpha=spec.alpha,
    )
    return (total * spec.scale).sum() if spec.reduce else total


def _autocast(head: Head, dtype: torch.dtype) -> Head:
    """The head's float32 tensors in ``dtype``, as autocast would cast a matmul's."""

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.dtype == torch.float32 else t

    bias = None if head.bias is None else cast(head.bias)
    return Head(cast(head.hidden), cast(head.weight), bias)


def fused_linear_kd(
    spec: FusedLinearSpec,
    student: Head,
    teacher: Head,
    y: Tensor | None,
    use_composite: bool,
) -> Tensor:
    """Dispatch: the chunked function, or the composite formula under transforms/tracing.

    Under autocast the inputs are cast as autocast would cast a matmul's, and
    the chunked function then runs with autocast off (its own dtype rules).
    """
    device_type = student.hidden.device.type
    if torch.is_autocast_enabled(device_type) and student.hidden.dtype == torch.float32:
        # autocast lowers float32 matmuls (and leaves float64 ones alone)
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return fused_linear_kd(
                spec, _autocast(student, dtype), _autocast(teacher, dtype), y, use_composite
            )
    if use_composite:
        return composite_loss(spec, student, teacher, y)
    h, w, b = student.hidden, student.weight, student.bias
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, w, b)):
        h_t, w_t, b_t = teacher.hidden, teacher.weight, teacher.bias
        out: Tensor = FusedLinearKD.apply(h, w, b, h_t, w_t, b_t, y, spec)  # type: ignore[no-untyped-call]
        return out
    out, _, _, _ = _run(spec, student, teacher, y, None, (False, False, False))
    return out


def fused_linear_kd_rows(
    student: Head,
    teacher: Head,
    y: Tensor | None,
    valid: Tensor | None,
    *,
    temperature: float,
    t2: bool,
    beta: float,
    alpha: float,
    reduction: str,
    chunk_size: int | None,
) -> Tensor:
    """The loss over flat ``(N, H)`` heads, reduced; ``(N,)`` rows for ``"none"``.

    ``y``: flat targets or None; ``valid``: the kept tokens' mask, or None when
    no target can be ignored. Token selection: ignored tokens are dropped
    before the matmuls (reading the mask on the host); on the composite path
    (transforms, tracing, compile, forward AD) their states are zeroed instead.
    """
    reduce = reduction != "none"
    n_all = student.hidden.shape[0]
    chunk = chunk_size or chunk_rows(student.weight.shape[0], student.hidden.dtype)
    if use_composite(student.hidden):  # the unfused formula
        spec = FusedLinearSpec(temperature, t2, beta, alpha, False, 1.0, chunk)
        if valid is not None and y is not None:
            y = torch.where(valid, y, 0)
            # ignored tokens' states are zeroed, so NaN padding cannot reach the gradients
            student, teacher = student.zero_tokens(valid), teacher.zero_tokens(valid)
        rows = fused_linear_kd(spec, student, teacher, y, use_composite=True)
        if valid is not None:
            rows = torch.where(valid, rows, 0.0)
        if reduction == "none":
            return rows
        if reduction == "sum":
            return rows.sum()
        count = rows.new_tensor(rows.shape[0]) if valid is None else valid.sum()
        return rows.sum() / count.clamp_min(1)
    keep: Tensor | None = None
    if valid is not None and y is not None and not bool(valid.all()):
        keep = valid.nonzero().squeeze(1)  # drop ignored tokens before the matmul
        student, teacher = student.tokens(keep), teacher.tokens(keep)
        y = y.index_select(0, keep)
    n = student.hidden.shape[0]
    scale = 1.0 / n if reduction == "batchmean" and n > 0 else 1.0
    spec = FusedLinearSpec(temperature, t2, beta, alpha, reduce, scale, chunk)
    out = fused_linear_kd(spec, student, teacher, y, use_composite=False)
    if reduce or keep is None:
        return out
    return out.new_zeros(n_all).index_copy(0, keep, out)
