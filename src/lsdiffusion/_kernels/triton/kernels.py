r"""The Triton kernels: one program per row, an online softmax, loss and gradient together.

Imported only when the Triton backend is used (``import triton`` is heavy and
optional). Under ``TRITON_INTERPRET=1`` the same kernels run on CPU tensors
through Triton's interpreter, which is how the test suite checks them without
a GPU; the environment variable must be set before this module is imported.

Each program makes two passes over its row. The first keeps a running
maximum and a running, rescaled sum of exponentials (the online softmax) and
the linear terms the loss needs; the second writes the gradient. On a GPU the
second pass mostly hits the L2 cache, so the logits are read from memory about
once and the gradient written once.

Conventions (the eager engine's): a class whose logit is exactly ``-inf`` is
outside the support; a row with no finite logit (or, for KD, no finite teacher
logit) has a NaN loss and NaN gradient; ignored rows (``valid == 0``) give a
zero loss and an exactly zero gradient.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _online(m, s, x):
    """Fold the block ``x`` into the running max ``m`` and rescaled sum ``s``."""
    m_new = tl.maximum(m, tl.max(x, 0))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), 0)
    return m_new, s


@triton.jit
def _lse(m, s):
    """log-sum-exp from the online state; NaN when no logit was finite."""
    return tl.where(m == float("-inf"), float("nan"), m + tl.log(s))


@triton.jit
def _lse_from(m, s, ref):
    """log-sum-exp minus ``ref`` (a value near the row's), NaN when no logit was finite."""
    return tl.where(m == float("-inf"), float("nan"), (m - ref) + tl.log(s))


@triton.jit
def _log1p(u):
    """``log(1 + u)`` to a few ulps for small ``u`` (``triton.language`` has no log1p).

    The classic correction: ``w = 1 + u`` rounds, and ``u / (w - 1)`` undoes
    that rounding's effect on the log.
    """
    w = 1.0 + u
    return tl.where(w == 1.0, u, tl.log(w) * (u / (w - 1.0)))


@triton.jit
def _settle(ref, x):
    """``ref`` once set; until then (``-inf``) the max of the block ``x``.

    A row's reference point is the max of its first block holding a finite
    logit, so that rows whose leading classes are ``-inf`` (a masked
    vocabulary) still sum differences of nearby values at any offset. The
    blocks before it hold only ``-inf`` logits, which add nothing to any sum.
    """
    return tl.where(ref == float("-inf"), tl.max(x, 0), ref)


@triton.jit
def _safe(ref):
    """A settled reference, or 0 while every logit so far was ``-inf``."""
    return tl.where(ref == float("-inf"), 0.0, ref)


@triton.jit
def ls_kernel(
    x_ptr,
    x_stride,
    y_ptr,
    t_ptr,
    t_stride,
    w_ptr,
    scale_ptr,
    valid_ptr,
    loss_ptr,
    grad_ptr,
    grad_stride,
    K,
    params_ptr,
    HAS_WEIGHT: tl.constexpr,
    PROBS: tl.constexpr,
    HAS_VALID: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """Label-smoothing cross-entropy of one row, and its gradient if ``WRITE_GRAD``.

    ``params`` holds ``[alpha]`` in the compute dtype (a float argument would be float32).
    """
    # Long on purpose: a @triton.jit kernel is one program (helpers are inlined @triton.jit
    # functions already); splitting it would add launches and re-reads.
    alpha = tl.load(params_ptr).to(ACC)
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * x_stride
    scale = tl.load(scale_ptr + row).to(ACC)
    valid = 1
    if HAS_VALID:
        valid = tl.load(valid_ptr + row).to(tl.int32)
    smooth = alpha / K
    if PROBS:
        y = -1
        ref = tl.full((), float("-inf"), ACC)  # settled on the first finite block
        w_y = tl.zeros((), ACC)
        x_y = tl.zeros((), ACC)
    else:
        y = tl.load(y_ptr + row).to(tl.int64)
        x_y = tl.load(x_row + y).to(ACC)
        ref = tl.where(x_y == float("-inf"), 0.0, x_y)
        w_y = tl.full((), 1.0, ACC)
        if HAS_WEIGHT:
            w_y = tl.load(w_ptr + y).to(ACC)

    m = tl.full((), float("-inf"), ACC)
    s = tl.zeros((), ACC)
    lin = tl.zeros((), ACC)  # sum over finite classes of w (x - ref)
    wfin = tl.zeros((), ACC)  # sum over finite classes of w
    t_lin = tl.zeros((), ACC)  # probs: sum of (1 - alpha) t w (x - ref)
    t_sum = tl.zeros((), ACC)  # probs: sum of (1 - alpha) t w
    for off in range(0, K, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < K
        x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(ACC)
        if PROBS:
            ref = _settle(ref, x)
        ref_x = _safe(ref)
        m, s = _online(m, s, x)
        finite = mask & (x != float("-inf"))
        wv = tl.full((BLOCK,), 1.0, ACC)
        if HAS_WEIGHT:
            wv = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
        lin += tl.sum(tl.where(finite, wv * (x - ref_x), 0.0), 0)
        wfin += tl.sum(tl.where(finite, wv, 0.0), 0)
        if PROBS:
            t = tl.load(t_ptr + row * t_stride + cols, mask=mask, other=0.0).to(ACC)
            # the hard coefficient (1 - alpha) t w, zero where it carries no mass (alpha = 1
            # included), so that a -inf class holding target mass adds 0, not 0 * -inf
            tw = (1.0 - alpha) * t * wv
            t_lin += tl.sum(tl.where(tw == 0.0, 0.0, tw * (x - ref_x)), 0)
            t_sum += tl.sum(tw, 0)

    # log-sum-exp relative to ref: m + log s would round at the offset's magnitude
    ref = _safe(ref)
    lse_ref = _lse_from(m, s, ref)
    if PROBS:
        hard_mass = t_sum
        linear = t_lin + smooth * lin
    else:
        hard_mass = (1.0 - alpha) * w_y
        hard_lin = tl.where(hard_mass == 0.0, 0.0, hard_mass * (x_y - ref))
        linear = hard_lin + smooth * lin
    total = hard_mass + smooth * wfin
    loss = total * lse_ref - linear
    loss = tl.where(valid != 0, loss * scale, 0.0)
    tl.store(loss_ptr + row, loss)

    if WRITE_GRAD:
        m_safe = tl.where(m == float("-inf"), 0.0, m)
        inv_s = 1.0 / s
        g_row = grad_ptr + row * grad_stride
        for off in range(0, K, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            mask = cols < K
            x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(ACC)
            wv = tl.full((BLOCK,), 1.0, ACC)
            if HAS_WEIGHT:
                wv = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
            p = tl.exp(x - m_safe) * inv_s
            p = tl.where(m == float("-inf"), float("nan"), p)
            c = tl.where(x == float("-inf"), 0.0, smooth * wv)
            if PROBS:
                t = tl.load(t_ptr + row * t_stride + cols, mask=mask, other=0.0).to(ACC)
                c += (1.0 - alpha) * t * wv
            else:
                c += tl.where(cols == y, hard_mass, 0.0)
            g = scale * (total * p - c)
            g = tl.where(valid != 0, g, 0.0)
            tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def kd_kernel(
    s_ptr,
    s_stride,
    t_ptr,
    t_stride,
    y_ptr,
    scale_ptr,
    valid_ptr,
    loss_ptr,
    hard_ptr,
    soft_ptr,
    grad_ptr,
    grad_stride,
    K,
    params_ptr,
    HAS_TARGET: tl.constexpr,
    UNIT_T: tl.constexpr,
    HAS_VALID: tl.constexpr,
    WRITE_GRAD: tl.constexpr,
    TERMS: tl.constexpr,
    BLOCK: tl.constexpr,
    ACC: tl.constexpr,
):
    """T²·KL(p_t^T || p_s^T), optionally mixed with the hard term; gradient if asked.

    ``params`` holds ``[1 / T, factor (T² or 1), beta]`` in the compute dtype.
    """
    # Long on purpose: a @triton.jit kernel is one program (helpers are inlined @triton.jit
    # functions already); splitting it would add launches and re-reads.
    inv_t = tl.load(params_ptr).to(ACC)
    factor = tl.load(params_ptr + 1).to(ACC)
    beta = tl.load(params_ptr + 2).to(ACC)
    row = tl.program_id(0).to(tl.int64)
    s_row = s_ptr + row * s_stride
    t_row = t_ptr + row * t_stride
    scale = tl.load(scale_ptr + row).to(ACC)
    valid = 1
    if HAS_VALID:
        valid = tl.load(valid_ptr + row).to(tl.int32)
    y = -1
    s_y = tl.zeros((), ACC)
    if HAS_TARGET:
        y = tl.load(y_ptr + row).to(tl.int64)
        s_y = tl.load(s_row + y).to(ACC)

    m_a = tl.full((), float("-inf"), ACC)
    z_a = tl.zeros((), ACC)
    m_b = tl.full((), float("-inf"), ACC)
    z_b = tl.zeros((), ACC)
    # The logits are shifted by a reference near the row's values (raw logits, settled
    # on the first block holding a finite one) before they are scaled by 1/T, so a large
    # common offset of either model costs no digits: a = (s - ref_s) / T, b likewise.
    ref_s = tl.full((), float("-inf"), ACC)
    ref_t = tl.full((), float("-inf"), ACC)
    d = tl.zeros((), ACC)  # sum e^(b - m_b) (b - a), rescaled as m_b grows
    # sum (e^a - e^b), both in the scale of the running max of a and b: the log-sums
    # are then taken as log1p(D / S_t), which keeps the digits at high T (see kd_loss)
    m_c = tl.full((), float("-inf"), ACC)
    dd = tl.zeros((), ACC)
    m_1 = tl.full((), float("-inf"), ACC)
    z_1 = tl.zeros((), ACC)
    for off in range(0, K, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < K
        s = tl.load(s_row + cols, mask=mask, other=float("-inf")).to(ACC)
        t = tl.load(t_row + cols, mask=mask, other=float("-inf")).to(ACC)
        ref_s = _settle(ref_s, s)
        ref_t = _settle(ref_t, t)
        a = (s - _safe(ref_s)) * inv_t
        b = (t - _safe(ref_t)) * inv_t
        m_a_new = tl.maximum(m_a, tl.max(a, 0))
        m_a_safe = _safe(m_a_new)
        e_a = tl.exp(a - m_a_safe)
        z_a = z_a * tl.exp(m_a - m_a_safe) + tl.sum(e_a, 0)
        m_b_new = tl.maximum(m_b, tl.max(b, 0))
        m_b_safe = _safe(m_b_new)
        rescale = tl.exp(m_b - m_b_safe)
        e_b = tl.exp(b - m_b_safe)
        z_b = z_b * rescale + tl.sum(e_b, 0)
        d = d * rescale + tl.sum(tl.where(t == float("-inf"), 0.0, e_b * (b - a)), 0)
        m_c_new = tl.maximum(m_c, tl.maximum(m_a_new, m_b_new))
        m_c_safe = _safe(m_c_new)
        f_a = tl.exp(m_a_safe - m_c_safe)
        f_b = tl.exp(m_b_safe - m_c_safe)
        dd = dd * tl.exp(m_c - m_c_safe) + tl.sum(e_a * f_a - e_b * f_b, 0)
        m_a = m_a_new
        m_b = m_b_new
        m_c = m_c_new
        if HAS_TARGET:
            if not UNIT_T:
                m_1, z_1 = _online(m_1, z_1, s - _safe(ref_s))

    rs = _safe(ref_s)
    # log(S_s / S_t), S_t = z_b e^(m_b - m_c) in the common scale; when the teacher's
    # scale is far below the student's (no cancellation then) the two log-sums apart
    gap = m_c - m_b
    s_t = z_b * tl.exp(_safe(m_b) - _safe(m_c))
    log_ratio = tl.where(gap < 30.0, _log1p(dd / s_t), _lse(m_a, z_a) - _lse(m_b, z_b))
    # a row with no finite student or teacher logit has no distribution: NaN
    log_ratio = tl.where((m_a == float("-inf")) | (m_b == float("-inf")), float("nan"), log_ratio)
    kl = d / z_b + log_ratio
    soft = factor * kl
    hard = tl.zeros((), ACC)
    if HAS_TARGET:
        # -log p_y at T = 1, relative to the reference (exact at any offset)
        if UNIT_T:
            hard = _lse_from(m_a, z_a, s_y - rs)
        else:
            hard = _lse_from(m_1, z_1, s_y - rs)
    total = beta * soft
    if HAS_TARGET:
        total = tl.where(beta < 1.0, total + (1.0 - beta) * hard, total)
    ok = valid != 0
    tl.store(loss_ptr + row, tl.where(ok, total * scale, 0.0))
    if TERMS:
        tl.store(hard_ptr + row, tl.where(ok, hard * scale, 0.0))
        tl.store(soft_ptr + row, tl.where(ok, soft * scale, 0.0))

    if WRITE_GRAD:
        rt = _safe(ref_t)
        m_a_safe = tl.where(m_a == float("-inf"), 0.0, m_a)
        m_b_safe = tl.where(m_b == float("-inf"), 0.0, m_b)
        m_1_safe = tl.where(m_1 == float("-inf"), 0.0, m_1)
        # an empty distribution (no finite logit) gives NaN, as the loss does
        inv_za = tl.where(m_a == float("-inf"), float("nan"), 1.0 / z_a)
        inv_zb = tl.where(m_b == float("-inf"), float("nan"), 1.0 / z_b)
        inv_z1 = tl.where(m_1 == float("-inf"), float("nan"), 1.0 / z_1)
        g_soft = scale * beta * factor * inv_t
        g_hard = scale * (1.0 - beta)
        g_row = grad_ptr + row * grad_stride
        for off in range(0, K, BLOCK):
            cols = off + tl.arange(0, BLOCK)
            mask = cols < K
            s = tl.load(s_row + cols, mask=mask, other=float("-inf")).to(ACC)
            t = tl.load(t_row + cols, mask=mask, other=float("-inf")).to(ACC)
            p_s = tl.exp((s - rs) * inv_t - m_a_safe) * inv_za
            p_t = tl.exp((t - rt) * inv_t - m_b_safe) * inv_zb
            g = g_soft * (p_s - p_t)
            if HAS_TARGET:
                if UNIT_T:
                    p_1 = p_s
                else:
                    p_1 = tl.exp((s - rs) - m_1_safe) * inv_z1
                g += g_hard * (p_1 - tl.where(cols == y, 1.0, 0.0))
            g = tl.where(ok, g, 0.0)
            tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def scale_kernel(g_ptr, upstream_ptr, n, BLOCK: tl.constexpr, ACC: tl.constexpr):
    """``g *= upstream`` in place, in ``ACC``; programs return at once when the upstream is 1."""
    up = tl.load(upstream_ptr).to(ACC)
    if up != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask).to(ACC)
        tl.store(g_ptr + offs, (g * up).to(g_ptr.dtype.element_ty), mask=mask)
