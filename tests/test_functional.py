"""Tests of the fused losses against PyTorch and a float64 re-derivation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from _reference import kd_reference
from lsdiffusion import fused_linear_kd_loss, kd_loss, kd_loss_terms, label_smoothing_loss
from lsdiffusion._kernels.eager import blocks as blocks_mod


@pytest.fixture(params=["one_block", "many_blocks"])
def blocks(request, monkeypatch):
    """Run a test with the whole input in one block, and with tiny row blocks."""
    if request.param == "many_blocks":
        monkeypatch.setattr(blocks_mod, "CPU_BLOCK_ELEMS", 8)
        monkeypatch.setattr(blocks_mod, "CUDA_BLOCK_ELEMS", 8)
        monkeypatch.setattr(blocks_mod, "SMALL_ELEMS", 0)
    return request.param


def _grad(fn, x, upstream=None):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (g,) = torch.autograd.grad(out, x, grad_outputs=upstream)
    return out.detach(), g


# ---------------------------------------------------------------------------
# label smoothing
# ---------------------------------------------------------------------------

SHAPES = [((8, 5), 1), ((4, 6, 3), 1), ((3, 4, 7), -1), ((2, 3, 2, 2), 1)]


@pytest.mark.parametrize(("shape", "dim"), SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("use_weight", [False, True])
def test_ls_matches_torch(shape, dim, reduction, use_weight, dtype, device, tol, blocks):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(*shape, generator=g, dtype=dtype).to(device)
    num_classes = shape[dim]
    tshape = list(shape)
    tshape.pop(dim)
    target = torch.randint(0, num_classes, tshape, generator=g).to(device)
    target.view(-1)[0] = -100
    weight = torch.rand(num_classes, generator=g, dtype=dtype).to(device) if use_weight else None

    def ours(x):
        return label_smoothing_loss(x, target, 0.2, weight=weight, reduction=reduction, dim=dim)

    def ref(x):
        xr = x if dim == 1 else x.movedim(dim, 1)
        return F.cross_entropy(xr, target, weight=weight, label_smoothing=0.2, reduction=reduction)

    up = None if reduction != "none" else torch.rand(tshape, dtype=dtype, device=device)
    v1, g1 = _grad(ours, logits, up)
    v2, g2 = _grad(ref, logits, up)
    assert v1.dtype == dtype
    torch.testing.assert_close(v1, v2, **tol)
    torch.testing.assert_close(g1, g2, **tol)


def test_ls_alpha_zero_is_cross_entropy(dtype, tol):
    logits = torch.randn(16, 10, dtype=dtype)
    target = torch.randint(0, 10, (16,))
    torch.testing.assert_close(
        label_smoothing_loss(logits, target, 0.0), F.cross_entropy(logits, target), **tol
    )


@pytest.mark.parametrize("use_weight", [False, True])
def test_ls_probability_targets_match_torch(use_weight, dtype, tol):
    logits = torch.randn(6, 4, 5, dtype=dtype)
    probs = torch.softmax(torch.randn(6, 4, 5, dtype=dtype), 1)
    weight = torch.rand(4, dtype=dtype) if use_weight else None
    for reduction in ("mean", "sum", "none"):
        v1, g1 = _grad(
            lambda x, r=reduction: label_smoothing_loss(x, probs, 0.3, weight=weight, reduction=r),
            logits,
            None if reduction != "none" else torch.ones(6, 5, dtype=dtype),
        )
        v2, g2 = _grad(
            lambda x, r=reduction: F.cross_entropy(
                x, probs, weight=weight, label_smoothing=0.3, reduction=r
            ),
            logits,
            None if reduction != "none" else torch.ones(6, 5, dtype=dtype),
        )
        torch.testing.assert_close(v1, v2, **tol)
        torch.testing.assert_close(g1, g2, **tol)


def test_ls_gradcheck():
    target = torch.tensor([1, 2, 0, -100, 4, 1])
    weight = torch.rand(5, dtype=torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda z, r=reduction: label_smoothing_loss(
                z, target, 0.15, weight=weight, reduction=r
            ),
            (x,),
        )


@pytest.mark.parametrize("use_weight", [False, True])
def test_ls_all_ignored_is_zero_with_zero_grad(use_weight, device):
    x = torch.randn(5, 7, device=device, requires_grad=True)
    target = torch.full((5,), -100, device=device)
    weight = torch.rand(7, device=device) if use_weight else None
    loss = label_smoothing_loss(x, target, weight=weight)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(x.grad) == 0


def test_ls_masked_vocabulary_is_finite(blocks):
    torch.manual_seed(1)
    x = torch.randn(4, 8, dtype=torch.float64)
    x[:, 5:] = float("-inf")
    x[0, 3] = float("-inf")
    target = torch.tensor([0, 1, 2, 4])
    xg = x.clone().requires_grad_()
    loss = label_smoothing_loss(xg, target, 0.1)
    loss.backward()
    assert torch.isfinite(loss)
    assert not torch.isnan(xg.grad).any()
    # reference: smoothing mass on masked classes contributes nothing
    finite = torch.isfinite(x)
    lp = torch.log_softmax(x, 1)
    y_ls = 0.9 * F.one_hot(target, 8).double() + 0.1 / 8
    rows = -(torch.where(finite, y_ls * lp, 0.0)).sum(1)
    torch.testing.assert_close(loss, rows.mean())
    assert torch.all(xg.grad[~finite] == 0)
    # the fast path must agree with the reference on the unmasked rows' gradient too
    ref = x.clone().requires_grad_()
    lp = torch.log_softmax(ref, 1)
    (-(torch.where(finite, y_ls * lp, 0.0)).sum(1).mean()).backward()
    torch.testing.assert_close(xg.grad, torch.nan_to_num(ref.grad, nan=0.0))


def test_ls_masked_target_class_is_infinite():
    x = torch.randn(2, 4)
    x[0, 1] = float("-inf")
    loss = label_smoothing_loss(x, torch.tensor([1, 0]), reduction="none")
    assert loss[0] == float("inf")
    assert torch.isfinite(loss[1])


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_ls_half_precision(half):
    x32 = torch.randn(32, 50) * 3
    target = torch.randint(0, 50, (32,))
    xh = x32.to(half).requires_grad_()
    loss = label_smoothing_loss(xh, target, 0.1)
    assert loss.dtype == torch.float32
    loss.backward()
    assert xh.grad.dtype == half
    ref_x = xh.detach().float().requires_grad_()
    ref = F.cross_entropy(ref_x, target, label_smoothing=0.1)
    ref.backward()
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(xh.grad.float(), ref_x.grad, rtol=2e-2, atol=1e-3)


def test_ls_large_logits_are_stable():
    x = torch.tensor([[100.0, -100.0, 0.0], [-100.0, 100.0, 100.0]])
    target = torch.tensor([0, 2])
    torch.testing.assert_close(
        label_smoothing_loss(x, target, 0.1), F.cross_entropy(x, target, label_smoothing=0.1)
    )


def test_ls_does_not_write_inputs():
    x = torch.randn(9, 6, requires_grad=True)
    target = torch.randint(0, 6, (9,))
    before = x.detach().clone()
    label_smoothing_loss(x, target).backward()
    assert torch.equal(x.detach(), before)


def test_ls_no_grad_path_matches():
    x = torch.randn(9, 6)
    target = torch.randint(0, 6, (9,))
    with torch.no_grad():
        a = label_smoothing_loss(x, target)
    b = label_smoothing_loss(x.requires_grad_(), target)
    torch.testing.assert_close(a, b.detach())


def test_ls_many_blocks(monkeypatch):
    """Row blocks (chunking) must not change the result."""
    monkeypatch.setattr(blocks_mod, "CPU_BLOCK_ELEMS", 16)
    monkeypatch.setattr(blocks_mod, "SMALL_ELEMS", 0)
    x = torch.randn(37, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (37,))
    v1, g1 = _grad(lambda z: label_smoothing_loss(z, target, 0.1), x)
    v2, g2 = _grad(lambda z: F.cross_entropy(z, target, label_smoothing=0.1), x)
    torch.testing.assert_close(v1, v2)
    torch.testing.assert_close(g1, g2)


def test_ls_retain_graph_second_backward_and_upstream():
    x = torch.randn(10, 7, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 7, (10,))
    loss = label_smoothing_loss(x, target, 0.1)
    loss.backward(torch.tensor(2.5, dtype=torch.float64), retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    loss.backward(torch.tensor(-0.5, dtype=torch.float64))
    ref_x = x.detach().clone().requires_grad_()
    F.cross_entropy(ref_x, target, label_smoothing=0.1).backward()
    torch.testing.assert_close(first, 2.5 * ref_x.grad)
    torch.testing.assert_close(x.grad, -0.5 * ref_x.grad)


def test_ls_empty_batch():
    x = torch.randn(0, 5, requires_grad=True)
    target = torch.zeros(0, dtype=torch.long)
    loss = label_smoothing_loss(x, target)
    loss.backward()
    assert loss.item() == 0.0
    assert label_smoothing_loss(x, target, reduction="none").shape == (0,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5}, r"alpha must be in \[0, 1\], got 1.5"),
        ({"alpha": -0.1}, "alpha must be in"),
        ({"reduction": "batchmean"}, "reduction must be one of"),
        ({"weight": torch.ones(4)}, r"weight must be 1-D with one entry per class \(5\)"),
        ({"dim": 3}, "dim=3 is out of range"),
    ],
)
def test_ls_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        label_smoothing_loss(torch.randn(3, 5), torch.tensor([0, 1, 2]), **kwargs)


def test_ls_bad_targets():
    x = torch.randn(3, 5)
    with pytest.raises(ValueError, match="class index 5, outside"):
        label_smoothing_loss(x, torch.tensor([0, 5, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\).*got \(3, 1\)"):
        label_smoothing_loss(x, torch.tensor([[0], [1], [2]]))
    with pytest.raises(ValueError, match="probability target must have the logits' shape"):
        label_smoothing_loss(x, torch.rand(3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        label_smoothing_loss(torch.ones(3, 5, dtype=torch.long), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="batch dimension"):
        label_smoothing_loss(torch.randn(5), torch.tensor(1))


# ---------------------------------------------------------------------------
# knowledge distillation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 64.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
def test_kd_matches_float64_reference(temperature, reduction, dtype, device, tol, blocks):
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(12, 9, generator=g, dtype=dtype) * 3).to(device)
    t = (torch.randn(12, 9, generator=g, dtype=dtype) * 3).to(device)
    up = torch.rand(12, dtype=dtype, device=device) if reduction == "none" else None
    v, gr = _grad(
        lambda x: kd_loss(s.new_tensor(0) + x, t, temperature, reduction=reduction), s, up
    )
    mean, rows = kd_reference(s.cpu(), t.cpu(), temperature)
    expected = {"batchmean": mean, "sum": rows.sum(), "none": rows}[reduction]
    # At high T the KL is a small difference of O(1) terms times T^2: float32 loses
    # about log10(T) digits there (the usual one-liner loses as many).
    loss_tol = {k: v * max(1.0, temperature) for k, v in tol.items()}
    torch.testing.assert_close(v.cpu().double(), expected, **loss_tol)
    # analytic gradient: T (p_s^T - p_t^T) / n_rows
    p_s = torch.softmax(s.double() / temperature, 1)
    p_t = torch.softmax(t.double() / temperature, 1)
    analytic = temperature * (p_s - p_t)
    if reduction == "batchmean":
        analytic = analytic / 12
    elif reduction == "none":
        analytic = analytic * up.double()[:, None]
    torch.testing.assert_close(gr.double(), analytic, **tol)


@pytest.mark.parametrize("temperature", [4.0, 64.0, 1000.0])
@pytest.mark.parametrize("near", [False, True], ids=["independent", "near"])
def test_kd_float32_value_at_high_temperature_is_at_least_as_accurate_as_kl_div(
    temperature, near, blocks
):
    """Issue 16 item 6: the value keeps at least the digits of ``F.kl_div`` at high T."""
    g = torch.Generator().manual_seed(6)
    s = torch.randn(64, 1000, generator=g)
    t = (s if near else torch.randn(64, 1000, generator=g)) + 0.3 * torch.randn(
        64, 1000, generator=g
    )
    t2 = temperature**2

    # PyTorch's one-liner on purpose (not the shared reference): the test measures
    # its float32 error and holds ours to at most that
    def kl_div(a, b):
        lp_s, lp_t = F.log_softmax(a / temperature, 1), F.log_softmax(b / temperature, 1)
        return F.kl_div(lp_s, lp_t, reduction="none", log_target=True).sum(1) * t2

    ref = kl_div(s.double(), t.double())
    torch_err = (kl_div(s, t).double() - ref).abs() / ref
    err = (kd_loss(s, t, temperature, reduction="none").double() - ref).abs() / ref
    assert err.median() <= torch_err.median()
    assert err.max() <= torch_err.max()
    # the fused linear loss runs the same kernel on its chunks
    eye = torch.eye(1000)
    fused = fused_linear_kd_loss(s, eye, t, eye, temperature, reduction="none", chunk_size=16)
    assert ((fused.double() - ref).abs() / ref).max() <= torch_err.max()


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_kd_with_hard_labels_and_ignore(temperature, dtype, tol, blocks):
    s = torch.randn(10, 6, dtype=dtype)
    t = torch.randn(10, 6, dtype=dtype)
    target = torch.randint(0, 6, (10,))
    target[[2, 7]] = -100
    terms = kd_loss_terms(s, t, temperature, target=target, beta=0.3)
    mean, _ = kd_reference(s, t, temperature, target=target, beta=0.3)
    torch.testing.assert_close(terms.loss.double(), mean, **tol)
    valid = target != -100
    ce = F.cross_entropy(s, target)
    ref_kd = (
        F.kl_div(
            F.log_softmax(s[valid] / temperature, 1),
            F.softmax(t[valid] / temperature, 1),
            reduction="batchmean",
        )
        * temperature**2
    )
    torch.testing.assert_close(terms.hard, ce, **tol)
    torch.testing.assert_close(terms.soft, ref_kd, **tol)
    assert not terms.hard.requires_grad


def test_kd_hard_label_gradient(dtype, tol, blocks):
    s = torch.randn(10, 6, dtype=dtype)
    t = torch.randn(10, 6, dtype=dtype)
    target = torch.randint(0, 6, (10,))
    target[4] = -100
    valid = target != -100
    temperature = 2.5

    def ref(x):
        kd = F.kl_div(
            F.log_softmax(x[valid] / temperature, 1),
            F.softmax(t[valid] / temperature, 1),
            reduction="batchmean",
        )
        return 0.4 * F.cross_entropy(x, target) + 0.6 * kd * temperature**2

    _, g1 = _grad(lambda x: kd_loss(x, t, temperature, target=target, beta=0.6), s)
    _, g2 = _grad(ref, s)
    torch.testing.assert_close(g1, g2, **tol)


def test_kd_gradcheck_and_teacher_gets_no_grad():
    s = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    t = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, -100, 3, 4, 2])
    for reduction in ("batchmean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda z, r=reduction: kd_loss(z, t, 1.7, target=target, beta=0.4, reduction=r), (s,)
        )
    kd_loss(s, t, 2.0).backward()
    assert t.grad is None


def test_kd_sequence_layout_and_padding():
    torch.manual_seed(0)
    s = torch.randn(3, 5, 11, dtype=torch.float64)
    t = torch.randn(3, 5, 11, dtype=torch.float64)
    target = torch.randint(0, 11, (3, 5))
    target[0, 3:] = -100
    target[2, 1:] = -100
    out = kd_loss(s, t, 2.0, target=target, dim=-1)
    mean, _ = kd_reference(s.reshape(-1, 11), t.reshape(-1, 11), 2.0, target=target.reshape(-1))
    torch.testing.assert_close(out, mean)
    none = kd_loss(s, t, 2.0, target=target, dim=-1, reduction="none")
    assert none.shape == (3, 5)
    assert torch.all(none[target == -100] == 0)
    # the class dim in position 1 gives the same value
    out1 = kd_loss(s.movedim(-1, 1), t.movedim(-1, 1), 2.0, target=target, dim=1)
    torch.testing.assert_close(out, out1)


def test_kd_all_ignored_and_masked_vocabulary(blocks):
    s = torch.randn(4, 6, requires_grad=True)
    t = torch.randn(4, 6)
    loss = kd_loss(s, t, 2.0, target=torch.full((4,), -100), beta=0.5)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.count_nonzero(s.grad) == 0

    s = torch.randn(4, 8, dtype=torch.float64)
    t = torch.randn(4, 8, dtype=torch.float64)
    s[:, 6:] = t[:, 6:] = float("-inf")
    s[1, 2] = t[1, 2] = float("-inf")
    sg = s.clone().requires_grad_()
    loss = kd_loss(sg, t, 3.0)
    loss.backward()
    assert torch.isfinite(loss)
    assert not torch.isnan(sg.grad).any()
    mean, _ = kd_reference(s, t, 3.0)
    torch.testing.assert_close(loss, mean)
    p_s = torch.softmax(s / 3, 1)
    p_t = torch.softmax(t / 3, 1)
    torch.testing.assert_close(sg.grad, 3 * (p_s - p_t) / 4)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_kd_half_precision(half):
    s = (torch.randn(16, 40) * 2).to(half).requires_grad_()
    t = (torch.randn(16, 40) * 2).to(half)
    loss = kd_loss(s, t, 2.0)
    assert loss.dtype == torch.float32
    loss.backward()
    assert s.grad.dtype == half
    mean, _ = kd_reference(s.detach().float(), t.float(), 2.0)
    torch.testing.assert_close(loss.double(), mean, rtol=1e-5, atol=1e-6)


def test_kd_retain_graph_and_upstream(monkeypatch):
    monkeypatch.setattr(blocks_mod, "CPU_BLOCK_ELEMS", 20)
    monkeypatch.setattr(blocks_mod, "SMALL_ELEMS", 0)
    s = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    t = torch.randn(9, 7, dtype=torch.float64)
    loss = kd_loss(s, t, 2.0)
    loss.backward(torch.tensor(3.0, dtype=torch.float64), retain_graph=True)
    first = s.grad.clone()
    s.grad = None
    loss.backward()
    analytic = 2.0 * (torch.softmax(s.detach() / 2, 1) - torch.softmax(t / 2, 1)) / 9
    torch.testing.assert_close(first, 3 * analytic)
    torch.testing.assert_close(s.grad, analytic)


def test_kd_without_t2_scaling():
    s, t = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(
        kd_loss(s, t, 4.0, t2_scaling=False) * 16, kd_loss(s, t, 4.0, t2_scaling=True)
    )


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0.0,), {}, ValueError, "temperature must be finite and > 0, got 0.0"),
        ((-1.0,), {}, ValueError, "temperature must be finite and > 0"),
        ((math.inf,), {}, ValueError, "temperature must be finite"),
        ((math.nan,), {}, ValueError, "temperature must be finite"),
        ((2.0,), {"beta": 0.5}, ValueError, "needs target"),
        ((2.0,), {"beta": 1.2}, ValueError, "beta must be in"),
        ((2.0,), {"reduction": "mean"}, ValueError, "batchmean"),
        ((2.0,), {"reduction": "avg"}, ValueError, "reduction must be one of"),
        ((2.0,), {"target": torch.tensor([0, 1, 7])}, ValueError, "class index 7"),
        ((2.0,), {"target": torch.rand(3)}, TypeError, "class indices"),
    ],
)
def test_kd_bad_arguments(args, kwargs, error, match):
    s, t = torch.randn(3, 5), torch.randn(3, 5)
    with pytest.raises(error, match=match):
        kd_loss(s, t, *args, **kwargs)


def test_kd_shape_mismatch():
    with pytest.raises(ValueError, match=r"same shape, got \(3, 5\) and \(3, 4\)"):
        kd_loss(torch.randn(3, 5), torch.randn(3, 4), 2.0)


# ---------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------

_logit_rows = st.integers(min_value=1, max_value=6)
_classes = st.integers(min_value=2, max_value=12)


@settings(max_examples=40, deadline=None)
@given(
    rows=_logit_rows,
    classes=_classes,
    seed=st.integers(0, 2**16),
    temperature=st.floats(0.1, 50.0),
    scale=st.floats(0.1, 20.0),
)
def test_kd_properties(rows, classes, seed, temperature, scale):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(rows, classes, generator=g, dtype=torch.float64) * scale
    t = torch.randn(rows, classes, generator=g, dtype=torch.float64) * scale
    kd = kd_loss(s, t, temperature)
    assert kd >= -1e-12  # KL >= 0
    assert abs(kd_loss(t, t, temperature).item()) < 1e-9  # = 0 when equal
    shift = torch.randn(rows, 1, generator=g, dtype=torch.float64) * 100
    torch.testing.assert_close(kd_loss(s + shift, t - shift, temperature), kd, atol=1e-9, rtol=1e-7)
    torch.testing.assert_close(
        kd_loss(s, t, temperature, t2_scaling=False) * temperature**2, kd, atol=1e-12, rtol=1e-9
    )
    if kd > 1e-6:  # distinct distributions give a strictly positive KL
        assert not torch.allclose(
            torch.softmax(s / temperature, 1), torch.softmax(t / temperature, 1)
        )


@settings(max_examples=40, deadline=None)
@given(
    rows=_logit_rows,
    classes=_classes,
    seed=st.integers(0, 2**16),
    alpha=st.floats(0.0, 1.0),
)
def test_ls_properties(rows, classes, seed, alpha):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, classes, generator=g, dtype=torch.float64) * 5
    target = torch.randint(0, classes, (rows,), generator=g)
    loss = label_smoothing_loss(x, target, alpha)
    shift = torch.randn(rows, 1, generator=g, dtype=torch.float64) * 100
    torch.testing.assert_close(label_smoothing_loss(x + shift, target, alpha), loss)
    torch.testing.assert_close(loss, F.cross_entropy(x, target, label_smoothing=alpha))
    # the smoothed cross-entropy is at least the entropy of the smoothed target
    y_ls = (1 - alpha) * F.one_hot(target, classes).double() + alpha / classes
    entropy = -(torch.where(y_ls > 0, y_ls * y_ls.log(), 0.0)).sum(1).mean()
    assert loss >= entropy - 1e-9


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_terms_report_hard_term_with_beta_one(temperature):
    s, t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, -100, 4, 3])
    terms = kd_loss_terms(s, t, temperature, target=target)
    valid = target != -100
    torch.testing.assert_close(terms.hard, F.cross_entropy(s, target))
    torch.testing.assert_close(terms.loss, terms.soft)
    # the gradient is the pure KD one: the reported hard term does not leak into it
    _, g = _grad(lambda x: kd_loss(x, t, temperature, target=target), s)
    p_s = torch.softmax(s / temperature, 1)
    p_t = torch.softmax(t / temperature, 1)
    analytic = temperature * (p_s - p_t) * valid[:, None] / valid.sum()
    torch.testing.assert_close(g, analytic)
    assert kd_loss_terms(s, t, temperature).hard == 0


@pytest.mark.parametrize(
    ("student_dtype", "teacher_dtype"),
    [
        (torch.float32, torch.float16),
        (torch.float32, torch.float64),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float16),
    ],
)
def test_kd_mixed_student_teacher_dtypes(student_dtype, teacher_dtype):
    s = torch.randn(7, 9).to(student_dtype).requires_grad_()
    t = torch.randn(7, 9).to(teacher_dtype)
    loss = kd_loss(s, t, 2.0)
    loss.backward()
    assert s.grad.dtype == student_dtype
    mean, _ = kd_reference(s.detach(), t, 2.0)
    torch.testing.assert_close(loss.double(), mean, rtol=1e-5, atol=1e-6)


def test_kd_empty_batch():
    s = torch.randn(0, 5, requires_grad=True)
    loss = kd_loss(s, torch.randn(0, 5), 2.0, target=torch.zeros(0, dtype=torch.long), beta=0.5)
    loss.backward()
    assert loss.item() == 0.0
    assert kd_loss(s, torch.randn(0, 5), 2.0, reduction="none").shape == (0,)


# ---------------------------------------------------------------------------
# review findings: mixed precision, non-finite inputs, large offsets, weights
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss_scale", [32768.0, 65536.0])
def test_half_gradient_survives_grad_scaler_scales(loss_scale):
    """The upstream gradient is applied in float32 before the cast, as autocast does."""
    torch.manual_seed(0)
    x = torch.randn(64, 300).half().requires_grad_()
    t = torch.randn(64, 300).half()
    y = torch.randint(0, 300, (64,))
    for ours, ref in [
        (
            lambda z: label_smoothing_loss(z, y, 0.1),
            lambda z: F.cross_entropy(z, y, label_smoothing=0.1),
        ),
        (
            lambda z: kd_loss(z, t, 2.0),
            lambda z: (
                F.kl_div(
                    F.log_softmax(z / 2, 1), F.softmax(t.float() / 2, 1), reduction="batchmean"
                )
                * 4
            ),
        ),
    ]:
        (g,) = torch.autograd.grad(ours(x) * loss_scale, x)
        xr = x.detach().float().requires_grad_()
        (gr,) = torch.autograd.grad(ref(xr) * loss_scale, xr)
        assert torch.isfinite(g).all()
        expected = gr.half().float()  # what autocast's float32 compute + cast gives
        torch.testing.assert_close(g.float(), expected, rtol=2e-3, atol=1e-3)


def test_nan_or_inf_teacher_logits_propagate():
    s = torch.randn(3, 4, requires_grad=True)
    for bad in (float("nan"), float("inf")):
        t = torch.randn(3, 4)
        t[0, 0] = bad
        rows = kd_loss(s, t, 2.0, reduction="none")
        assert torch.isnan(rows[0])
        assert torch.isfinite(rows[1:]).all()


@pytest.mark.parametrize("offset", [3e3, 1e4])
def test_large_logit_offsets_keep_precision(offset):
    torch.manual_seed(0)
    x = torch.randn(16, 500) + offset
    y = torch.randint(0, 500, (16,))
    ref = F.cross_entropy(x.double(), y, label_smoothing=0.1)
    assert abs(label_smoothing_loss(x, y, 0.1).double() - ref) < 1e-5
    t = torch.randn(16, 500) + offset
    terms = kd_loss_terms(x, t, 1.0, target=y)
    assert abs(terms.hard.double() - F.cross_entropy(x.double(), y)) < 1e-5


def test_ignored_rows_with_all_masked_logits_get_zero_gradient():
    x = torch.tensor([[2.0, 0.0, float("-inf")], [float("-inf")] * 3], requires_grad=True)
    y = torch.tensor([0, -100])
    label_smoothing_loss(x, y, 0.1).backward()
    assert torch.isfinite(x.grad).all()
    assert torch.all(x.grad[1] == 0)
    s = x.detach().clone().requires_grad_()
    kd_loss(s, x.detach(), 2.0, target=y).backward()
    assert torch.isfinite(s.grad).all()
    assert torch.all(s.grad[1] == 0)


def test_negative_class_weights_divide_like_torch():
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1, 0])
    w = torch.tensor([-1.0, -2.0, -0.5], dtype=torch.float64)
    torch.testing.assert_close(
        label_smoothing_loss(x, y, 0.1, weight=w),
        F.cross_entropy(x, y, weight=w, label_smoothing=0.1),
    )


def test_clear_errors_for_wrong_types():
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"pass target\.detach"):
        label_smoothing_loss(x, torch.rand(3, 4, requires_grad=True))
    with pytest.raises(TypeError, match=r"student_logits must be a torch\.Tensor, got list"):
        kd_loss([[1.0, 2.0]], torch.randn(1, 2), 1.0)
    import numpy as np

    # numpy scalars are numbers too
    label_smoothing_loss(x, torch.tensor([0, 1, 2]), np.float32(0.1))
    kd_loss(x, x, np.float64(2.0))


# ---------------------------------------------------------------------------
# issue 16: items 1, 3, 10
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["ls", "kd"])
def test_index_targets_changed_in_place_before_a_recomputing_backward_raise(loss):
    """Item 1: a recompute (create_graph, second backward, float16) must not read new labels."""
    torch.manual_seed(0)
    x = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])

    def value():
        if loss == "ls":
            return label_smoothing_loss(x, y, 0.1)
        return kd_loss(x, t, 2.0, target=y, beta=0.5)

    out = value()
    (g1,) = torch.autograd.grad(out, x, create_graph=True, retain_graph=True)
    y[:] = 4
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch.autograd.grad(out, x, create_graph=True)
    y[:] = torch.tensor([0, 1, 2, 3])
    out = value()
    y[:] = 4
    # the first-order fast path: the gradient of the labels seen in forward
    (g_fast,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(g_fast, g1.detach())


@pytest.mark.parametrize(("alpha", "weight"), [(1.0, None), (0.1, torch.tensor([0.0, 1.0, 1.0]))])
def test_ls_row_with_no_finite_logit_is_nan_even_without_target_mass(alpha, weight):
    """Item 3: NaN loss beside the NaN gradient, never a finite loss."""
    inf = float("inf")
    x = torch.tensor([[-inf, -inf, -inf], [0.0, 1.0, 2.0]], requires_grad=True)
    loss = label_smoothing_loss(x, torch.tensor([0, 1]), alpha, weight=weight, reduction="none")
    assert torch.isnan(loss[0])
    assert torch.isfinite(loss[1])
    loss.sum().backward()
    assert torch.isnan(x.grad[0]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0, 7)])
def test_ls_empty_batches_in_every_dtype(dtype, shape):
    """Item 10: an empty half-precision batch gives 0, as float32 does."""
    x = torch.randn(*shape, dtype=dtype, requires_grad=True)
    y = torch.zeros(shape[:1] + shape[2:] if len(shape) == 3 else (0,), dtype=torch.long)
    if len(shape) == 3:
        y = torch.zeros(shape[:2], dtype=torch.long)
    loss = label_smoothing_loss(x, y, 0.1, dim=-1)
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("bad", [7, -5])
def test_out_of_range_targets_fail_under_torch_func_and_trace(bad):
    """Item 2: the composite path's gather fails on a bad index where a comparison matched none."""
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, bad, 2])
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.func.grad_and_value(lambda a: label_smoothing_loss(a, y, 0.1))(x)
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.func.grad(lambda a: kd_loss(a, x, 2.0, target=y, beta=0.5))(x)
    f = torch.compile(lambda a, t: label_smoothing_loss(a, t, 0.1), backend="aot_eager")
    with pytest.raises(RuntimeError, match="out of bounds"):
        f(x, y)


def test_kd_compiles_with_a_symbolic_temperature():
    """Item 11: fullgraph compile with the temperature symbolic (dynamic=True, several T)."""
    torch.manual_seed(0)
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    f = torch.compile(
        lambda a, b, temp: kd_loss(a, b, temp), fullgraph=True, dynamic=True, backend="aot_eager"
    )
    for temp in (1.0, 2.0, 3.0, 4.0):
        torch.testing.assert_close(f(s, t, temp), kd_loss(s, t, temp))


# issue 16 item 16: a complex target gets the library's message (never cast to its real part)


@pytest.mark.parametrize("which", ["ls", "kd"])
def test_complex_target_gets_a_clear_error(which):
    x = torch.randn(3, 4)
    target = torch.zeros(3, dtype=torch.complex64)

    def call() -> torch.Tensor:
        if which == "ls":
            return label_smoothing_loss(x, target, 0.1)
        return kd_loss(x, x, 2.0, target=target, beta=0.5)

    with pytest.raises(TypeError, match="target indices must be an integer tensor, got dtype"):
        call()
