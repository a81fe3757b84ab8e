"""KD against a cached top-k teacher (see `lsdiffusion.teachers` for the math).

`run` holds one logits-sized buffer: the student's tempered softmax (for the
bucket rule, the tail's, against the tail's own maximum so that its mass never
underflows), written in place over a float copy of the logits and turned into
the gradient in place
(the teacher is scattered into it, never expanded). The hard term (`beta < 1`
or when the terms are asked for) adds a second softmax at T = 1 while it is
formed, unless T = 1. `composite` is the same loss as differentiable ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from lsdiffusion._kernels.autograd import tracing_or_transforming
from lsdiffusion._kernels.base import (
    LossKernel,
    compute_dtype,
    where_valid,
    zero_invalid,
)
from lsdiffusion._kernels.composite import ls_rows
from lsdiffusion.teachers import TopKTeacher

__all__ = ["FlatTeacher", "TopKKDKernel", "flatten_cached", "flatten_teacher"]

_NEG_INF = float("-inf")


def _teacher_log_q(
    values: Tensor, temperature: float, bucket: bool, log_r: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Tempered teacher log-probabilities: `(rows, k)` and the bucket's `(rows,)`.

    Without a bucket, the second output is `-inf` (no mass). ``log_r``: the
    bucket's log-mass as cached (`TopKTeacher.residual`), else derived from the values.
    """
    a = values / temperature
    if not bucket:
        lq = torch.log_softmax(a, 1)
        return lq, torch.full_like(lq[:, 0], _NEG_INF)
    if log_r is None:
        # log r = log(1 - sum exp(v)), kept finite-or--inf and stable near sum = 1
        lse_k = torch.logsumexp(values, 1).clamp(max=0.0)
        log_r = torch.log(-torch.expm1(lse_k))
    else:
        log_r = log_r.to(values.dtype)
    both = torch.cat([a, (log_r / temperature)[:, None]], 1)
    lq_all = torch.log_softmax(both, 1)
    return lq_all[:, :-1], lq_all[:, -1]


def _xlogy_terms(lq: Tensor, log_p: Tensor) -> Tensor:
    """`q (log q - log p)` with `0 log 0 = 0` wherever `q = 0`."""
    return torch.where(lq == _NEG_INF, 0.0, lq.exp() * (lq - log_p))


@dataclass
class TopKKDKernel(LossKernel):
    """Row-wise KD of `(rows, V)` student logits against `(rows, k)` cached classes."""

    # `run` reads no values on the host: accelerator tensors take it too (one buffer),
    # not the composite formula
    backend = "eager"
    host_free = True

    indices: Tensor  # (rows, k) int64
    values: Tensor  # (rows, k), compute dtype
    temperature: float
    t2: bool
    bucket: bool  # tail="bucket" and k < V
    beta: float
    target: Tensor | None  # (rows,) int64, ignored rows set to 0
    with_terms: bool
    scale: Tensor
    valid: Tensor | None
    alpha: float = 0.0  # label smoothing of the hard term (the fused linear loss's recipe)
    log_r: Tensor | None = None  # (rows,) the bucket's cached log-mass, if the teacher has it

    def tensor_names(self) -> tuple[str, ...]:
        names = ("indices", "values") + (("target",) if self.target is not None else ())
        return names + (("log_r",) if self.log_r is not None else ())

    def _hard_wanted(self) -> bool:
        return self.target is not None and (self.with_terms or self.beta < 1.0)

    def _t2(self) -> float:
        return self.temperature**2 if self.t2 else 1.0

    def composite(self, x: Tensor) -> tuple[Tensor, ...]:
        """The loss as differentiable ops (create_graph, torch.func, compile, forward AD)."""
        s = zero_invalid(self.valid, x.to(compute_dtype(x)))
        lsm = torch.log_softmax(s / self.temperature, 1)
        lq, lq_b = _teacher_log_q(
            self.values.to(s.dtype), self.temperature, self.bucket, self.log_r
        )
        soft = _xlogy_terms(lq, lsm.gather(1, self.indices)).sum(1)
        if self.bucket:
            cached = torch.zeros_like(lsm, dtype=torch.bool).scatter(1, self.indices, True)
            log_pb = torch.logsumexp(torch.where(cached, _NEG_INF, lsm), 1)
            soft = soft + _xlogy_terms(lq_b, log_pb)
        soft = soft * self._t2()
        if self._hard_wanted():
            assert self.target is not None
            hard = ls_rows(s, self.target, False, self.alpha, None)
        else:
            hard = torch.zeros_like(soft)
        total = soft if self.beta == 1.0 else (1.0 - self.beta) * hard + self.beta * soft
        scale = self.scale.to(s.dtype)
        return tuple(where_valid(self.valid, o * scale) for o in (total, hard, soft))

    def run(self, x: Tensor, need_grad: bool) -> tuple[tuple[Tensor, ...], Tensor | None]:
        """One buffer: tempered softmax, then the gradient, in place (module docstring)."""
        dtype = compute_dtype(x)
        temp = self.temperature
        buf = x.detach().to(dtype, copy=True).div_(temp)  # u = z / T: the only (rows, V) buffer
        if self.valid is not None:
            buf.masked_fill_(~self.valid[:, None], 0.0)
        u_cached = buf.gather(1, self.indices)
        lq, lq_b = _teacher_log_q(self.values.to(dtype), temp, self.bucket, self.log_r)
        if self.bucket:
            # the tail against its own maximum, so that its mass never underflows
            # (a confident student's tail can sit 100+ nats below the row maximum)
            buf.scatter_(1, self.indices, _NEG_INF)
            m_t = buf.amax(1)
            m_t = torch.where(m_t == _NEG_INF, 0.0, m_t)  # every tail class masked
            buf.sub_(m_t[:, None]).exp_()  # w = exp(u - m_t) on the tail, 0 where cached
            w_sum = buf.sum(1)
            log_tail = m_t + w_sum.log()
            lse = torch.logaddexp(log_tail, torch.logsumexp(u_cached, 1))
            soft = _xlogy_terms(lq, u_cached - lse[:, None]).sum(1)
            soft = soft + _xlogy_terms(lq_b, log_tail - lse)
        else:
            m = buf.amax(1, keepdim=True)
            buf.sub_(m).exp_()  # e = exp(u - m)
            z = buf.sum(1)
            lse = m[:, 0] + z.log()
            soft = _xlogy_terms(lq, u_cached - lse[:, None]).sum(1)
        soft = soft * self._t2()
        hard = torch.zeros_like(soft)
        hard_wanted = self._hard_wanted()
        if hard_wanted:
            assert self.target is not None
            hard = self._hard_rows(x, dtype, u_cached, lse)
        total = soft if self.beta == 1.0 else (1.0 - self.beta) * hard + self.beta * soft
        scale = self.scale.to(dtype)
        outs = tuple(where_valid(self.valid, o * scale) for o in (total, hard, soft))
        if not need_grad:
            return outs, None
        # soft gradient: T (p - q) scaled by beta, the reduction and the T^2 choice
        factor = scale * (self.beta * self._t2() / temp)
        q = lq.exp()
        if self.bucket:
            # tail: p_i (1 - q_b / P_b) = w_i (exp(m_t - lse) - q_b / w_sum)
            q_b = lq_b.exp()
            buf.mul_((factor * (torch.exp(m_t - lse) - q_b / w_sum))[:, None])
        else:
            buf.mul_((factor / z)[:, None])
        p_cached = torch.exp(u_cached - lse[:, None])
        buf.scatter_(1, self.indices, (p_cached - q) * factor[:, None])
        if hard_wanted and self.beta < 1.0:
            assert self.target is not None
            self._add_hard_grad(buf, x, dtype, scale * (1.0 - self.beta))
        if self.valid is not None:
            buf.masked_fill_(~self.valid[:, None], 0.0)
        return outs, buf.to(x.dtype)

    def _hard_rows(self, x: Tensor, dtype: torch.dtype, u_cached: Tensor, lse: Tensor) -> Tensor:
        """Per-row cross-entropy with the labels at T = 1, label-smoothed by ``alpha``.

        ``(1 - alpha) (lse - z_y) + alpha / V * sum_{finite k} (lse - z_k)``: the
        smoothing term from the finite classes' count and sum (a ``-inf`` class
        takes no smoothing mass), with one logits-sized temporary at most.
        """
        assert self.target is not None
        xd = x.detach()
        z_y = xd.gather(1, self.target[:, None])[:, 0].to(dtype)
        lse1 = lse if self.temperature == 1.0 else torch.logsumexp(xd.to(dtype), 1)
        hard = lse1 - z_y
        if not self.alpha:
            return hard
        finite = xd != _NEG_INF
        count = finite.sum(1, dtype=dtype)
        total = torch.where(finite, xd, 0.0).sum(1, dtype=dtype)
        smooth = (count * lse1 - total) / xd.shape[1]
        return (1.0 - self.alpha) * hard + self.alpha * smooth

    def _add_hard_grad(self, buf: Tensor, x: Tensor, dtype: torch.dtype, factor: Tensor) -> None:
        """`buf += factor * (softmax(x) - y_LS)`; a second buffer while it runs.

        `y_LS = (1 - alpha) onehot(target) + alpha / V` on the finite classes.
        """
        assert self.target is not None
        xd = x.detach()
        p1 = torch.softmax(xd, 1, dtype=dtype)
        p1.scatter_add_(1, self.target[:, None], torch.full_like(p1[:, :1], self.alpha - 1.0))
        if self.alpha:
            p1.sub_(self.alpha / xd.shape[1])
            p1.masked_fill_(xd == _NEG_INF, 0.0)  # outside the support: no target mass
        buf.add_(p1.mul_(factor[:, None]))


def flatten_teacher(teacher: TopKTeacher, logits: Tensor, dim: int) -> FlatTeacher:
    """Check a cached teacher against `logits` (class dim `dim`); return it as `(rows, k)`.

    Returns int64 indices, values in the logits' compute dtype, whether a
    bucket applies (`tail="bucket"` and k < V) and the bucket's cached log-mass.
    Checks the indices' range and distinctness and a log-probability teacher's
    mass: on the CPU by reading them, on an accelerator by device-side
    assertions (no host synchronisation); not while tracing.
    """
    described = f"the student logits' shape {tuple(logits.shape)} with k classes at dim {dim}"
    return flatten_cached(
        teacher,
        tuple(logits.shape),
        dim,
        logits.device,
        compute_dtype(logits),
        described=described,
        other="student_logits",
    )


def flatten_cached(
    teacher: TopKTeacher,
    shape: tuple[int, ...],
    dim: int,
    device: torch.device,
    dtype: torch.dtype,
    *,
    described: str,
    other: str,
) -> FlatTeacher:
    """`flatten_teacher` for students of logits ``shape`` (class dim ``dim``) on ``device``.

    ``described`` words the expected shape; ``other`` names the student's argument.
    """
    num_classes = shape[dim]
    expected = (*shape[:dim], "k", *shape[dim + 1 :])
    idx = teacher.indices
    if idx.dim() != len(shape) or any(
        a != b for i, (a, b) in enumerate(zip(idx.shape, shape, strict=True)) if i != dim
    ):
        raise ValueError(
            f"teacher.indices must have shape {expected} ({described}), got {tuple(idx.shape)}"
        )
    k = idx.shape[dim]
    if not 1 <= k <= num_classes:
        raise ValueError(f"teacher must cache 1 to {num_classes} classes per row, got k={k}")
    if idx.device != device:
        raise ValueError(f"teacher is on {idx.device} but {other} is on {device}")
    flat = idx.movedim(dim, -1).reshape(-1, k).long()
    values = teacher.values.detach().movedim(dim, -1).reshape(-1, k).to(dtype)
    if flat.numel() and not tracing_or_transforming():
        _check_cached(teacher, flat, values, num_classes)
    bucket = teacher.tail == "bucket" and k < num_classes
    log_r = None
    r = teacher.residual
    if r is not None:
        want = (*idx.shape[:dim], 1, *idx.shape[dim + 1 :])
        if tuple(r.shape) != want:
            raise ValueError(
                f"teacher.residual must have shape {want} (the indices' shape with the class "
                f"dim {dim} of size 1), got {tuple(r.shape)}"
            )
        log_r = r.detach().movedim(dim, -1).reshape(-1).to(dtype) if bucket else None
        if log_r is not None and log_r.numel() and not tracing_or_transforming():
            _check_residual(log_r)
    return FlatTeacher(flat, values, bucket, log_r)


class FlatTeacher(NamedTuple):
    """A cached teacher as ``(rows, k)`` tensors (see `flatten_cached`)."""

    indices: Tensor
    values: Tensor
    bucket: bool
    log_r: Tensor | None


def _check_residual(log_r: Tensor) -> None:
    """A cached log-mass is a log-probability: at most 0 (read on the CPU, asserted elsewhere)."""
    message = "teacher.residual must hold log-probabilities (<= 0): the log of a mass"
    tol = 1e-4 if log_r.dtype != torch.float64 else 1e-9
    if log_r.device.type != "cpu":
        torch._assert_async(~(log_r > tol).any(), message)
    elif bool((log_r > tol).any()):
        raise ValueError(f"{message}, got {float(log_r.max()):.4g}")


def _check_cached(teacher: TopKTeacher, flat: Tensor, values: Tensor, num_classes: int) -> None:
    """Range, distinctness and (for log-probabilities) mass of the cached classes.

    On the CPU the checks read values (free there) and raise a `ValueError`; on
    an accelerator they are device-side assertions, with no host synchronisation.
    """
    k = flat.shape[1]
    out_of_range = (flat < 0) | (flat >= num_classes)
    repeated = (flat.sort(1).values.diff(dim=1) == 0) if k > 1 else None
    logprobs = teacher.kind == "logprobs"
    mass = torch.logsumexp(values, 1) if logprobs else None
    range_msg = f"teacher.indices contains a class index outside [0, {num_classes - 1}]"
    repeat_msg = "teacher.indices repeats a class within a row; cache distinct classes"
    value_msg = "teacher.values must be log-probabilities (<= 0) with kind='logprobs'"
    mass_msg = (
        "teacher.values with kind='logprobs' hold more than the whole probability mass "
        "in a row (the cached exp(values) sum above 1)"
    )
    tol = 1e-4 if values.dtype != torch.float64 else 1e-9
    if flat.device.type != "cpu":
        torch._assert_async(~out_of_range.any(), range_msg)
        if repeated is not None:
            torch._assert_async(~repeated.any(), repeat_msg)
        if mass is not None:
            torch._assert_async(~(values > tol).any(), value_msg)
            torch._assert_async(~(mass > tol).any(), mass_msg)
        return
    if bool(out_of_range.any()):
        bad = int(flat[out_of_range][0])
        raise ValueError(f"{range_msg}: {bad}")
    if repeated is not None and bool(repeated.any()):
        raise ValueError(repeat_msg)
    if mass is not None:
        if bool((values > tol).any()):
            raise ValueError(f"{value_msg}, got a value of {float(values.max()):.4g}")
        if bool((mass > tol).any()):
            raise ValueError(f"{mass_msg}: their log-sum is {float(mass.max()):.4g}")
