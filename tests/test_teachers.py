"""Cached top-k teachers in kd_loss: against dense KD (k = V) and a float64 re-derivation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsdiffusion import KDLoss, TopKTeacher, kd_loss, kd_loss_terms

KINDS = [("logits", "renormalize"), ("logprobs", "renormalize"), ("logprobs", "bucket")]


def _reference(s, t, k, temperature, tail, t2=True):
    """Per-row top-k KD written out densely in float64 (the test's own expansion).

    Separate from the dense ``tests/_reference.py`` on purpose: a cached teacher
    has its own formula (the tail rules), which is what this expands.
    """
    s, t = s.double(), t.double()
    lp_t = torch.log_softmax(t, 1)
    v, idx = lp_t.topk(k, 1)
    lp_s = torch.log_softmax(s / temperature, 1)
    if tail == "renormalize":
        q = torch.softmax(v / temperature, 1)
        rows = (q * (q.log() - lp_s.gather(1, idx))).sum(1)
    else:
        r = (1 - v.exp().sum(1)).clamp(min=0)
        q = torch.softmax(torch.cat([v, r.log()[:, None]], 1) / temperature, 1)
        p_cached = lp_s.exp().gather(1, idx)
        p = torch.cat([p_cached, (1 - p_cached.sum(1))[:, None]], 1)
        rows = torch.where(q > 0, q * (q.log() - p.log()), 0.0).sum(1)
    return rows * (temperature**2 if t2 else 1.0)


@pytest.mark.parametrize(("kind", "tail"), KINDS)
@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_k_equal_v_is_dense_kd(kind, tail, temperature, dtype):
    torch.manual_seed(0)
    s = torch.randn(7, 11, dtype=dtype, requires_grad=True)
    t = torch.randn(7, 11, dtype=dtype)
    cached = TopKTeacher.from_logits(t, 11, kind=kind, tail=tail)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for reduction in ("batchmean", "sum", "none"):
        a = kd_loss(s, cached, temperature, reduction=reduction)
        b = kd_loss(s, t, temperature, reduction=reduction)
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
        (ga,) = torch.autograd.grad(a.sum(), s)
        (gb,) = torch.autograd.grad(b.sum(), s)
        torch.testing.assert_close(ga, gb, atol=tol, rtol=tol)


@pytest.mark.parametrize("tail", ["renormalize", "bucket"])
@pytest.mark.parametrize("temperature", [1.0, 2.5, 16.0])
@pytest.mark.parametrize("t2", [True, False])
def test_topk_against_float64_reference(tail, temperature, t2):
    torch.manual_seed(1)
    s = torch.randn(9, 40, dtype=torch.float64, requires_grad=True)
    t = 3 * torch.randn(9, 40, dtype=torch.float64)
    cached = TopKTeacher.from_logits(t, 5, kind="logprobs", tail=tail)
    loss = kd_loss(s, cached, temperature, t2_scaling=t2)
    ref = _reference(s, t, 5, temperature, tail, t2).mean()
    torch.testing.assert_close(loss, ref, atol=1e-12, rtol=1e-10)
    (g,) = torch.autograd.grad(loss, s)
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
    # create_graph takes the composite formula: same gradient, and differentiable again
    (g2,) = torch.autograd.grad(
        kd_loss(s, cached, temperature, t2_scaling=t2), s, create_graph=True
    )
    torch.testing.assert_close(g2, g_ref, atol=1e-12, rtol=1e-10)
    assert g2.requires_grad


def test_renormalize_logits_and_logprobs_agree():
    torch.manual_seed(2)
    s, t = torch.randn(5, 30, dtype=torch.float64), torch.randn(5, 30, dtype=torch.float64)
    a = kd_loss(s, TopKTeacher.from_logits(t, 4, kind="logits"), 3.0)
    b = kd_loss(s, TopKTeacher.from_logits(t, 4, kind="logprobs"), 3.0)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_ignore_index_beta_and_terms():
    torch.manual_seed(3)
    s = torch.randn(8, 20, dtype=torch.float64, requires_grad=True)
    t = torch.randn(8, 20, dtype=torch.float64)
    y = torch.randint(0, 20, (8,))
    y[[1, 5]] = -100
    cached = TopKTeacher.from_logits(t, 6, kind="logprobs", tail="bucket")
    terms = kd_loss_terms(s, cached, 2.0, target=y, beta=0.25)
    keep = y != -100
    soft = _reference(s[keep], t[keep], 6, 2.0, "bucket").mean()
    hard = F.cross_entropy(s, y)
    torch.testing.assert_close(terms.soft, soft.detach(), atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(terms.hard, hard.detach(), atol=1e-12, rtol=1e-10)
    ref = 0.75 * hard + 0.25 * soft
    torch.testing.assert_close(terms.loss, ref, atol=1e-12, rtol=1e-10)
    (g,) = torch.autograd.grad(terms.loss, s)
    (g_ref,) = torch.autograd.grad(ref, s)
    torch.testing.assert_close(g, g_ref, atol=1e-12, rtol=1e-10)
    assert torch.all(g[~keep] == 0)


def test_token_shapes_and_module():
    torch.manual_seed(4)
    s = torch.randn(2, 3, 16, requires_grad=True)
    t = torch.randn(2, 3, 16)
    cached = TopKTeacher.from_logits(t, 16, dim=-1)
    assert cached.indices.shape == (2, 3, 16)
    loss = KDLoss(2.0, dim=-1)(s, cached)
    torch.testing.assert_close(loss, kd_loss(s, t, 2.0, dim=-1), atol=1e-5, rtol=1e-5)
    rows = kd_loss(s, TopKTeacher.from_logits(t, 4, dim=-1), 2.0, dim=-1, reduction="none")
    assert rows.shape == (2, 3)


def test_float16_and_bfloat16_students():
    torch.manual_seed(5)
    t = torch.randn(6, 50)
    cached = TopKTeacher.from_logits(t, 8, kind="logprobs", tail="bucket")
    s64 = torch.randn(6, 50, dtype=torch.float64)
    ref = _reference(s64, t, 8, 2.0, "bucket").mean()
    for dtype in (torch.float16, torch.bfloat16):
        s = s64.to(dtype).requires_grad_()
        loss = kd_loss(s, cached, 2.0)
        loss.backward()
        assert loss.dtype == torch.float32
        assert s.grad is not None
        assert s.grad.dtype == dtype
        assert abs(loss.item() - ref.item()) < 0.05 * abs(ref.item()) + 1e-3


def test_masked_student_classes_and_no_finite_row():
    s = torch.tensor([[0.0, 1.0, float("-inf"), 2.0], [float("-inf")] * 4], requires_grad=True)
    t = torch.tensor([[0.0, 1.0, 3.0, 2.0], [0.0, 1.0, 2.0, 3.0]])
    cached = TopKTeacher.from_logits(t, 2)  # caches class 2 of row 0, which the student masks
    loss = kd_loss(s, cached, 1.0, reduction="none")
    assert loss[0] == float("inf")
    assert torch.isnan(loss[1])
    loss[1].backward()
    assert torch.isnan(s.grad[1]).all()


def test_retain_graph_and_upstream():
    torch.manual_seed(6)
    s = torch.randn(4, 12, dtype=torch.float64, requires_grad=True)
    cached = TopKTeacher.from_logits(torch.randn(4, 12, dtype=torch.float64), 3)
    loss = kd_loss(s, cached, 2.0)
    (g1,) = torch.autograd.grad(loss, s, torch.tensor(2.5, dtype=torch.float64), retain_graph=True)
    (g2,) = torch.autograd.grad(loss, s, torch.tensor(-0.5, dtype=torch.float64))
    torch.testing.assert_close(g1, -5 * g2)


def test_torch_func_and_compile():
    torch.manual_seed(7)
    s = torch.randn(4, 12, dtype=torch.float64)
    cached = TopKTeacher.from_logits(torch.randn(4, 12, dtype=torch.float64), 3, kind="logprobs")
    g = torch.func.grad(lambda x: kd_loss(x, cached, 2.0))(s)
    x = s.clone().requires_grad_()
    (g_ref,) = torch.autograd.grad(kd_loss(x, cached, 2.0), x)
    torch.testing.assert_close(g, g_ref)


def test_the_teacher_gets_no_gradient():
    values = torch.randn(3, 4, requires_grad=True)
    idx = torch.arange(4).repeat(3, 1)
    s = torch.randn(3, 10, requires_grad=True)
    kd_loss(s, TopKTeacher(idx, values), 2.0).backward()
    assert values.grad is None


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: TopKTeacher(torch.zeros(2, 3), torch.zeros(2, 3)), TypeError, "integer"),
        (
            lambda: TopKTeacher(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4)),
            ValueError,
            "same shape",
        ),
        (
            lambda: TopKTeacher(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), kind="p"),
            ValueError,
            "kind must be one of",
        ),
        (
            lambda: TopKTeacher(
                torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), tail="bucket"
            ),
            ValueError,
            "needs kind='logprobs'",
        ),
        (
            lambda: TopKTeacher.from_logits(torch.zeros(2, 3), 4),
            ValueError,
            r"k must be in \[1, 3\]",
        ),
    ],
)
def test_bad_teachers(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_bad_teacher_against_student():
    s = torch.randn(2, 5)
    with pytest.raises(ValueError, match=r"outside \[0, 4\]"):
        kd_loss(s, TopKTeacher(torch.tensor([[0, 5]]).repeat(2, 1), torch.zeros(2, 2)), 1.0)
    with pytest.raises(ValueError, match="repeats a class"):
        kd_loss(s, TopKTeacher(torch.tensor([[1, 1]]).repeat(2, 1), torch.zeros(2, 2)), 1.0)
    with pytest.raises(ValueError, match="must have shape"):
        kd_loss(s, TopKTeacher(torch.zeros(3, 2, dtype=torch.long), torch.zeros(3, 2)), 1.0)
    with pytest.raises(ValueError, match="log-probabilities"):
        kd_loss(s, TopKTeacher(torch.tensor([[0, 1]] * 2), torch.ones(2, 2), kind="logprobs"), 1.0)


def test_bucket_of_a_confident_student_does_not_underflow():
    """Review: a tail 120 nats below the maximum kept its mass (finite loss and gradient)."""
    s = torch.zeros(2, 10)
    s[:, 3:] = -120.0
    t = torch.zeros(2, 10)
    t[:, 3:] = -2.0
    idx = torch.arange(3).expand(2, 3).contiguous()
    values = torch.log_softmax(t, 1)[:, :3].contiguous()
    x = s.clone().requires_grad_()
    loss = kd_loss(x, TopKTeacher(idx, values, kind="logprobs", tail="bucket"), 1.0)
    loss.backward()
    x64 = s.double().requires_grad_()
    ref = kd_loss(x64, TopKTeacher(idx, values.double(), kind="logprobs", tail="bucket"), 1.0)
    (g_ref,) = torch.autograd.grad(ref, x64, create_graph=True)  # the composite formula
    assert math.isfinite(loss.item())
    assert abs(loss.item() - ref.item()) < 1e-5 * ref.item()
    torch.testing.assert_close(x.grad.double(), g_ref.detach(), atol=1e-6, rtol=1e-5)


def test_logprobs_holding_more_than_the_whole_mass_are_refused():
    idx = torch.arange(5).repeat(4, 1)
    with pytest.raises(ValueError, match="more than the whole probability mass"):
        kd_loss(torch.randn(4, 8), TopKTeacher(idx, torch.full((4, 5), -0.1), kind="logprobs"), 1.0)


def test_teachers_compare_by_identity():
    cached = TopKTeacher.from_logits(torch.randn(2, 5), 2)
    assert cached == cached
    assert cached != TopKTeacher.from_logits(torch.randn(2, 5), 2)


def test_to_takes_every_form_of_tensor_to():
    """`.to(tensor)` (Tensor.to's `other` form) follows its dtype and device; indices stay int."""
    cached = TopKTeacher.from_logits(torch.randn(4, 10), 3)
    for args, kwargs in [
        ((torch.zeros(2, dtype=torch.float64),), {}),
        ((), {"tensor": torch.zeros(2, dtype=torch.float64)}),  # Tensor.to's keyword
        (("cpu", torch.float64), {}),
        ((torch.float64,), {}),
        ((), {"device": "cpu", "dtype": torch.float64}),
        ((torch.float64, False, True), {}),  # non_blocking, copy given positionally
        ((torch.zeros(1, dtype=torch.float64),), {"non_blocking": False, "copy": True}),
    ]:
        moved = cached.to(*args, **kwargs)
        assert moved.indices.dtype == torch.int64, (args, kwargs)
        assert moved.values.dtype == torch.float64, (args, kwargs)
        assert torch.equal(moved.indices, cached.indices)
        assert moved.kind == cached.kind
        assert moved.tail == cached.tail
    copied = cached.to(torch.float32, copy=True)
    assert copied.indices.data_ptr() != cached.indices.data_ptr()
    assert cached.to("cpu").values.dtype == torch.float32
    with pytest.raises(TypeError, match=r"values must stay floating point, got torch.int64"):
        cached.to(torch.int64)
    with pytest.raises(TypeError, match=r"values must stay floating point, got torch.int32"):
        cached.to(torch.zeros(1, dtype=torch.int32))


@pytest.mark.parametrize(
    ("logits", "dim", "error", "message"),
    [
        (torch.zeros(2, 3), 2, ValueError, r"dim=2 is out of range for teacher_logits of shape"),
        (torch.zeros(2, 3), -3, ValueError, r"expected -2 <= dim < 2"),
        (torch.zeros(2, 3), 1.5, TypeError, "dim must be an int, got float 1.5"),
        (torch.zeros(2, 3), True, TypeError, "dim must be an int, got bool True"),
        (torch.tensor(1.0), -1, ValueError, "teacher_logits must have at least one dimension"),
        (torch.zeros(3), -1, ValueError, r"teacher_logits must be \(N, V, ...\).*got shape \(3,\)"),
    ],
)
def test_from_logits_bad_dim(logits, dim, error, message):
    """A bad `dim` gets the library's dim message, not a raw IndexError from a shape tuple."""
    with pytest.raises(error, match=message):
        TopKTeacher.from_logits(logits, 1, dim=dim)


def test_from_logits_k_out_of_range_names_the_dim_and_shape():
    t = torch.zeros(2, 5, 3)
    for k in (0, 4, -1):
        with pytest.raises(
            ValueError,
            match=rf"k must be in \[1, 3\] \(the size of dim 2 of teacher_logits "
            rf"\(2, 5, 3\), its classes\), got {k}",
        ):
            TopKTeacher.from_logits(t, k)
    with pytest.raises(ValueError, match=r"teacher_logits has no classes: dim 1 of \(2, 0\)"):
        TopKTeacher.from_logits(torch.zeros(2, 0), 1)
    with pytest.raises(TypeError, match="k must be an int, got float"):
        TopKTeacher.from_logits(t, 2.0)  # type: ignore[arg-type]
    assert TopKTeacher.from_logits(t, np.int64(2)).indices.shape == (2, 5, 2)  # numpy ints too


# ---------------------------------------------------------------------------
# the bucket's cached log-mass (TopKTeacher.residual)
# ---------------------------------------------------------------------------


def _confident_teacher(dtype=torch.float32):
    """Top-8 of 1000 classes holding all but about 1e-6 of the mass, in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(64, 1000, generator=g, dtype=torch.float64) * 2
    t[:, :8] += 18
    s = torch.randn(64, 1000, generator=g, dtype=torch.float64)
    return s.to(dtype), t.to(dtype), s, t


@pytest.mark.parametrize("temperature", [1.0, 4.0, 16.0])
def test_cached_residual_keeps_a_tiny_bucket_exact_in_float32(temperature):
    """1 - sum exp(values) cancels in float32; from_logits caches log r from the tail itself."""
    s32, t32, s64, t64 = _confident_teacher()
    ref = kd_loss(s64, TopKTeacher.from_logits(t64, 8, kind="logprobs", tail="bucket"),
                  temperature, reduction="none")  # fmt: skip
    cached = TopKTeacher.from_logits(t32, 8, kind="logprobs", tail="bucket")
    assert cached.residual is not None
    assert cached.residual.shape == (64, 1)
    ours = kd_loss(s32, cached, temperature, reduction="none")
    rel = ((ours.double() - ref).abs() / ref.abs()).max()
    assert rel < 1e-5, float(rel)
    if temperature > 1:  # without it, r^(1/T) magnifies the cancellation
        bare = TopKTeacher(cached.indices, cached.values, kind="logprobs", tail="bucket")
        worse = kd_loss(s32, bare, temperature, reduction="none")
        assert ((worse.double() - ref).abs() / ref.abs()).max() > 100 * rel


def test_cached_residual_is_the_log_of_the_uncached_mass():
    t = torch.randn(5, 30, dtype=torch.float64)
    cached = TopKTeacher.from_logits(t, 4, kind="logprobs", tail="bucket", dim=1)
    p = torch.softmax(t, 1)
    rest = p.sum(1) - p.gather(1, cached.indices).sum(1)
    torch.testing.assert_close(cached.residual[:, 0], rest.log(), rtol=1e-12, atol=1e-12)
    # class dim elsewhere: the residual keeps it, of size 1
    seq = TopKTeacher.from_logits(torch.randn(2, 3, 30), 4, kind="logprobs", tail="bucket")
    assert seq.residual.shape == (2, 3, 1)
    assert TopKTeacher.from_logits(t, 4, kind="logprobs").residual is None  # renormalize


def test_cached_residual_moves_with_the_teacher_and_goes_through_the_fused_loss():
    from lsdiffusion import fused_linear_kd_loss

    g = torch.Generator().manual_seed(0)
    h, w = torch.randn(12, 6, generator=g), torch.randn(50, 6, generator=g)
    t = torch.randn(12, 50, generator=g) * 4
    cached = TopKTeacher.from_logits(t, 6, kind="logprobs", tail="bucket")
    moved = cached.to(torch.float64)
    assert moved.residual.dtype == torch.float64
    torch.testing.assert_close(moved.residual, cached.residual.double())
    loss = fused_linear_kd_loss(h, w, cached, None, 4.0, chunk_size=5)
    torch.testing.assert_close(loss, kd_loss(h @ w.T, cached, 4.0), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("residual", "tail", "error", "message"),
    [
        (torch.zeros(4, 1), "renormalize", ValueError, "only tail='bucket' uses it"),
        (torch.zeros(4, 1, dtype=torch.long), "bucket", TypeError, "floating-point"),
        (torch.zeros(4), "bucket", ValueError, "indices' dims"),
    ],
)
def test_bad_residuals(residual, tail, error, message):
    idx, val = torch.zeros(4, 2, dtype=torch.long), torch.full((4, 2), -1.0)
    kind = "logprobs"
    with pytest.raises(error, match=message):
        TopKTeacher(idx, val, kind=kind, tail=tail, residual=residual)


def test_residual_shape_and_mass_are_checked_against_the_student():
    s = torch.randn(4, 10)
    idx = torch.arange(3).repeat(4, 1)
    val = torch.full((4, 3), -2.0)
    wrong = TopKTeacher(idx, val, kind="logprobs", tail="bucket", residual=torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"teacher.residual must have shape \(4, 1\)"):
        kd_loss(s, wrong, 2.0)
    positive = TopKTeacher(idx, val, kind="logprobs", tail="bucket", residual=torch.ones(4, 1))
    with pytest.raises(ValueError, match="residual must hold log-probabilities"):
        kd_loss(s, positive, 2.0)
