"""The loss engine (``lsdiffusion._kernels``) in every autograd mode, after in-place
edits, on non-finite rows and with bad arguments, against PyTorch and float64
re-derivations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import forward_ad

from _reference import kd_reference
from lsdiffusion import KDLoss, LabelSmoothingLoss, kd_loss, kd_loss_terms, label_smoothing_loss
from lsdiffusion._kernels import kd as kd_module

HALF = [torch.float16, torch.bfloat16]
T = 2.0


def kd_ref(s, t, temperature=T, target=None, beta=1.0, ignore_index=-100):
    """The shared float64 reference's batchmean, at ``T`` by default, in ``s``'s dtype."""
    mean, _ = kd_reference(s, t, temperature, target, beta, ignore_index)
    return mean.to(s.dtype)


def _data(dtype, device="cpu", rows=6, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(rows, classes, generator=g, dtype=torch.float64).to(device, dtype)
    t = torch.randn(rows, classes, generator=g, dtype=torch.float64).to(device, dtype)
    y = torch.randint(0, classes, (rows,), generator=g).to(device)
    return s, t, y


def ls_fn(y, **kw):
    return lambda z: label_smoothing_loss(z, y, 0.1, **kw)


def ls_ref_fn(y, **kw):
    return lambda z: F.cross_entropy(z, y, label_smoothing=0.1, **kw)


# ---------------------------------------------------------------------------
# point 4: pay only for what is asked
# ---------------------------------------------------------------------------


def test_kd_loss_with_target_and_beta_one_skips_the_hard_term(monkeypatch, dtype, tol):
    seen = []
    original = kd_module.KDKernel.run

    def spy(self, x, need_grad):
        seen.append(self.terms)
        return original(self, x, need_grad)

    monkeypatch.setattr(kd_module.KDKernel, "run", spy)
    s, t, y = _data(dtype)
    y[1] = -100
    loss = kd_loss(s.requires_grad_(), t, T, target=y)
    torch.testing.assert_close(loss, kd_ref(s, t, target=y), **tol)
    assert seen == [False]  # the hard term was not asked for
    terms = kd_loss_terms(s, t, T, target=y)
    assert seen == [False, True]
    valid = y != -100
    hard_ref = F.cross_entropy(s[valid], y[valid])
    torch.testing.assert_close(terms.hard, hard_ref, **tol)
    torch.testing.assert_close(terms.loss, loss, **tol)
    # beta < 1 still mixes the hard term into the loss itself
    torch.testing.assert_close(
        kd_loss(s, t, T, target=y, beta=0.3), kd_ref(s, t, target=y, beta=0.3), **tol
    )


# ---------------------------------------------------------------------------
# point 5: every autograd mode
# ---------------------------------------------------------------------------


def _pairs(y, t):
    return [
        (ls_fn(y), ls_ref_fn(y)),
        (lambda z: kd_loss(z, t, T), lambda z: kd_ref(z, t)),
        (
            lambda z: kd_loss(z, t, T, target=y, beta=0.4),
            lambda z: kd_ref(z, t, target=y, beta=0.4),
        ),
    ]


def test_hessian_and_hvp_match_references(dtype, tol):
    s, t, y = _data(dtype)
    v = torch.randn_like(s)
    for ours, ref in _pairs(y, t):
        h1 = torch.autograd.functional.hessian(ours, s)
        h2 = torch.autograd.functional.hessian(ref, s)
        assert h1.abs().sum() > 0
        torch.testing.assert_close(h1, h2, **tol)
        torch.testing.assert_close(
            torch.autograd.functional.hvp(ours, s, v)[1],
            torch.autograd.functional.hvp(ref, s, v)[1],
            **tol,
        )


def test_gradgradcheck():
    s, t, y = _data(torch.float64)
    s.requires_grad_()
    y[0] = -100
    w = torch.rand(5, dtype=torch.float64)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradgradcheck(
            lambda z, r=reduction: label_smoothing_loss(z, y, 0.2, weight=w, reduction=r), (s,)
        )
    for reduction in ("batchmean", "none"):
        assert torch.autograd.gradgradcheck(
            lambda z, r=reduction: kd_loss(z, t, 3.0, target=y, beta=0.5, reduction=r), (s,)
        )


def test_gradient_penalty_reaches_the_weights(dtype, tol):
    """create_graph=True: a penalty on d loss / d input trains the layer correctly."""
    g = torch.Generator().manual_seed(1)
    inp = torch.randn(6, 4, generator=g, dtype=dtype, requires_grad=True)
    weight = torch.randn(4, 5, generator=g, dtype=dtype, requires_grad=True)
    _, t, y = _data(dtype)

    def penalty_grad(loss_fn):
        weight.grad = None
        loss = loss_fn(inp @ weight)
        (g_in,) = torch.autograd.grad(loss, inp, create_graph=True)
        (loss + g_in.pow(2).sum()).backward()
        return weight.grad.clone()

    for ours, ref in _pairs(y, t):
        torch.testing.assert_close(penalty_grad(ours), penalty_grad(ref), **tol)


def test_torch_func_transforms_match_references(dtype, tol):
    s, t, y = _data(dtype)
    v = torch.randn_like(s)
    for ours, ref in _pairs(y, t):
        torch.testing.assert_close(torch.func.grad(ours)(s), torch.func.grad(ref)(s), **tol)
        torch.testing.assert_close(
            torch.func.jvp(ours, (s,), (v,))[1], torch.func.jvp(ref, (s,), (v,))[1], **tol
        )
        torch.testing.assert_close(
            torch.func.jacrev(torch.func.grad(ours))(s),
            torch.func.jacrev(torch.func.grad(ref))(s),
            **tol,
        )


def test_forward_mode_dual_tensors(dtype, tol):
    s, t, y = _data(dtype)
    v = torch.randn_like(s)
    for ours, ref in _pairs(y, t):
        with forward_ad.dual_level():
            out = ours(forward_ad.make_dual(s, v))
            tangent = forward_ad.unpack_dual(out).tangent
        assert tangent is not None
        torch.testing.assert_close(tangent, torch.func.jvp(ref, (s,), (v,))[1], **tol)


def test_vmap_over_an_extra_batch_dim(dtype, tol):
    g = torch.Generator().manual_seed(2)
    s = torch.randn(3, 4, 5, generator=g, dtype=dtype)
    t = torch.randn(3, 4, 5, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (3, 4), generator=g)
    y[0, 1] = -100
    got = torch.func.vmap(lambda a, b: label_smoothing_loss(a, b, 0.1))(s, y)
    want = torch.stack(
        [F.cross_entropy(a, b, label_smoothing=0.1) for a, b in zip(s, y, strict=True)]
    )
    torch.testing.assert_close(got, want, **tol)
    got = torch.func.vmap(lambda a, b, c: kd_loss(a, b, T, target=c))(s, t, y)
    want = torch.stack([kd_ref(a, b, target=c) for a, b, c in zip(s, t, y, strict=True)])
    torch.testing.assert_close(got, want, **tol)
    # per-sample gradients
    grads = torch.func.vmap(torch.func.grad(lambda a, b: kd_loss(a, b, T)))(s, t)
    want = torch.stack(
        [torch.func.grad(lambda a, b=b: kd_ref(a, b))(a) for a, b in zip(s, t, strict=True)]
    )
    torch.testing.assert_close(grads, want, **tol)


def test_jit_trace_matches_eager():
    s, t, y = _data(torch.float64)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(lambda z: label_smoothing_loss(z, y) + kd_loss(z, t, T), (s,))
    s2 = torch.randn_like(s)
    want = F.cross_entropy(s2, y, label_smoothing=0.1) + kd_ref(s2, t)
    torch.testing.assert_close(traced(s2), want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------
# point 7: torch.compile, fullgraph
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_training_step_matches_eager(backend):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 6)
    teacher = torch.nn.Linear(8, 6)
    ls = LabelSmoothingLoss(0.1, weight=torch.rand(6))
    kd = KDLoss(3.0, beta=0.5, dim=-1)
    x = torch.randn(10, 8)
    y = torch.randint(0, 6, (10,))
    y[2] = -100

    def forward(inp, target):
        logits = model(inp)
        with torch.no_grad():
            t_logits = teacher(inp)
        return ls(logits, target) + kd(logits, t_logits, target)

    # the usual compiled training step: forward + loss compiled, backward outside
    compiled = torch.compile(forward, backend=backend, fullgraph=True)
    grads = []
    losses = []
    for fn in (forward, compiled):
        model.zero_grad()
        loss = fn(x, y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# point 6: in-place changes between the call and backward
# ---------------------------------------------------------------------------

MUTATION_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def _check_raises_or_exact(loss, x, mutate, want_grad, retain=False):
    """backward after ``mutate()`` raises the in-place error or gives ``want_grad``."""
    mutate()
    for _ in range(2 if retain else 1):
        x.grad = None
        try:
            loss.backward(retain_graph=retain)
        except RuntimeError as err:
            if "modified by an inplace operation" not in str(err):
                raise
            return "raised"
        torch.testing.assert_close(x.grad, want_grad, rtol=0, atol=0)
    return "exact"


@pytest.mark.parametrize("dtype", MUTATION_DTYPES)
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("what", ["teacher", "index_target", "kd_target"])
def test_kd_and_targets_mutated_in_place(dtype, retain, what):
    s, t, y = _data(dtype)
    y[0] = -100
    s.requires_grad_()

    def call():
        if what == "index_target":
            return label_smoothing_loss(s, y, 0.1)
        return kd_loss(s, t, T, target=y, beta=0.5)

    (want,) = torch.autograd.grad(call(), s)
    loss = call()

    def mutate():
        if what == "teacher":
            t.mul_(5)
        else:
            y.copy_(torch.roll(y, 1))

    _check_raises_or_exact(loss, s, mutate, want, retain)


@pytest.mark.parametrize("dtype", MUTATION_DTYPES)
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("what", ["probs", "weight"])
def test_ls_probability_target_and_weight_mutated_in_place(dtype, retain, what):
    s, _, y = _data(dtype)
    s.requires_grad_()
    cdtype = torch.float64 if dtype == torch.float64 else torch.float32
    probs = torch.softmax(torch.randn(6, 5, dtype=cdtype), 1).to(dtype)
    weight = torch.rand(5, dtype=cdtype)

    def call():
        if what == "probs":
            return label_smoothing_loss(s, probs, 0.1)
        return label_smoothing_loss(s, y, 0.1, weight=weight)

    (want,) = torch.autograd.grad(call(), s)
    loss = call()

    def mutate():
        (probs if what == "probs" else weight).mul_(3)

    _check_raises_or_exact(loss, s, mutate, want, retain)


def test_recomputing_backward_raises_after_teacher_mutation():
    """Half inputs recompute in backward: the in-place error, never a silent change."""
    s, t, _ = _data(torch.float16)
    s.requires_grad_()
    loss = kd_loss(s, t, T)
    t.mul_(5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


# ---------------------------------------------------------------------------
# point 9: rows with no finite logit
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["batchmean", "sum", "none"])
@pytest.mark.parametrize("who", ["teacher", "student"])
def test_kd_rows_without_finite_logits_are_nan(who, reduction, dtype):
    s, t, _ = _data(dtype)
    (t if who == "teacher" else s)[2] = float("-inf")
    s.requires_grad_()
    loss = kd_loss(s, t, T, reduction=reduction)
    upstream = torch.ones_like(loss)
    (grad,) = torch.autograd.grad(loss, s, upstream)
    if reduction == "none":
        assert torch.isnan(loss[2])
        assert torch.isfinite(loss[[0, 1, 3, 4, 5]]).all()
    else:
        assert torch.isnan(loss)
    assert torch.isnan(grad[2]).all()
    assert torch.isfinite(grad[[0, 1, 3, 4, 5]]).all()


def test_ls_row_without_finite_logits_is_nan(dtype):
    s, _, y = _data(dtype)
    s[1] = float("-inf")
    s.requires_grad_()
    loss = label_smoothing_loss(s, y, 0.1, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.isnan(loss[1])
    assert torch.isnan(grad[1]).all()
    assert torch.isfinite(grad[[0, 2, 3, 4, 5]]).all()


def test_non_finite_rows_agree_between_fast_and_composite_paths():
    s, t, y = _data(torch.float64)
    s[0, 1] = t[0, 1] = float("-inf")  # a masked class: a finite loss
    y[0] = 0
    t[3] = float("-inf")  # no teacher distribution: NaN
    t[4, 2] = float("-inf")
    for fn in (
        lambda z: kd_loss(z, t, T, target=y, beta=0.5, reduction="none"),
        lambda z: label_smoothing_loss(z, y, 0.1, reduction="none"),
    ):
        x = s.clone().requires_grad_()
        fast = fn(x)  # the fused first-order path
        (fast_grad,) = torch.autograd.grad(fast, x, torch.ones_like(fast))
        slow, vjp = torch.func.vjp(fn, s)  # a torch.func transform: the composite path
        (slow_grad,) = vjp(torch.ones_like(slow))
        torch.testing.assert_close(fast.detach(), slow, equal_nan=True)
        torch.testing.assert_close(fast_grad, slow_grad, equal_nan=True)
        assert torch.isfinite(fast[[0, 1, 2]]).all()


# ---------------------------------------------------------------------------
# point 8: no host synchronisation off the CPU (meta tensors cannot be read)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_no_value_is_read_on_a_non_cpu_device(weighted):
    """On a device whose values cannot be read, every call still runs: nothing syncs."""
    s = torch.randn(6, 5, device="meta", requires_grad=True)
    t = torch.randn(6, 5, device="meta")
    y = torch.randint(0, 5, (6,), device="meta")
    w = torch.rand(5, device="meta") if weighted else None
    loss = label_smoothing_loss(s, y, 0.1, weight=w) + kd_loss(s, t, T, target=y, beta=0.5)
    loss.backward()
    assert s.grad is not None
    assert s.grad.shape == s.shape
    terms = kd_loss_terms(s, t, T, target=y, reduction="none")
    assert terms.hard.shape == (6,)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_sync_on_cuda():
    s, t, y = _data(torch.float32, "cuda")
    s.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = label_smoothing_loss(s, y, 0.1) + kd_loss(s, t, T, target=y)
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.testing.assert_close(
        loss, F.cross_entropy(s, y, label_smoothing=0.1) + kd_ref(s, t, target=y)
    )


# ---------------------------------------------------------------------------
# point 10: arguments
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ignore_index": None}, TypeError, "ignore_index must be an int"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
        ({"ignore_index": True}, TypeError, "ignore_index must be an int"),
        ({"ignore_index": 2**70}, ValueError, "ignore_index must fit in int64"),
        ({"dim": 1.0}, TypeError, "dim must be an int"),
        ({"dim": True}, TypeError, "dim must be an int"),
    ],
)
def test_argument_types_are_checked(kwargs, error, match):
    s, t, y = _data(torch.float32)
    with pytest.raises(error, match=match):
        label_smoothing_loss(s, y, 0.1, **kwargs)
    with pytest.raises(error, match=match):
        kd_loss(s, t, T, target=y, **kwargs)


def test_t2_scaling_must_be_a_bool():
    s, t, _ = _data(torch.float32)
    with pytest.raises(TypeError, match="t2_scaling must be a bool"):
        kd_loss(s, t, T, t2_scaling="no")


def test_weight_that_requires_grad_is_refused():
    s, _, y = _data(torch.float32)
    w = torch.rand(5, requires_grad=True)
    with pytest.raises(ValueError, match=r"weight requires grad.*weight\.detach\(\)"):
        label_smoothing_loss(s, y, weight=w)
    label_smoothing_loss(s, y, weight=w.detach())  # the fix the message names works


def test_numpy_integer_ignore_index_is_accepted():
    np = pytest.importorskip("numpy")
    s, _, y = _data(torch.float32)
    y[0] = 3
    got = label_smoothing_loss(s, y, 0.1, ignore_index=np.int64(3))
    torch.testing.assert_close(got, F.cross_entropy(s, y, label_smoothing=0.1, ignore_index=3))


@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_class_weights_summing_to_zero(reduction):
    s, _, y = _data(torch.float64)
    for w in (
        torch.zeros(5, dtype=torch.float64),
        torch.tensor([1.0, -1.0, 0.5, -0.5, 0.0], dtype=torch.float64),
    ):
        (v1, g1), (v2, g2) = (
            _grad_of(
                lambda z, w=w: label_smoothing_loss(z, y, 0.1, weight=w, reduction=reduction), s
            ),
            _grad_of(
                lambda z, w=w: F.cross_entropy(
                    z, y, weight=w, label_smoothing=0.1, reduction=reduction
                ),
                s,
            ),
        )
        torch.testing.assert_close(v1, v2)
        torch.testing.assert_close(g1, g2)


def _grad_of(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    (g,) = torch.autograd.grad(out, x, torch.ones_like(out))
    return out.detach(), g


# ---------------------------------------------------------------------------
# found in review: vmap(grad) with batched targets, ignored bad rows off the
# fast path, KD precision with large logit offsets
# ---------------------------------------------------------------------------


def test_vmap_of_grad_with_batched_targets(dtype, tol):
    s, t, y = _data(dtype)
    got = torch.func.vmap(torch.func.grad(lambda z, yy: label_smoothing_loss(z[None], yy[None])))(
        s, y
    )
    want = torch.stack(
        [
            torch.func.grad(
                lambda z, yy=yy: F.cross_entropy(z[None], yy[None], label_smoothing=0.1)
            )(z)
            for z, yy in zip(s, y, strict=True)
        ]
    )
    torch.testing.assert_close(got, want, **tol)
    got = torch.func.vmap(
        torch.func.grad(lambda z, tt, yy: kd_loss(z[None], tt[None], T, target=yy[None], beta=0.4))
    )(s, t, y)
    want = torch.stack(
        [
            torch.func.grad(
                lambda z, tt=tt, yy=yy: kd_ref(z[None], tt[None], target=yy[None], beta=0.4)
            )(z)
            for z, tt, yy in zip(s, t, y, strict=True)
        ]
    )
    torch.testing.assert_close(got, want, **tol)


def test_ignored_bad_rows_get_zero_gradient_on_every_path():
    s, t, y = _data(torch.float64)
    y[0] = -100
    s[0, 1] = float("nan")  # an ignored row with NaN logits (padding)
    t[0] = float("-inf")  # and no teacher distribution there
    for fn in (
        lambda z: label_smoothing_loss(z, y, 0.1),
        lambda z: kd_loss(z, t, T, target=y, beta=0.5),
    ):
        x = s.clone().requires_grad_()
        (g_fast,) = torch.autograd.grad(fn(x), x)
        x = s.clone().requires_grad_()
        (g_graph,) = torch.autograd.grad(fn(x), x, create_graph=True)
        g_func = torch.func.grad(fn)(s)
        g_compiled = torch.func.grad(torch.compile(fn, backend="eager", fullgraph=True))(s)
        for g in (g_fast, g_graph, g_func, g_compiled):
            assert torch.count_nonzero(g[0]) == 0
            assert torch.isfinite(g[1:]).all()
            torch.testing.assert_close(g.detach(), g_fast)


@pytest.mark.parametrize(
    ("student_offset", "teacher_offset"), [(1e4, 0.0), (0.0, 1e3), (1e4, -1e4)]
)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_kd_keeps_its_digits_with_large_logit_offsets(student_offset, teacher_offset, temperature):
    g = torch.Generator().manual_seed(3)
    s = torch.randn(16, 100, generator=g) + student_offset
    t = torch.randn(16, 100, generator=g) + teacher_offset
    ref = kd_ref(s.double(), t.double(), temperature)
    got = kd_loss(s, t, temperature)
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-6)


def test_pooled_scratch_never_leaks_into_results():
    """Small scratch blocks are reused across calls: earlier results must not change."""
    from lsdiffusion._kernels.eager import blocks

    outs = []
    for shift in (0.0, 1.0, 2.0):
        s, t, y = _data(torch.float64)
        s = (s + shift).requires_grad_()
        live = kd_loss_terms(s, t, T, target=y, beta=0.5, reduction="none")
        (live_grad,) = torch.autograd.grad(live.loss.sum(), s)
        outs.append((s.detach(), t, y, live, live_grad, [v.clone() for v in live]))
    assert getattr(blocks._cache, "pool", None)  # the pool was used
    for s, t, y, live, live_grad, values in outs:
        for a, b in zip(values, live, strict=True):
            torch.testing.assert_close(b.detach(), a)  # unchanged by the later calls
        x = s.clone().requires_grad_()
        (want,) = torch.autograd.grad(kd_ref(x, t, target=y, beta=0.5) * (y != -100).sum(), x)
        torch.testing.assert_close(live_grad, want)


# ---------------------------------------------------------------------------
# torch.export (the replacement for the deprecated torch.jit.trace); issue 16 item 2
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_export_of_the_modules_matches_eager(dtype):
    s, t, y = _data(dtype)
    y[1] = -100
    weight = torch.rand(5, dtype=dtype)
    cases = [
        (LabelSmoothingLoss(0.1, weight=weight), (s, y)),
        (KDLoss(T, beta=0.5), (s, t, y)),
    ]
    for module, args in cases:
        exported = torch.export.export(module, args)
        s2 = torch.randn_like(s)
        new_args = (s2, *args[1:])
        torch.testing.assert_close(exported.module()(*new_args), module(*new_args))
    ref = F.cross_entropy(s2, y, weight=weight, label_smoothing=0.1)
    ls_exported = torch.export.export(cases[0][0], cases[0][1]).module()
    torch.testing.assert_close(ls_exported(s2, y), ref)


@pytest.mark.parametrize("bad", [7, -5])
def test_out_of_range_targets_fail_under_inductor_and_a_trace(bad):
    """A bad class index fails where the range check cannot run (compiled, traced)."""
    x = torch.randn(4, 3)
    y = torch.tensor([0, 1, bad, 2])
    ls = torch.compile(lambda a, b: label_smoothing_loss(a, b, 0.1), backend="inductor")
    kd = torch.compile(lambda a, b: kd_loss(a, x, T, target=b, beta=0.5), backend="inductor")
    # with beta=1 the target only masks rows: it is still indexed with
    kd1 = torch.compile(lambda a, b: kd_loss(a, x, T, target=b), backend="inductor")
    for fn in (ls, kd, kd1):
        with pytest.raises(RuntimeError, match="out of bounds"):
            fn(x, y)
    with pytest.raises(RuntimeError, match="out of bounds"):
        torch.func.grad(lambda a: kd_loss(a, x, T, target=y))(x)
    with pytest.warns(torch.jit.TracerWarning):
        traced = torch.jit.trace(
            lambda a, b: label_smoothing_loss(a, b, 0.1), (x, torch.tensor([0, 1, 2, 2]))
        )
    with pytest.raises(RuntimeError, match="out of bounds"):
        traced(x, y)
