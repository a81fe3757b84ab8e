r"""Fused linear losses: a loss of the logits ``h W^T + b``, chunked over tokens.

The N×V logits are never held: tokens are processed ``chunk`` rows at a time.
For each chunk the student's logits are computed (matmul in the input dtype),
the chunk loss (`chunked.losses`: KD against a teacher head, KD against a
cached top-k teacher, label smoothing) binds the chunk's kernel, whose fast
first-order evaluation (eager or Triton, as for the token-level losses) gives
the chunk's loss and the gradient $G$ with respect to its logits, and that
gradient is pushed through the head at once:

$$
\frac{\partial L}{\partial h} = G\,W, \qquad
\frac{\partial L}{\partial W} \mathrel{+}= G^\top h, \qquad
\frac{\partial L}{\partial b} \mathrel{+}= \textstyle\sum_{rows} G .
$$

The chunk's logits are then dropped. Backward only scales the accumulated
gradients by the upstream gradient (float16 inputs, whose precomputed
gradients would underflow, and ``reduction="none"`` recompute instead, with
the upstream gradient folded in). ``create_graph=True`` recomputes through the
unfused composite formula: correct to any order, at the memory of the unfused
loss; so do ``torch.func`` transforms, forward-mode AD and tracing/compile.

The same loop runs on every device: on CUDA (``backend="auto"``) each chunk's
kernel is the Triton one, exactly as on CPU tensors with ``backend="triton"``
under ``TRITON_INTERPRET=1``. No host synchronisation happens inside the loop
on the Triton backend; dropping ignored tokens before it reads their mask once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lsdiffusion._kernels.autograd import composite_only
from lsdiffusion._kernels.base import compute_dtype
from lsdiffusion._kernels.chunked.losses import ChunkLoss

__all__ = [
    "DEFAULT_BUDGET_BYTES",
    "FusedLinear",
    "FusedLinearSpec",
    "Head",
    "budget_bytes",
    "chunk_rows",
    "fused_linear_rows",
]

# The chunk temporaries (logits blocks, gradient block, kernel scratch) are
# bounded by ``budget_bytes``: this floor, or a fraction of the logits the
# unfused loss would hold, whichever is larger, when chunk_size=None.
DEFAULT_BUDGET_BYTES = 64 * 2**20
# the fraction of one N×V logits tensor (in the input dtype) the chunk
# temporaries may take: large chunks make efficient matmuls and accumulate the
# head's gradient fewer times; the documented bound is 0.25 tensors
BUDGET_FRACTION = 0.2


def budget_bytes(tokens: int, vocab: int, dtype: torch.dtype) -> int:
    """The default bound on a chunk's temporaries for ``tokens`` × ``vocab`` logits."""
    item = torch.empty((), dtype=dtype).element_size()
    return max(DEFAULT_BUDGET_BYTES, int(BUDGET_FRACTION * tokens * vocab * item))


def chunk_rows(row_bytes: int, budget: int) -> int:
    """Rows per chunk so that a chunk's temporaries (``row_bytes`` a row) fit ``budget``."""
    return max(1, budget // max(1, row_bytes))


@dataclass(frozen=True)
class FusedLinearSpec:
    """Everything but the tensors: the reduction and the chunking."""

    reduce: bool  # sum the rows (the reduction's factor is the ``scale`` tensor)
    chunk: int
    acc: torch.dtype  # the head gradients' accumulation dtype


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
    loss: ChunkLoss,
    scale: Tensor,
    upstream: Tensor | None,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss rows (or their sum) and the requested gradients, chunk by chunk.

    ``scale`` (a 0-d tensor in the compute dtype) is every row's reduction
    factor; ``upstream`` (None: 1) multiplies every row's gradient: a scalar,
    or one value per row for unreduced outputs. ``need``: gradients of the
    student's hidden states, weight and bias, accumulated in ``spec.acc``.
    """
    h, w, b = student.hidden, student.weight, student.bias
    n = h.shape[0]
    cdtype = compute_dtype(h)
    need_h, need_w, need_b = need
    acc = spec.acc
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
        s_c = student.logits(lo, hi)
        row_scale = scale.expand(hi - lo)
        if upstream is not None:
            row_scale = row_scale * (upstream if upstream.dim() == 0 else upstream[lo:hi]).to(
                cdtype
            )
        (out, *_), g = loss.kernel(lo, hi, row_scale).run(s_c, need_grad=any_grad)
        del s_c
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
        del g  # before the next chunk's gradient block exists
    return (total if rows is None else rows), grad_h, grad_w, grad_b


def plan(
    student: Head, loss: ChunkLoss, chunk_size: int | None, need_w: bool
) -> tuple[int, torch.dtype]:
    """Rows per chunk and the head gradients' accumulation dtype.

    The default budget bounds everything the fused loss adds to the unfused
    loss's inputs and gradients: the chunk temporaries and, for half-precision
    heads, a float32 accumulator of the weight gradient. That accumulator is
    used when it takes at most half the budget; otherwise (V = 128k, H = 4096
    in bfloat16: 2 GiB) the gradient accumulates in the head's own dtype, one
    rounding per chunk, as Liger-Kernel's fused losses do.
    """
    w = student.weight
    n, vocab = student.hidden.shape[0], w.shape[0]
    cdtype = compute_dtype(w)
    budget = budget_bytes(n, vocab, w.dtype)
    acc = cdtype
    if w.element_size() < 4 and need_w:
        acc_bytes = (w.numel() + vocab) * 4
        if acc_bytes <= budget // 2:
            budget -= acc_bytes
        else:
            acc = w.dtype
    rows = chunk_size or chunk_rows(loss.row_bytes(vocab, student.hidden.dtype), budget)
    return rows, acc


class FusedLinear(torch.autograd.Function):
    """Gradients of the head computed in forward, chunk by chunk; see the module docstring."""

    @staticmethod
    def forward(
        ctx: Any,
        h: Tensor,
        w: Tensor,
        b: Tensor | None,
        spec: FusedLinearSpec,
        loss: ChunkLoss,
        scale: Tensor,
        *saved: Tensor,
    ) -> Tensor:
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2])
        # Precompute the gradients when backward can just scale them: reduced outputs,
        # and not float16 (1/n-scaled float16 gradients underflow before the GradScaler
        # scale reaches them).
        precompute = spec.reduce and h.dtype != torch.float16 and any(need)
        out, grad_h, grad_w, grad_b = _run(
            spec, Head(h, w, b), loss, scale, None, need if precompute else (False, False, False)
        )
        ctx.spec = spec
        ctx.loss = loss
        ctx.need = need
        ctx.has_bias = b is not None
        ctx.grads = (grad_h, grad_w, grad_b) if precompute else None
        ctx.save_for_backward(h, w, *(() if b is None else (b,)), scale, *saved)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        h, w, *rest = ctx.saved_tensors
        b = rest.pop(0) if ctx.has_bias else None
        scale, *saved = rest
        student = Head(h, w, b)
        loss = ctx.loss.rebind(tuple(saved))
        nones = (None,) * (3 + len(saved))
        if torch.is_grad_enabled():  # create_graph=True: differentiate the unfused formula
            return (*_composite_grads(ctx.spec, student, loss, scale, grad_out, ctx.need), *nones)
        grads: tuple[Tensor | None, ...]
        if ctx.grads is not None:
            grads = ctx.grads
            ctx.grads = None
            if not (grad_out.device.type == "cpu" and float(grad_out) == 1.0):
                grads = tuple(None if g is None else g.mul_(grad_out.to(g.dtype)) for g in grads)
        else:
            grads = _run(ctx.spec, student, loss, scale, grad_out, ctx.need)[1:]
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
    loss: ChunkLoss,
    scale: Tensor,
    grad_out: Tensor,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    params = (student.hidden, student.weight, student.bias)
    wanted = [n and t is not None for t, n in zip(params, need, strict=True)]
    with torch.enable_grad():
        out = composite_loss(spec, student, loss, scale)
        inputs = [t for t, want in zip(params, wanted, strict=True) if want and t is not None]
        grads = iter(torch.autograd.grad(out, inputs, grad_out, create_graph=True))
    grad_h, grad_w, grad_b = (next(grads) if want else None for want in wanted)
    return grad_h, grad_w, grad_b


def composite_loss(spec: FusedLinearSpec, student: Head, loss: ChunkLoss, scale: Tensor) -> Tensor:
    """The unfused loss as plain differentiable ops (all logits at once)."""
    s = student.logits()
    n = s.shape[0]
    ones = torch.ones(n, dtype=compute_dtype(s), device=s.device)
    (rows, *_) = loss.kernel(0, n, ones).composite(s)
    return (rows * scale).sum() if spec.reduce else rows


def autocast_head(head: Head, dtype: torch.dtype) -> Head:
    """The head's float32 tensors in ``dtype``, as autocast would cast a matmul's."""

    def cast(t: Tensor) -> Tensor:
        return t.to(dtype) if t.dtype == torch.float32 else t

    bias = None if head.bias is None else cast(head.bias)
    return Head(cast(head.hidden), cast(head.weight), bias)


def fused_linear_rows(
    student: Head,
    loss: ChunkLoss,
    valid: Tensor | None,
    *,
    reduction: str,
    chunk_size: int | None,
    denominator: Tensor | None = None,
) -> Tensor:
    """The loss over a flat ``(N, H)`` head, reduced; ``(N,)`` rows for ``"none"``.

    ``valid``: the kept tokens' mask, or None when no token can be ignored.
    ``reduction``: ``"none"``, ``"sum"``, or ``"mean"`` / ``"batchmean"`` (the
    sum over kept tokens divided by ``denominator``, by default their count;
    0 when every token is ignored). Token selection: ignored tokens are
    dropped before the matmuls (reading the mask on the host, one
    synchronisation on accelerators); on the composite path (transforms,
    tracing, compile, forward AD) their inputs are zeroed instead.
    """
    device_type = student.hidden.device.type
    if torch.is_autocast_enabled(device_type) and student.hidden.dtype == torch.float32:
        # autocast lowers float32 matmuls (and leaves float64 ones alone); the chunked
        # function then runs with autocast off, by its own dtype rules
        dtype = torch.get_autocast_dtype(device_type)
        with torch.autocast(device_type, enabled=False):
            return fused_linear_rows(
                autocast_head(student, dtype),
                loss.autocast(dtype),
                valid,
                reduction=reduction,
                chunk_size=chunk_size,
                denominator=denominator,
            )
    reduce = reduction != "none"
    cdtype = compute_dtype(student.hidden)
    if composite_only(student.hidden):  # the unfused formula
        if valid is not None:
            # ignored tokens' inputs are zeroed, so NaN padding cannot reach the gradients
            student, loss = student.zero_tokens(valid), loss.zero_ignored(valid)
        spec = FusedLinearSpec(False, 1, cdtype)  # one chunk: all logits at once
        rows = composite_loss(spec, student, loss, torch.ones((), dtype=cdtype))
        if valid is not None:
            rows = torch.where(valid, rows, 0.0)
        if reduction == "none":
            return rows
        if reduction == "sum":
            return rows.sum()
        count = rows.new_tensor(rows.shape[0]) if valid is None else valid.sum()
        if denominator is None:
            return rows.sum() / count.clamp_min(1)
        # an all-ignored batch gives 0 (a 1 in place of its zero denominator keeps the
        # unselected branch's gradient finite)
        den = torch.where(count > 0, denominator.to(rows.dtype), 1.0)
        return torch.where(count > 0, rows.sum() / den, 0.0)
    n_all = student.hidden.shape[0]
    keep: Tensor | None = None
    if valid is not None and not bool(valid.all()):
        keep = valid.nonzero().squeeze(1)  # drop ignored tokens before the matmul
        student, loss = student.tokens(keep), loss.tokens(keep)
    n = student.hidden.shape[0]
    scale = torch.ones((), dtype=cdtype, device=student.hidden.device)
    if reduction in ("mean", "batchmean") and n > 0:
        scale = scale / (n if denominator is None else denominator.to(cdtype))
    elif reduction in ("mean", "batchmean"):
        scale = scale * 0.0
    h, w, b = student.hidden, student.weight, student.bias
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (h, w, b)
    )
    chunk, acc = plan(student, loss, chunk_size, need_w=need_grad and w.requires_grad)
    spec = FusedLinearSpec(reduce, chunk, acc)
    if need_grad:
        out: Tensor = FusedLinear.apply(h, w, b, spec, loss, scale, *loss.tensors())  # type: ignore[no-untyped-call]
    else:
        out = _run(spec, student, loss, scale, None, (False, False, False))[0]
    if reduce or keep is None:
        return out
    return out.new_zeros(n_all).index_copy(0, keep, out)
