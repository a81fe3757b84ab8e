"""fused_linear_kd_loss against the unfused loss on materialised logits.

Every equivalence test runs on both chunk backends: the eager engine and the
Triton kernels (under ``TRITON_INTERPRET=1`` on the CPU, set in conftest.py:
the path ``backend="auto"`` takes for CUDA tensors).
"""

from __future__ import annotations

import gc
import warnings

import pytest
import torch

from _devices import BACKEND_DEVICE, HAS_TRITON, TRITON_DEVICE
from _memory import peak_bytes
from _reference import kd_reference
from lsdiffusion import (
    FusedLinearKDLoss,
    TopKTeacher,
    fused_linear_kd_loss,
    fused_linear_label_smoothing_loss,
    kd_loss,
    label_smoothing_loss,
)
from lsdiffusion._kernels import select
from lsdiffusion._kernels.chunked import fused_linear as fl

T = 2.0
# the interpreter evaluates masked-out lanes too (exp(-inf - -inf) and the like)
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")


def make(
    dtype=torch.float64, shape=(23,), h=6, ht=9, v=11, bias=True, seed=0, ignore=True, device="cpu"
):
    g = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype)

    hs = rand(*shape, h).requires_grad_()
    ws = rand(v, h).requires_grad_()
    bs = rand(v).requires_grad_() if bias else None
    h_t, w_t = rand(*shape, ht), rand(v, ht)
    b_t = rand(v) if bias else None
    y = torch.randint(0, v, shape, generator=g)
    if ignore:
        y.view(-1)[::4] = -100
    return hs, ws, bs, h_t, w_t, b_t, y.to(device)


def unfused(hs, ws, bs, h_t, w_t, b_t, y, beta, alpha, reduction, t2=True):
    s = hs @ ws.T if bs is None else hs @ ws.T + bs
    t = h_t @ w_t.T if b_t is None else h_t @ w_t.T + b_t
    rows = beta * kd_loss(s, t, T, target=y, t2_scaling=t2, reduction="none", dim=-1)
    if beta < 1:
        rows = rows + (1 - beta) * label_smoothing_loss(s, y, alpha, reduction="none", dim=-1)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / (y != -100).sum().clamp_min(1)


def grads(out, params, upstream):
    params = [p for p in params if p is not None]
    return torch.autograd.grad(out, params, upstream)


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
@pytest.mark.parametrize(("beta", "alpha"), [(1.0, 0.0), (0.3, 0.0), (0.3, 0.2), (0.0, 0.1)])
@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("shape", [(23,), (3, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_unfused_in_float64(reduction, beta, alpha, chunk_size, shape, bias, backend):
    hs, ws, bs, h_t, w_t, b_t, y = make(shape=shape, bias=bias, device=BACKEND_DEVICE[backend])
    ours = fused_linear_kd_loss(
        hs, ws, h_t, w_t, T, student_bias=bs, teacher_bias=b_t, target=y,
        beta=beta, alpha=alpha, reduction=reduction, chunk_size=chunk_size, backend=backend,
    )  # fmt: skip
    ref = unfused(hs, ws, bs, h_t, w_t, b_t, y, beta, alpha, reduction)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.rand_like(ref) + 0.5
    for a, b in zip(
        grads(ours, (hs, ws, bs), upstream), grads(ref, (hs, ws, bs), upstream), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_matches_unfused_in_float32(backend):
    hs, ws, bs, h_t, w_t, b_t, y = make(
        torch.float32, shape=(64,), h=16, ht=24, v=50, device=BACKEND_DEVICE[backend]
    )
    for t2 in (True, False):
        ours = fused_linear_kd_loss(
            hs, ws, h_t, w_t, T, student_bias=bs, teacher_bias=b_t, target=y, beta=0.5,
            alpha=0.1, t2_scaling=t2, chunk_size=7, backend=backend,
        )  # fmt: skip
        ref = unfused(hs, ws, bs, h_t, w_t, b_t, y, 0.5, 0.1, "batchmean", t2=t2)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
        for a, b in zip(
            grads(ours, (hs, ws, bs), None), grads(ref, (hs, ws, bs), None), strict=True
        ):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_without_target_and_teacher_gets_no_gradient():
    hs, ws, _bs, h_t, w_t, _b_t, _ = make()
    w_t.requires_grad_()
    h_t.requires_grad_()
    loss = fused_linear_kd_loss(hs, ws, h_t, w_t, T, chunk_size=4)
    torch.testing.assert_close(loss, kd_loss(hs @ ws.T, h_t @ w_t.T, T), rtol=1e-10, atol=1e-10)
    loss.backward()
    assert w_t.grad is None
    assert h_t.grad is None
    assert hs.grad is not None


def test_ignored_tokens_never_reach_the_matmul(monkeypatch):
    rows = []
    original = fl._logits

    def spy(h, w, b):
        rows.append(h.shape[0])
        return original(h, w, b)

    monkeypatch.setattr(fl, "_logits", spy)
    hs, ws, _bs, h_t, w_t, _b_t, y = make()
    fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y, chunk_size=4).backward()
    n_valid = int((y != -100).sum())
    assert sum(rows) == 2 * n_valid  # student and teacher logits of the kept tokens only


def test_all_ignored_gives_zero_and_zero_gradients(backend):
    hs, ws, bs, h_t, w_t, _b_t, y = make(device=BACKEND_DEVICE[backend])
    y.fill_(-100)
    loss = fused_linear_kd_loss(
        hs, ws, h_t, w_t, T, student_bias=bs, target=y, beta=0.5, backend=backend
    )
    loss.backward()
    assert loss.item() == 0.0
    for p in (hs, ws, bs):
        assert p.grad is not None
        assert torch.count_nonzero(p.grad) == 0


def test_default_budget_is_a_floor_or_a_fifth_of_the_logits():
    mib = 2**20
    assert fl.budget_bytes(100, 1000, torch.float32) == fl.DEFAULT_BUDGET_BYTES
    big = fl.budget_bytes(4096, 32000, torch.float32)
    assert big == int(0.2 * 4096 * 32000 * 4)
    assert big > 64 * mib
    assert fl.budget_bytes(16384, 128000, torch.bfloat16) == int(0.2 * 16384 * 128000 * 2)
    assert fl.chunk_rows(1000, 10_500) == 10
    assert fl.chunk_rows(10**9, 1) == 1  # always at least one row


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_half_heads_accumulate_in_float32_only_within_the_budget(dtype):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 8, generator=g).to(dtype)
    student = fl.Head(torch.randn(32, 8, generator=g).to(dtype), w, None)
    y = torch.zeros(32, dtype=torch.long)
    from lsdiffusion._kernels.chunked.losses import LSChunks

    loss = LSChunks(target=y, alpha=0.1, weight=None, backend="eager", fallback=False)
    _, acc = fl.plan(student, loss, None, need_w=True)
    assert acc == torch.float32  # a small head: its float32 accumulator fits
    w_big = torch.empty(2**22, 8, dtype=dtype, device="meta")  # 128 MiB in float32
    huge = fl.Head(student.hidden.to("meta"), w_big, None)
    _, acc = fl.plan(huge, loss, None, need_w=True)
    assert acc == (torch.float32 if dtype == torch.float32 else dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_hidden_states_and_weights(dtype):
    hs, ws, bs, h_t, w_t, _b_t, y = make(dtype, shape=(40,), h=16, ht=16, v=30)
    loss = fused_linear_kd_loss(
        hs, ws, h_t, w_t, T, student_bias=bs, target=y, beta=0.5, chunk_size=9
    )
    assert loss.dtype == torch.float32
    ref = unfused(hs, ws, bs, h_t, w_t, None, y, 0.5, 0.0, "batchmean")
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    g_ours = grads(loss, (hs, ws, bs), None)
    g_ref = grads(ref, (hs, ws, bs), None)
    for a, b in zip(g_ours, g_ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=5e-2, atol=5e-3)


def test_float16_gradient_survives_a_grad_scaler_scale():
    hs, ws, _bs, h_t, w_t, _b_t, y = make(torch.float16, shape=(200,), h=8, ht=8, v=20)
    loss = fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y)
    (g,) = torch.autograd.grad(loss * 65536.0, ws)
    w64 = ws.detach().double().requires_grad_()
    ref = unfused(
        hs.double(), w64, None, h_t.double(), w_t.double(), None, y, 1.0, 0.0, "batchmean"
    )
    (g_ref,) = torch.autograd.grad(ref * 65536.0, w64)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.double(), g_ref, rtol=2e-2, atol=2.0)


def test_autocast_matches_unfused_under_autocast():
    hs, ws, bs, h_t, w_t, b_t, y = make(torch.float32, shape=(32,), h=16, ht=16, v=24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = fused_linear_kd_loss(
            hs, ws, h_t, w_t, T, student_bias=bs, teacher_bias=b_t, target=y
        )
        ref = kd_loss(hs @ ws.T + bs, h_t @ w_t.T + b_t, T, target=y)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ref, rtol=2e-2, atol=2e-2)
    loss.backward()
    assert ws.grad is not None
    assert ws.grad.dtype == torch.float32


def test_higher_order_modes():
    hs, ws, _bs, h_t, w_t, _b_t, y = make(shape=(9,), h=4, ht=5, v=6)

    def fused(h, w):
        return fused_linear_kd_loss(h, w, h_t, w_t, T, target=y, beta=0.5, alpha=0.1, chunk_size=4)

    def ref(h, w):
        return unfused(h, w, None, h_t, w_t, None, y, 0.5, 0.1, "batchmean")

    assert torch.autograd.gradgradcheck(fused, (hs, ws))
    h0, w0 = hs.detach(), ws.detach()
    torch.testing.assert_close(
        torch.func.grad(fused, argnums=(0, 1))(h0, w0),
        torch.func.grad(ref, argnums=(0, 1))(h0, w0),
        rtol=1e-10,
        atol=1e-10,
    )
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(h0, w0), ref(h0, w0), rtol=1e-10, atol=1e-10)


def test_module_equals_function():
    hs, ws, bs, h_t, w_t, b_t, y = make(shape=(2, 5))
    module = FusedLinearKDLoss(T, beta=0.4, alpha=0.1, reduction="sum", chunk_size=3)
    torch.testing.assert_close(
        module(hs, ws, h_t, w_t, y, student_bias=bs, teacher_bias=b_t),
        fused_linear_kd_loss(
            hs, ws, h_t, w_t, T, student_bias=bs, teacher_bias=b_t, target=y, beta=0.4,
            alpha=0.1, reduction="sum", chunk_size=3,
        ),
    )  # fmt: skip
    for part in ("temperature=2.0", "alpha=0.1", "chunk_size=3", "reduction='sum'"):
        assert part in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"beta": 0.5}, ValueError, "needs target"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"reduction": "mean"}, ValueError, "batchmean"),
        ({"alpha": 2.0}, ValueError, "alpha must be in"),
        ({"student_bias": torch.zeros(3)}, ValueError, r"student_bias must be a \(11,\) tensor"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    hs, ws, _, h_t, w_t, _, _ = make(bias=False)
    with pytest.raises(error, match=match):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, **kwargs)


def test_bad_shapes():
    hs, ws, _, h_t, w_t, _, y = make(bias=False)
    with pytest.raises(ValueError, match="same vocabulary"):
        fused_linear_kd_loss(hs, ws, h_t, w_t[:5], T)
    with pytest.raises(ValueError, match=r"H = 6 \(the hidden size\)"):
        fused_linear_kd_loss(hs, ws[:, :4], h_t, w_t, T)
    with pytest.raises(ValueError, match="token dims"):
        fused_linear_kd_loss(hs, ws, h_t[:3], w_t, T)
    with pytest.raises(ValueError, match="token shape"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y[:3])
    with pytest.raises(ValueError, match="class index 11, outside"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=torch.full_like(y, 11))


def test_head_dtypes_and_bool_targets_are_checked():
    hs, ws, bs, h_t, w_t, _, y = make()
    with pytest.raises(TypeError, match="student_weight must have the hidden states' dtype"):
        fused_linear_kd_loss(hs, ws.float(), h_t, w_t, T)
    with pytest.raises(TypeError, match="student_bias must have the hidden states' dtype"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, student_bias=bs.float())
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y > 3)


def test_ignored_nan_states_get_zero_gradient_under_transforms():
    hs, ws, _, h_t, w_t, _, y = make(shape=(9,), h=4, ht=5, v=6)
    h0 = hs.detach().clone()
    h0[0] = float("nan")
    y[0] = -100

    def fused(h, w):
        return fused_linear_kd_loss(h, w, h_t, w_t, T, target=y, beta=0.5)

    for g_h, g_w in (
        torch.func.grad(fused, argnums=(0, 1))(h0, ws.detach()),
        torch.autograd.grad(fused(h0.requires_grad_(), ws), (h0, ws)),
    ):
        assert torch.count_nonzero(g_h[0]) == 0
        assert torch.isfinite(g_h).all()
        assert torch.isfinite(g_w).all()


# ---------------------------------------------------------------------------
# issue 16: items 2 and 4
# ---------------------------------------------------------------------------


def _masked_reference(hs, ws, bs, h_t, w_t, b_t, y, temperature, beta, alpha):
    """A float64 re-derivation: the masked classes take no smoothing mass, 0 log 0 = 0.

    The label-smoothing term is written out here (it is this file's only LS
    re-derivation: elsewhere LS is checked against ``F.cross_entropy``, which has
    no masked classes); the KD term is the shared reference.
    """
    s = hs.double() @ ws.double().T + bs.double()
    t = h_t.double() @ w_t.double().T + b_t.double()
    finite = torch.isfinite(s)
    lse = torch.logsumexp(s, 1)
    nll = lse - s.gather(1, y[:, None])[:, 0]
    smooth = torch.where(finite, lse[:, None] - s, 0.0).sum(1) / s.shape[1]
    hard = (1 - alpha) * nll + alpha * smooth
    _, soft = kd_reference(s, t, temperature)
    return ((1 - beta) * hard + beta * soft).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("chunk_size", [4, None])
def test_masked_vocabulary_in_the_bias_with_a_smoothed_hard_term(
    dtype, temperature, chunk_size, backend
):
    """Item 4: a -inf bias entry with alpha > 0 gave inf on the chunked path."""
    device = BACKEND_DEVICE[backend]
    hs, ws, bs, h_t, w_t, b_t, y = make(dtype=dtype, shape=(10,), ignore=False, device=device)
    masked = torch.zeros(ws.shape[0], dtype=torch.bool, device=device)
    masked[[3, 7]] = True
    bs = bs.detach().masked_fill(masked, float("-inf")).requires_grad_()
    b_t = b_t.masked_fill(masked, float("-inf"))
    y[masked[y]] = 0
    kw = {"student_bias": bs, "teacher_bias": b_t, "target": y, "beta": 0.5, "alpha": 0.1}
    ours = fused_linear_kd_loss(
        hs, ws, h_t, w_t, temperature, chunk_size=chunk_size, backend=backend, **kw
    )
    ref = _masked_reference(hs, ws, bs, h_t, w_t, b_t, y, temperature, 0.5, 0.1)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(ours.double(), ref.detach(), **tol)
    # the materialised loss the issue names agrees
    s, t = hs @ ws.T + bs, h_t @ w_t.T + b_t
    mat = 0.5 * label_smoothing_loss(s, y, 0.1) + 0.5 * kd_loss(s, t, temperature)
    torch.testing.assert_close(ours, mat, **tol)
    want = torch.autograd.grad(ref, (hs, ws, bs))
    for a, b in zip(torch.autograd.grad(ours, (hs, ws, bs)), want, strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b.double(), **tol)
    # the composite path (torch.func) gives the same value and gradient
    g_h, value = torch.func.grad_and_value(
        lambda h: fused_linear_kd_loss(h, ws, h_t, w_t, temperature, **kw)
    )(hs.detach())
    torch.testing.assert_close(value.double(), ref.detach(), **tol)
    torch.testing.assert_close(g_h.double(), want[0].double(), **tol)


@pytest.mark.parametrize("bad", [7, -5])
def test_out_of_range_targets_fail_under_torch_func(bad):
    """Item 2: the composite path of the fused loss refuses a bad class index too."""
    hs, ws, _, h_t, w_t, _, _ = make(shape=(4,), v=3, bias=False)
    y = torch.tensor([0, 1, bad, 2])
    for beta, alpha in ((0.5, 0.0), (0.5, 0.1)):
        with pytest.raises(RuntimeError, match="out of bounds"):
            torch.func.grad(
                lambda h, beta=beta, alpha=alpha: fused_linear_kd_loss(
                    h, ws, h_t, w_t, T, target=y, beta=beta, alpha=alpha
                )
            )(hs.detach())


# ---------------------------------------------------------------------------
# issue 15: a cached top-k teacher in place of the teacher head
# ---------------------------------------------------------------------------


def _cached_reference(hs, ws, bs, cache, y, beta, alpha, reduction="batchmean"):
    s = hs @ ws.T if bs is None else hs @ ws.T + bs
    rows = beta * kd_loss(s, cache, T, target=y, reduction="none", dim=-1)
    if beta < 1:
        rows = rows + (1 - beta) * label_smoothing_loss(s, y, alpha, reduction="none", dim=-1)
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / (y != -100).sum().clamp_min(1)


@pytest.mark.parametrize(("kind", "tail"), [("logits", "renormalize"), ("logprobs", "bucket")])
@pytest.mark.parametrize(("beta", "alpha"), [(1.0, 0.0), (0.3, 0.0), (0.3, 0.2)])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
@pytest.mark.parametrize("shape", [(23,), (3, 7)])
def test_cached_teacher_matches_kd_loss_with_it(kind, tail, beta, alpha, reduction, shape):
    hs, ws, bs, h_t, w_t, b_t, y = make(shape=shape)
    cache = TopKTeacher.from_logits(h_t @ w_t.T + b_t, 4, kind=kind, tail=tail)
    ours = fused_linear_kd_loss(
        hs, ws, cache, None, T, student_bias=bs, target=y, beta=beta, alpha=alpha,
        reduction=reduction, chunk_size=5,
    )  # fmt: skip
    ref = _cached_reference(hs, ws, bs, cache, y, beta, alpha, reduction)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    upstream = torch.rand_like(ref) + 0.5
    for a, b in zip(
        grads(ours, (hs, ws, bs), upstream), grads(ref, (hs, ws, bs), upstream), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(("kind", "tail"), [("logits", "renormalize"), ("logprobs", "bucket")])
def test_cached_teacher_of_every_class_is_the_dense_teacher(kind, tail, backend):
    hs, ws, bs, h_t, w_t, b_t, y = make(device=BACKEND_DEVICE[backend])
    cache = TopKTeacher.from_logits(h_t @ w_t.T + b_t, ws.shape[0], kind=kind, tail=tail)
    kw = {"student_bias": bs, "target": y, "beta": 0.5, "alpha": 0.1, "chunk_size": 4}
    ours = fused_linear_kd_loss(hs, ws, cache, None, T, **kw)
    dense = fused_linear_kd_loss(hs, ws, h_t, w_t, T, teacher_bias=b_t, backend=backend, **kw)
    torch.testing.assert_close(ours, dense, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads(ours, (hs, ws, bs), None), grads(dense, (hs, ws, bs), None), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_cached_teacher_under_transforms_and_double_backward():
    hs, ws, _, h_t, w_t, _, y = make(shape=(9,), h=4, ht=5, v=6)
    cache = TopKTeacher.from_logits(h_t @ w_t.T, 3, kind="logprobs", tail="bucket")

    def fused(h, w):
        return fused_linear_kd_loss(h, w, cache, None, T, target=y, beta=0.5, alpha=0.1)

    def ref(h, w):
        return _cached_reference(h, w, None, cache, y, 0.5, 0.1)

    assert torch.autograd.gradgradcheck(fused, (hs, ws))
    h0, w0 = hs.detach(), ws.detach()
    torch.testing.assert_close(
        torch.func.grad(fused, argnums=(0, 1))(h0, w0),
        torch.func.grad(ref, argnums=(0, 1))(h0, w0),
        rtol=1e-10,
        atol=1e-10,
    )


def test_cached_teacher_module_and_bad_arguments():
    hs, ws, bs, h_t, w_t, _, y = make(shape=(2, 5))
    cache = TopKTeacher.from_logits(h_t @ w_t.T, 3)
    module = FusedLinearKDLoss(T, beta=0.5, chunk_size=3)
    torch.testing.assert_close(
        module(hs, ws, cache, None, y, student_bias=bs),
        fused_linear_kd_loss(hs, ws, cache, None, T, student_bias=bs, target=y, beta=0.5),
    )
    with pytest.raises(ValueError, match="needs no teacher head"):
        fused_linear_kd_loss(hs, ws, cache, w_t, T)
    with pytest.raises(ValueError, match="no Triton kernel"):
        fused_linear_kd_loss(hs, ws, cache, None, T, backend="triton")
    with pytest.raises(ValueError, match="teacher_weight must be the teacher's"):
        fused_linear_kd_loss(hs, ws, h_t, None, T)
    with pytest.raises(ValueError, match=r"teacher.indices must have shape \(2, 5, 'k'\)"):
        fused_linear_kd_loss(hs, ws, TopKTeacher.from_logits(h_t[0] @ w_t.T, 3), None, T)
    bad = TopKTeacher(torch.zeros(2, 5, 12, dtype=torch.long), torch.zeros(2, 5, 12))
    with pytest.raises(ValueError, match="cache 1 to 11 classes"):
        fused_linear_kd_loss(hs, ws, bad, None, T)


# ---------------------------------------------------------------------------
# issue 15: peak memory of the chunked path, measured on the CPU run of each path
# ---------------------------------------------------------------------------


def _extra_memory(step, params):
    """Peak tensor bytes of ``step()`` beyond the gradients it leaves in ``params``."""
    step()  # warm: a kernel's cached scratch is not a per-call cost
    for p in params:
        p.grad = None
    peak = peak_bytes(step)
    return peak - sum(p.grad.numel() * p.grad.element_size() for p in params)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss", ["kd", "kd_smoothed", "topk", "ls"])
def test_peak_memory_within_a_quarter_of_the_logits(monkeypatch, backend, loss, dtype):
    """The default budget's claim: at most 0.25 logits tensors beyond the gradients.

    The 64 MiB floor is lowered to 0 so that the 0.2-of-the-logits rule sets the
    chunks at this small size; the unfused loss, measured the same way, holds
    two logits tensors or more (the measurement sees them).
    """
    if loss == "topk" and backend == "triton":
        pytest.skip("a cached teacher has one implementation")
    if backend == "triton" and TRITON_DEVICE != "cpu":
        pytest.skip("measured on the CPU run of the path; test_cuda.py measures CUDA")
    monkeypatch.setattr(fl, "DEFAULT_BUDGET_BYTES", 0)
    if backend == "triton":
        # Triton's interpreter keeps each launch's arguments in reference cycles (the
        # closures of GridExecutor._init_args_hst / _restore_args_dev) until the next
        # garbage collection; a GPU launch holds none. Collect between chunks.
        chunks = fl._chunks

        def collected(n, step):
            for bounds in chunks(n, step):
                gc.collect()
                yield bounds

        monkeypatch.setattr(fl, "_chunks", collected)
    # smaller under the interpreter (one Python-level program per row)
    n, h, v = (48, 16, 1000) if backend == "triton" else (96, 16, 1500)
    hs, ws, bs, h_t, w_t, b_t, y = make(dtype, shape=(n,), h=h, ht=h, v=v)
    cache = TopKTeacher.from_logits(h_t @ w_t.T + b_t, 8, kind="logprobs", tail="bucket")
    kw = {"target": y, "backend": backend}
    if loss == "kd":
        step = lambda: fused_linear_kd_loss(hs, ws, h_t, w_t, T, student_bias=bs, **kw).backward()  # noqa: E731
    elif loss == "kd_smoothed":
        step = lambda: fused_linear_kd_loss(  # noqa: E731
            hs, ws, h_t, w_t, T, student_bias=bs, beta=0.5, alpha=0.1, **kw
        ).backward()
    elif loss == "topk":
        step = lambda: fused_linear_kd_loss(  # noqa: E731
            hs, ws, cache, None, T, student_bias=bs, beta=0.5, alpha=0.1, target=y
        ).backward()
    else:
        step = lambda: fused_linear_label_smoothing_loss(  # noqa: E731
            hs, ws, y, 0.1, bias=bs, backend=backend
        ).backward()
    logits = n * v * torch.empty((), dtype=dtype).element_size()
    extra = _extra_memory(step, (hs, ws, bs))
    assert extra <= 0.25 * logits, f"{extra / logits:.3f} logits tensors"

    def unfused_step():
        s = hs @ ws.T + bs
        t = h_t @ w_t.T + b_t
        kd_loss(s, t, T, target=y, dim=-1).backward()

    if backend == "eager":  # the measurement sees the logits (once per loss and dtype)
        assert _extra_memory(unfused_step, (hs, ws, bs)) >= 2 * logits


# ---------------------------------------------------------------------------
# issue 15: backend="auto" is the Triton path on CUDA; a Triton failure falls back
# ---------------------------------------------------------------------------


@pytest.fixture
def auto_takes_triton_on_cpu(monkeypatch):
    """``backend="auto"`` as on CUDA, for CPU tensors under the interpreter."""
    if not HAS_TRITON:
        pytest.skip("no triton")
    if TRITON_DEVICE != "cpu":
        pytest.skip("test_cuda.py checks auto on CUDA")
    monkeypatch.setattr(select, "AUTO_DEVICES", ("cuda", "cpu"))
    select.reset_failure()
    yield
    select.reset_failure()


def _spy_triton(monkeypatch, fail=False):
    from lsdiffusion._kernels.triton import kd as triton_kd
    from lsdiffusion._kernels.triton import label_smoothing as triton_ls

    calls = []
    for module in (triton_kd, triton_ls):
        original = module.run

        def spy(k, x, need_grad, original=original):
            calls.append(type(k).__name__)
            if fail:
                raise RuntimeError("PTX compile failed: sm_xx unsupported")
            return original(k, x, need_grad)

        monkeypatch.setattr(module, "run", spy)
    return calls


def test_auto_runs_the_triton_chunks_where_cuda_would(auto_takes_triton_on_cpu, monkeypatch):
    calls = _spy_triton(monkeypatch)
    hs, ws, _bs, h_t, w_t, _b_t, y = make()
    auto = fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y, beta=0.5, chunk_size=4)
    assert calls
    assert set(calls) >= {"KDKernel"}
    calls.clear()
    fused_linear_label_smoothing_loss(hs, ws, y, chunk_size=4).backward()
    assert set(calls) == {"LabelSmoothingKernel"}
    calls.clear()
    eager = fused_linear_kd_loss(
        hs, ws, h_t, w_t, T, target=y, beta=0.5, chunk_size=4, backend="eager"
    )
    assert not calls
    torch.testing.assert_close(auto, eager, rtol=1e-10, atol=1e-10)


def test_a_failing_triton_kernel_falls_back_once_under_auto(auto_takes_triton_on_cpu, monkeypatch):
    calls = _spy_triton(monkeypatch, fail=True)
    hs, ws, _bs, h_t, w_t, _b_t, y = make()
    ref = fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y, chunk_size=4, backend="eager")
    with pytest.warns(RuntimeWarning, match="PTX compile failed.*eager engine") as record:
        loss = fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y, chunk_size=4)
    assert len([w for w in record if "Triton kernels failed" in str(w.message)]) == 1
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=1e-10)
    loss.backward()
    assert select.triton_failure().startswith("RuntimeError: PTX compile failed")
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no second warning
        fused_linear_label_smoothing_loss(hs, ws, y, chunk_size=4).backward()
        label_smoothing_loss(hs.detach() @ ws.detach().T, y, dim=-1)
    assert not calls  # auto no longer picks Triton in this process
    with pytest.raises(RuntimeError, match="PTX compile failed"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=y, chunk_size=4, backend="triton")


# issue 16 item 16: a complex target gets the library's message (never cast to its real part)


def test_complex_target_gets_a_clear_error():
    hs, ws, _, h_t, w_t, _, _ = make(shape=(4,), v=3, bias=False)
    target = torch.zeros(4, dtype=torch.complex64)
    with pytest.raises(TypeError, match="target must be an integer tensor of class indices"):
        fused_linear_kd_loss(hs, ws, h_t, w_t, T, target=target, beta=0.5)
