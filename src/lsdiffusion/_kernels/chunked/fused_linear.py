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
from lsdiffusion._kernels.eager.blocks import compute_dtype
from lsdiffusion._kernels.eager.kd import KDKernel

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "FusedLinearKD",
    "FusedLinearSpec",
    "chunk_rows",
    "fused_linear_kd",
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


def _chunks(n: int, step: int) -> list[tuple[int, int]]:
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def _run(
    spec: FusedLinearSpec,
    tensors: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor | None, Tensor | None],
    upstream: Tensor | None,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss rows (or their sum) and the requested gradients, chunk by chunk.

    ``upstream`` (None: 1) multiplies every row's gradient: a scalar, or one
    value per row for unreduced outputs.
    """
    h, w, b, h_t, w_t, b_t, y = tensors
    n = h.shape[0]
    cdtype = compute_dtype(h)
    acc = torch.float64 if cdtype == torch.float64 else torch.float32
    need_h, need_w, need_b = need
    grad_h = torch.empty_like(h) if need_h else None
    grad_w = torch.zeros(w.shape, dtype=acc, device=w.device) if need_w else None
    grad_b = (
        torch.zeros(w.shape[0], dtype=acc, device=w.device) if need_b and b is not None else None
    )
    any_grad = need_h or need_w or need_b
    rows = torch.empty(n, dtype=cdtype, device=h.device) if not spec.reduce else None
    total = torch.zeros((), dtype=cdtype, device=h.device)
    for lo, hi in _chunks(n, spec.chunk):
        h_c = h[lo:hi]
        s_c = _logits(h_c, w, b)
        t_c = _logits(h_t[lo:hi], w_t, b_t)
        scale = torch.full((hi - lo,), spec.scale, dtype=cdtype, device=h.device)
        if upstream is not None:
            scale = scale * (upstream if upstream.dim() == 0 else upstream[lo:hi]).to(cdtype)
        kernel = KDKernel(
            t_c,
            spec.temperature,
            spec.t2,
            spec.beta,
            None if y is None else y[lo:hi],
            False,
            scale,
            None,
            spec.alpha,
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
            grad_w.addmm_(g.T.to(acc), h_c.to(acc))
        if grad_b is not None:
            grad_b += g.sum(0, dtype=acc)
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
        tensors = (h, w, b, h_t, w_t, b_t, y)
        out, grad_h, grad_w, grad_b = _run(
            spec, tensors, None, need if precompute else (False, False, False)
        )
        ctx.spec = spec
        ctx.need = need
        ctx.grads = (grad_h, grad_w, grad_b) if precompute else None
        ctx.save_for_backward(*(t for t in tensors if t is not None))
        ctx.present = tuple(t is not None for t in tensors)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        saved = iter(ctx.saved_tensors)
        tensors = tuple(next(saved) if present else None for present in ctx.present)
        w, b = tensors[1], tensors[2]
        nones = (None,) * 5
        if torch.is_grad_enabled():  # create_graph=True: differentiate the unfused formula
            return (*_composite_grads(ctx.spec, tensors, grad_out, ctx.need), *nones)
        if ctx.grads is not None:
            grads = ctx.grads
            ctx.grads = None
            if not (grad_out.device.type == "cpu" and float(grad_out) == 1.0):
                grads = tuple(None if g is None else g.mul_(grad_out.to(g.dtype)) for g in grads)
        else:
            _, *grads = _run(ctx.spec, tensors, grad_out, ctx.need)  # type: ignore[arg-type]
        grad_h, grad_w, grad_b = grads
        assert w is not None
        return (
            grad_h,
            None if grad_w is None else grad_w.to(w.dtype),
            None if grad_b is None or b is None else grad_b.to(b.dtype),
            *nones,
        )


def _composite_grads(
    spec: FusedLinearSpec,
    tensors: tuple[Tensor | None, ...],
    grad_out: Tensor,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    h, w, b, h_t, w_t, b_t, y = tensors
    assert h is not None
    assert w is not None
    assert h_t is not None
    assert w_t is not None
    wanted = [n and t is not None for t, n in zip((h, w, b), need, strict=True)]
    with torch.enable_grad():
        out = composite_loss(spec, h, w, b, h_t, w_t, b_t, y)
        inputs = [t for t, want in zip((h, w, b), wanted, strict=True) if want and t is not None]
        grads = iter(torch.autograd.grad(out, inputs, grad_out, create_graph=True))
    grad_h, grad_w, grad_b = (next(grads) if want else None for want in wanted)
    return grad_h, grad_w, grad_b


def composite_loss(
    spec: FusedLinearSpec,
    h: Tensor,
    w: Tensor,
    b: Tensor | None,
    h_t: Tensor,
    w_t: Tensor,
    b_t: Tensor | None,
    y: Tensor | None,
) -> Tensor:
    """The unfused loss as plain differentiable ops (all logits at once)."""
    s = _logits(h, w, b)
    t = _logits(h_t, w_t, b_t)
    cdtype = compute_dtype(s)
    total, _, _ = composite.kd_rows(
        s.to(cdtype), t.to(cdtype), spec.temperature, spec.t2, spec.beta, y, False, spec.alpha
    )
    return (total * spec.scale).sum() if spec.reduce else total


def fused_linear_kd(
    spec: FusedLinearSpec,
    h: Tensor,
    w: Tensor,
    b: Tensor | None,
    h_t: Tensor,
    w_t: Tensor,
    b_t: Tensor | None,
    y: Tensor | None,
    use_composite: bool,
) -> Tensor:
    """Dispatch: the chunked function, or the composite formula under transforms/tracing.

    Under autocast the inputs are cast as autocast would cast a matmul's, and
    the chunked function then runs with autocast off (its own dtype rules).
    """
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type) and h.dtype == torch.float32:
        # autocast lowers float32 matmuls (and leaves float64 ones alone)
        dtype = torch.get_autocast_dtype(device_type)

        def cast(t: Tensor) -> Tensor:
            return t.to(dtype) if t.dtype == torch.float32 else t

        h, w, h_t, w_t = (cast(t) for t in (h, w, h_t, w_t))
        b = None if b is None else cast(b)
        b_t = None if b_t is None else cast(b_t)
        with torch.autocast(device_type, enabled=False):
            return fused_linear_kd(spec, h, w, b, h_t, w_t, b_t, y, use_composite)
    if use_composite:
        return composite_loss(spec, h, w, b, h_t, w_t, b_t, y)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (h, w, b)):
        out: Tensor = FusedLinearKD.apply(h, w, b, h_t, w_t, b_t, y, spec)  # type: ignore[no-untyped-call]
        return out
    out, _, _, _ = _run(spec, (h, w, b, h_t, w_t, b_t, y), None, (False, False, False))
    return out
