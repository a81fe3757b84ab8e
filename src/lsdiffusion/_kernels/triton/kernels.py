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
        x0 = tl.load(x_row).to(ACC)
        ref = tl.where(x0 == float("-inf"), 0.0, x0)
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
    t_lin = tl.zeros((), ACC)  # probs: sum of t w (x - ref)
    t_sum = tl.zeros((), ACC)  # probs: sum of t w
    for off in range(0, K, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < K
        x = tl.load(x_row + cols, mask=mask, other=float("-inf")).to(ACC)
        m, s = _online(m, s, x)
        finite = mask & (x != float("-inf"))
        wv = tl.full((BLOCK,), 1.0, ACC)
        if HAS_WEIGHT:
            wv = tl.load(w_ptr + cols, mask=mask, other=0.0).to(ACC)
        lin += tl.sum(tl.where(finite, wv * (x - ref), 0.0), 0)
        wfin += tl.sum(tl.where(finite, wv, 0.0), 0)
        if PROBS:
            t = tl.load(t_ptr + row * t_stride + cols, mask=mask, other=0.0).to(ACC)
            tw = t * wv
            t_lin += tl.sum(tl.where(tw == 0.0, 0.0, tw * (x - ref)), 0)
            t_sum += tl.sum(tw, 0)

    lse = _lse(m, s)
    if PROBS:
        hard_mass = (1.0 - alpha) * t_sum
        linear = (1.0 - alpha) * t_lin + smooth * lin
    else:
        hard_mass = (1.0 - alpha) * w_y
        hard_lin = tl.where(hard_mass == 0.0, 0.0, hard_mass * (x_y - ref))
        linear = hard_lin + smooth * lin
    total = hard_mass + smooth * wfin
    loss = total * (lse - ref) - linear
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
    # sums of differences are taken against fixed references near the row's values
    # (its first finite logits), so a large common offset of either model costs no digits
    s0 = tl.load(s_row).to(ACC) * inv_t
    t0 = tl.load(t_row).to(ACC) * inv_t
    ref_a = tl.where(s0 == float("-inf"), 0.0, s0)
    ref_b = tl.where(t0 == float("-inf"), 0.0, t0)
    d = tl.zeros((), ACC)  # sum e^(b - m_b) ((b - ref_b) - (a - ref_a)), rescaled as m_b grows
    m_1 = tl.full((), float("-inf"), ACC)
    z_1 = tl.zeros((), ACC)
    for off in range(0, K, BLOCK):
        cols = off + tl.arange(0, BLOCK)
        mask = cols < K
        s = tl.load(s_row + cols, mask=mask, other=float("-inf")).to(ACC)
        t = tl.load(t_row + cols, mask=mask, other=float("-inf")).to(ACC)
        a = s * inv_t
        b = t * inv_t
        m_a, z_a = _online(m_a, z_a, a)
        m_b_new = tl.maximum(m_b, tl.max(b, 0))
        m_b_safe = tl.where(m_b_new == float("-inf"), 0.0, m_b_new)
        rescale = tl.exp(m_b - m_b_safe)
        e_b = tl.exp(b - m_b_safe)
        z_b = z_b * rescale + tl.sum(e_b, 0)
        diff = (b - ref_b) - (a - ref_a)
        d = d * rescale + tl.sum(tl.where(t == float("-inf"), 0.0, e_b * diff), 0)
        m_b = m_b_new
        if HAS_TARGET:
            if not UNIT_T:
                m_1, z_1 = _online(m_1, z_1, s)

    kl = d / z_b - _lse_from(m_b, z_b, ref_b) + _lse_from(m_a, z_a, ref_a)
    soft = factor * kl
    hard = tl.zeros((), ACC)
    if HAS_TARGET:
        if UNIT_T:
            hard = _lse(m_a, z_a) - s_y
        else:
            hard = _lse(m_1, z_1) - s_y
    total = beta * soft
    if HAS_TARGET:
        total = tl.where(beta < 1.0, total + (1.0 - beta) * hard, total)
    ok = valid != 0
    tl.store(loss_ptr + row, tl.where(ok, total * scale, 0.0))
    if TERMS:
        tl.store(hard_ptr + row, tl.where(ok, hard * scale, 0.0))
        tl.store(soft_ptr + row, tl.where(ok, soft * scale, 0.0))

    if WRITE_GRAD:
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
            p_s = tl.exp(s * inv_t - m_a_safe) * inv_za
            p_t = tl.exp(t * inv_t - m_b_safe) * inv_zb
            g = g_soft * (p_s - p_t)
            if HAS_TARGET:
                if UNIT_T:
                    p_1 = p_s
                else:
                    p_1 = tl.exp(s - m_1_safe) * inv_z1
                g += g_hard * (p_1 - tl.where(cols == y, 1.0, 0.0))
            g = tl.where(ok, g, 0.0)
            tl.store(g_row + cols, g.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def scale_kernel(g_ptr, upstream_ptr, n, BLOCK: tl.constexpr):
    """``g *= upstream`` in place; programs return at once when the upstream is 1."""
    up = tl.load(upstream_ptr).to(tl.float32)
    if up != 1.0:
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
        tl.store(g_ptr + offs, (g * up).to(g_ptr.dtype.element_ty), mask=mask)
