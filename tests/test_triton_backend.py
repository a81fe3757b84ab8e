"""The Triton kernels against the eager engine and PyTorch.

Without a GPU they run on CPU tensors under Triton's interpreter
(``TRITON_INTERPRET=1``, set in conftest.py); with CUDA, on the GPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton", reason="triton is not installed (pip install triton)")

from _reference import kd_reference
from lsdiffusion import KDLoss, LabelSmoothingLoss, kd_loss, kd_loss_terms, label_smoothing_loss
from lsdiffusion._kernels import triton as triton_backend
from lsdiffusion._kernels.triton import launch

# the interpreter evaluates masked-out lanes too (exp(-inf - -inf) and the like)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {
    torch.float64: {"rtol": 1e-10, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.bfloat16: {"rtol": 2e-2, "atol": 2e-2},
    torch.float16: {"rtol": 5e-3, "atol": 5e-3},
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.fixture(params=["one_block", "many_blocks"])
def blocks(request, monkeypatch):
    """Rows in one block, or split into blocks of 16 (the online softmax across blocks)."""
    if request.param == "many_blocks":
        monkeypatch.setattr(launch, "MAX_BLOCK", 16)
    return request.param


def _data(dtype, shape=(5, 37), seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    t = torch.randn(*shape, generator=g, dtype=torch.float64) * 2
    y = torch.randint(0, shape[-1], shape[:-1], generator=g)
    return s.to(DEVICE, dtype), t.to(DEVICE, dtype), y.to(DEVICE)


def _both(fn, x, upstream=None):
    """(value, grad) of fn(x, backend) for the Triton and the eager backend."""
    out = []
    for backend in ("triton", "eager"):
        xx = x.detach().clone().requires_grad_()
        v = fn(xx, backend)
        (g,) = torch.autograd.grad(v, xx, upstream)
        out.append((v.detach(), g))
    return out


def _close(a, b, dtype):
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    torch.testing.assert_close(a, b, **TOL[dtype], equal_nan=True)


def _ls_case(dtype, reduction, weighted):
    s, _, y = _data(dtype)
    y[1] = -100
    w = torch.rand(37, dtype=torch.float64).to(DEVICE, dtype) if weighted else None
    up = torch.rand(5, device=DEVICE) + 0.5 if reduction == "none" else None
    (v1, g1), (v2, g2) = _both(
        lambda x, b: label_smoothing_loss(x, y, 0.15, weight=w, reduction=reduction, backend=b),
        s,
        up,
    )
    assert v1.dtype == v2.dtype
    assert g1.dtype == dtype
    _close(v1, v2, dtype)
    _close(g1, g2, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_ls_matches_eager(dtype, weighted, blocks):
    _ls_case(dtype, "none", weighted)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ls_reductions(reduction, blocks):
    _ls_case(torch.float32, reduction, True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ls_probability_targets_and_sequence_layout(dtype, blocks):
    s, _, _ = _data(dtype, shape=(2, 3, 37))
    probs = torch.softmax(torch.randn(2, 3, 37, dtype=dtype, device=DEVICE), -1)
    w = torch.rand(37, dtype=dtype, device=DEVICE)
    (v1, g1), (v2, g2) = _both(
        lambda x, b: label_smoothing_loss(x, probs, 0.2, weight=w, dim=-1, backend=b), s
    )
    _close(v1, v2, dtype)
    _close(g1, g2, dtype)
    ref = F.cross_entropy(s.movedim(-1, 1), probs.movedim(-1, 1), weight=w, label_smoothing=0.2)
    _close(v1, ref, dtype)


KD_CASES = [(1.0, 1.0, False), (3.0, 1.0, True), (3.0, 0.4, True), (1.0, 0.4, True)]


def _kd_case(dtype, temperature, beta, with_target, reduction):
    s, t, y = _data(dtype)
    y[2] = -100
    target = y if with_target else None
    up = torch.rand(5, device=DEVICE) + 0.5 if reduction == "none" else None
    (v1, g1), (v2, g2) = _both(
        lambda x, b: kd_loss(
            x, t, temperature, target=target, beta=beta, reduction=reduction, backend=b
        ),
        s,
        up,
    )
    _close(v1, v2, dtype)
    _close(g1, g2, dtype)
    terms_t = kd_loss_terms(s, t, temperature, target=target, beta=beta, backend="triton")
    terms_e = kd_loss_terms(s, t, temperature, target=target, beta=beta, backend="eager")
    for a, b in zip(terms_t, terms_e, strict=True):
        _close(a, b, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("temperature", "beta", "with_target"), KD_CASES)
def test_kd_matches_eager(dtype, temperature, beta, with_target, blocks):
    _kd_case(dtype, temperature, beta, with_target, "none")


@pytest.mark.parametrize("reduction", ["batchmean", "sum"])
def test_kd_reductions(reduction, blocks):
    _kd_case(torch.float32, 3.0, 0.4, True, reduction)


def test_kd_without_t2_scaling_and_float64_teacher():
    s, t, _ = _data(torch.float32)
    for t2 in (True, False):
        got = kd_loss(s, t.double(), 4.0, t2_scaling=t2, backend="triton")
        want = kd_loss(s, t.double(), 4.0, t2_scaling=t2, backend="eager")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_masked_and_empty_rows_follow_the_eager_conventions(blocks):
    s, t, y = _data(torch.float64)
    s[0, [3, 5]] = float("-inf")  # masked vocabulary entries (both models)
    t[0, [3, 5]] = float("-inf")
    y[0] = 4
    s[1, y[1]] = float("-inf")  # target class masked: LS +inf
    t[2] = float("-inf")  # no teacher distribution: KD NaN
    s[3] = float("-inf")  # no student distribution: NaN for both
    y[4] = -100
    s[4] = float("nan")  # ignored row with NaN logits: zero loss, zero gradient
    t[4] = float("nan")
    for fn in (
        lambda x, b: label_smoothing_loss(x, y, 0.1, reduction="none", backend=b),
        lambda x, b: kd_loss(x, t, 2.0, target=y, beta=0.5, reduction="none", backend=b),
    ):
        up = torch.ones(5, dtype=torch.float64, device=DEVICE)
        (v1, g1), (v2, g2) = _both(fn, s, up)
        torch.testing.assert_close(v1, v2, equal_nan=True)
        torch.testing.assert_close(g1, g2, equal_nan=True)
        assert v1[4] == 0
        assert torch.count_nonzero(g1[4]) == 0
        assert torch.isnan(v1[3])


def test_retain_graph_upstream_and_half_grad_scaler(blocks):
    s, t, y = _data(torch.float32)
    x = s.clone().requires_grad_()
    loss = kd_loss(x, t, 2.0, target=y, beta=0.5, backend="triton")
    loss.backward(torch.tensor(2.5, device=DEVICE), retain_graph=True)  # the scale kernel
    first = x.grad.clone()
    x.grad = None
    loss.backward(torch.tensor(-0.5, device=DEVICE))  # the second backward recomputes
    torch.testing.assert_close(x.grad, first * -0.2, rtol=1e-5, atol=1e-7)
    ((_, g_eager),) = [_both(lambda z, b: kd_loss(z, t, 2.0, target=y, beta=0.5, backend=b), s)[1]]
    torch.testing.assert_close(first, g_eager * 2.5, rtol=1e-5, atol=1e-7)
    # half logits under a GradScaler-sized upstream: the gradient is formed in float32
    for dtype in (torch.float16, torch.bfloat16):
        h = s.to(dtype)
        grads = []
        for backend in ("triton", "eager"):
            hh = h.clone().requires_grad_()
            loss = label_smoothing_loss(hh, y, backend=backend) * 65536.0
            (g,) = torch.autograd.grad(loss, hh)
            grads.append(g)
        assert torch.isfinite(grads[0]).all()
        torch.testing.assert_close(grads[0].float(), grads[1].float(), **TOL[dtype])


def test_double_backward_and_mutation_on_the_triton_path():
    s, t, _ = _data(torch.float64)
    h1 = torch.autograd.functional.hessian(lambda x: kd_loss(x, t, 2.0, backend="triton"), s)
    h2 = torch.autograd.functional.hessian(lambda x: kd_loss(x, t, 2.0, backend="eager"), s)
    torch.testing.assert_close(h1, h2)
    x = s.half().requires_grad_()
    t32 = t.float()  # a float32 teacher is read in place (a float64 one would be copied)
    loss = kd_loss(x, t32, 2.0, backend="triton")
    t32.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_modules_take_the_backend():
    s, t, y = _data(torch.float32)
    torch.testing.assert_close(
        LabelSmoothingLoss(0.1, backend="triton")(s, y),
        LabelSmoothingLoss(0.1, backend="eager")(s, y),
    )
    torch.testing.assert_close(
        KDLoss(2.0, backend="triton")(s, t, y), KDLoss(2.0, backend="eager")(s, t, y)
    )
    assert "backend='triton'" in repr(KDLoss(2.0, backend="triton"))


def test_backend_errors(monkeypatch):
    s, t, y = _data(torch.float32)
    with pytest.raises(ValueError, match="backend must be one of"):
        label_smoothing_loss(s, y, backend="cuda")
    if DEVICE == "cpu":
        monkeypatch.setattr(triton_backend, "interpreting", lambda: False)
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            kd_loss(s, t, 2.0, backend="triton")
        # "auto" never picks Triton for CPU tensors
        kd_loss(s, t, 2.0, backend="auto")


def test_kd_keeps_its_digits_with_large_logit_offsets():
    g = torch.Generator().manual_seed(3)
    for so, to, temperature in ((1e4, 0.0, 1.0), (0.0, 1e3, 2.0), (1e4, -1e4, 2.0)):
        s = (torch.randn(4, 40, generator=g) + so).to(DEVICE)
        t = (torch.randn(4, 40, generator=g) + to).to(DEVICE)
        ref, _ = kd_reference(s, t, temperature)
        got = kd_loss(s, t, temperature, backend="triton")
        torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# issue 15 item 4: precision of the Triton kernels
# ---------------------------------------------------------------------------


def _rel(got, want):
    return ((got.double() - want).abs() / want.abs()).max().item()


@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_ls_keeps_its_digits_at_a_large_logit_offset(probs, weighted, blocks):
    """LS at a float32 logit offset of 3e4: 2.8e-5 relative error before, eager 6e-11."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(6, 50, generator=g) + 3e4).to(DEVICE)
    y = torch.randint(0, 50, (6,), generator=g)
    target = (torch.softmax(torch.randn(6, 50, generator=g), 1) if probs else y).to(DEVICE)
    w = (torch.rand(50, generator=g) + 0.5).to(DEVICE) if weighted else None
    w64 = None if w is None else w.double()
    t64 = target.double() if probs else target
    ref = label_smoothing_loss(x.double(), t64, 0.1, weight=w64, reduction="none")
    for backend in ("eager", "triton"):
        got = label_smoothing_loss(x, target, 0.1, weight=w, reduction="none", backend=backend)
        assert _rel(got, ref) < 1e-6, backend


@pytest.mark.parametrize("temperature", [1.0, 4.0, 64.0])
def test_kd_with_a_masked_first_class_keeps_its_digits_at_a_large_offset(temperature, blocks):
    """KD with class 0 at -inf and an offset of 3e4: the row's reference fell back to 0."""
    g = torch.Generator().manual_seed(5)
    s = torch.randn(6, 40, generator=g, dtype=torch.float64) + 3e4
    t = s + torch.randn(6, 40, generator=g, dtype=torch.float64)
    s[:, 0] = float("-inf")
    t[:, 0] = float("-inf")
    s, t = s.float().double(), t.float().double()  # the float32 inputs, exactly
    y = torch.randint(1, 40, (6,), generator=g)
    _, ref = kd_reference(s, t, temperature, target=y, beta=0.5)
    s32, t32, y = s.float().to(DEVICE), t.float().to(DEVICE), y.to(DEVICE)
    kw = {"target": y, "beta": 0.5, "reduction": "none"}
    eager = _rel(kd_loss(s32, t32, temperature, backend="eager", **kw), ref)
    triton = _rel(kd_loss(s32, t32, temperature, backend="triton", **kw), ref)
    assert triton <= max(2 * eager, 1e-5), (triton, eager)


@pytest.mark.parametrize("loss", ["ls", "kd"])
def test_float64_gradient_takes_the_upstream_in_float64(loss):
    """A float64 loss times an upstream != 1 was scaled in float32 (1e-7 error)."""
    s, t, y = _data(torch.float64)
    up = torch.tensor(1.0 / 3.0, dtype=torch.float64, device=DEVICE)

    def fn(x, backend):
        if loss == "ls":
            return label_smoothing_loss(x, y, 0.1, backend=backend) * up
        return kd_loss(x, t, 2.0, backend=backend) * up

    (_, g_triton), (_, g_eager) = _both(fn, s)
    torch.testing.assert_close(g_triton, g_eager, rtol=1e-13, atol=1e-15)


def test_ls_probability_targets_on_a_masked_class_with_alpha_one(blocks):
    """alpha=1 drops the target, mass on a -inf class included: NaN before, eager 0.4827."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 21, generator=g, dtype=torch.float64)
    x[:, 1] = float("-inf")
    probs = torch.softmax(torch.randn(4, 21, generator=g, dtype=torch.float64), 1)
    finite = torch.isfinite(x)
    lp = torch.log_softmax(x, 1)
    ref = -(torch.where(finite, lp, 0.0).sum(1) / 21).mean()  # uniform over the K classes
    x, probs = x.to(DEVICE), probs.to(DEVICE)
    (v1, g1), (v2, g2) = _both(lambda z, b: label_smoothing_loss(z, probs, 1.0, backend=b), x)
    torch.testing.assert_close(v1.cpu(), ref)
    torch.testing.assert_close(v2.cpu(), ref)
    torch.testing.assert_close(g1, g2)
    assert torch.isfinite(g1).all()


@pytest.mark.parametrize("temperature", [64.0, 1000.0])
def test_kd_float32_value_at_high_temperature_is_at_least_as_accurate_as_kl_div(
    temperature, blocks
):
    """The Triton KL takes its log-sums together, as the eager kernel does (issue 16 item 6)."""
    g = torch.Generator().manual_seed(6)
    s = torch.randn(16, 300, generator=g)
    t = s + 0.3 * torch.randn(16, 300, generator=g)
    t2 = temperature**2

    # PyTorch's one-liner on purpose (not the shared reference): the test measures
    # its float32 error and holds ours to at most that
    def kl_div(a, b):
        lp_s, lp_t = F.log_softmax(a / temperature, 1), F.log_softmax(b / temperature, 1)
        return F.kl_div(lp_s, lp_t, reduction="none", log_target=True).sum(1) * t2

    ref = kl_div(s.double(), t.double())
    torch_err = (kl_div(s, t).double() - ref).abs() / ref
    got = kd_loss(s.to(DEVICE), t.to(DEVICE), temperature, reduction="none", backend="triton")
    err = (got.cpu().double() - ref).abs() / ref
    assert err.median() <= torch_err.median()
    assert err.max() <= torch_err.max()


@pytest.mark.parametrize(
    ("alpha", "weighted", "probs"), [(1.0, False, False), (0.1, True, False), (0.1, False, True)]
)
def test_ls_row_with_no_finite_logit_is_nan_on_both_backends(alpha, weighted, probs):
    """Issue 16 item 3: no target mass (alpha=1, weight[y]=0, a zero probability row)."""
    inf = float("inf")
    x = torch.tensor([[-inf, -inf, -inf], [0.0, 1.0, 2.0]], dtype=torch.float64, device=DEVICE)
    y = torch.tensor([0, 1], device=DEVICE)
    target = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.3, 0.5]], dtype=torch.float64) if probs else y
    w = torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64, device=DEVICE) if weighted else None
    up = torch.ones(2, dtype=torch.float64, device=DEVICE)
    (v1, g1), (v2, g2) = _both(
        lambda z, b: label_smoothing_loss(
            z, target.to(DEVICE), alpha, weight=w, reduction="none", backend=b
        ),
        x,
        up,
    )
    for v, g in ((v1, g1), (v2, g2)):
        assert torch.isnan(v[0])
        assert torch.isnan(g[0]).all()
        assert torch.isfinite(v[1])
    torch.testing.assert_close(v1, v2, equal_nan=True)
