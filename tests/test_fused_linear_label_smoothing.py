"""fused_linear_label_smoothing_loss against label_smoothing_loss on materialised logits.

Both chunk backends run every equivalence test: the eager engine, and the
Triton kernels (under ``TRITON_INTERPRET=1`` on the CPU: the CUDA path).
PyTorch's own ``F.linear_cross_entropy`` (2.13+) and ``F.cross_entropy`` are
the outside references.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from _devices import BACKEND_DEVICE
from lsdiffusion import (
    FusedLinearLabelSmoothingLoss,
    fused_linear_label_smoothing_loss,
    label_smoothing_loss,
)

# the interpreter evaluates masked-out lanes too (exp(-inf - -inf) and the like)
pytestmark = pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
TOL64 = {"rtol": 1e-10, "atol": 1e-10}


def make(dtype=torch.float64, shape=(23,), h=6, v=11, bias=True, seed=0, ignore=True, device="cpu"):
    g = torch.Generator().manual_seed(seed)

    def rand(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64).to(device, dtype)

    hidden = rand(*shape, h).requires_grad_()
    weight = rand(v, h).requires_grad_()
    bias_t = rand(v).requires_grad_() if bias else None
    y = torch.randint(0, v, shape, generator=g)
    if ignore:
        y.view(-1)[::4] = -100
    return hidden, weight, bias_t, y.to(device)


def logits_of(hidden, weight, bias):
    return hidden @ weight.T if bias is None else hidden @ weight.T + bias


def grads(out, params, upstream=None):
    return torch.autograd.grad(out, [p for p in params if p is not None], upstream)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("alpha", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("chunk_size", [1, 5, None])
@pytest.mark.parametrize("shape", [(23,), (3, 7)])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_label_smoothing_loss_in_float64(
    reduction, alpha, chunk_size, shape, weighted, backend
):
    hidden, weight, bias, y = make(shape=shape, device=BACKEND_DEVICE[backend])
    class_weight = None
    if weighted:
        class_weight = torch.rand(weight.shape[0], dtype=torch.float64).to(hidden.device) + 0.1
    ours = fused_linear_label_smoothing_loss(
        hidden, weight, y, alpha, bias=bias, class_weight=class_weight, reduction=reduction,
        chunk_size=chunk_size, backend=backend,
    )  # fmt: skip
    ref = label_smoothing_loss(
        logits_of(hidden, weight, bias), y, alpha, weight=class_weight, reduction=reduction, dim=-1
    )
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, **TOL64)
    upstream = torch.rand_like(ref) + 0.5
    params = (hidden, weight, bias)
    for a, b in zip(grads(ours, params, upstream), grads(ref, params, upstream), strict=True):
        torch.testing.assert_close(a, b, **TOL64)


@pytest.mark.parametrize("weighted", [False, True])
def test_matches_torch_linear_cross_entropy(weighted, backend):
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch.nn.functional.linear_cross_entropy needs torch >= 2.13")
    hidden, weight, bias, y = make(shape=(40,), h=8, v=30, device=BACKEND_DEVICE[backend])
    class_weight = None
    if weighted:
        class_weight = torch.rand(30, dtype=torch.float64).to(hidden.device) + 0.1
    ours = fused_linear_label_smoothing_loss(
        hidden, weight, y, 0.1, bias=bias, class_weight=class_weight, chunk_size=7,
        backend=backend,
    )  # fmt: skip
    torch_ref = F.linear_cross_entropy(
        hidden, weight, y, linear_bias=bias, weight=class_weight, label_smoothing=0.1
    )
    plain = F.cross_entropy(logits_of(hidden, weight, bias), y, class_weight, label_smoothing=0.1)
    torch.testing.assert_close(ours, torch_ref, **TOL64)
    torch.testing.assert_close(ours, plain, **TOL64)
    params = (hidden, weight, bias)
    for a, b in zip(grads(ours, params), grads(torch_ref, params), strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_matches_in_float32(backend):
    hidden, weight, bias, y = make(
        torch.float32, shape=(64,), h=16, v=50, device=BACKEND_DEVICE[backend]
    )
    ours = fused_linear_label_smoothing_loss(
        hidden, weight, y, 0.1, bias=bias, chunk_size=7, backend=backend
    )
    ref = label_smoothing_loss(logits_of(hidden, weight, bias), y, 0.1, dim=-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    params = (hidden, weight, bias)
    for a, b in zip(grads(ours, params), grads(ref, params), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_heads(dtype, backend):
    hidden, weight, bias, y = make(dtype, shape=(40,), h=16, v=30, device=BACKEND_DEVICE[backend])
    ours = fused_linear_label_smoothing_loss(
        hidden, weight, y, 0.1, bias=bias, chunk_size=9, backend=backend
    )
    ref = label_smoothing_loss(logits_of(hidden, weight, bias), y, 0.1, dim=-1)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=2e-2, atol=2e-2)
    params = (hidden, weight, bias)
    for a, b in zip(grads(ours, params), grads(ref, params), strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=5e-2, atol=5e-3)


def test_all_ignored_gives_zero_and_zero_gradients(backend):
    hidden, weight, bias, y = make(device=BACKEND_DEVICE[backend])
    y.fill_(-100)
    for class_weight in (None, torch.rand(weight.shape[0], dtype=torch.float64).to(y.device)):
        loss = fused_linear_label_smoothing_loss(
            hidden, weight, y, bias=bias, class_weight=class_weight, backend=backend
        )
        assert loss.item() == 0.0
        for g in grads(loss, (hidden, weight, bias)):
            assert torch.count_nonzero(g) == 0


def test_masked_vocabulary_in_the_bias(backend):
    """A -inf bias entry is outside the support: finite loss, no smoothing mass there."""
    hidden, weight, bias, y = make(shape=(10,), ignore=False, device=BACKEND_DEVICE[backend])
    masked = torch.zeros(weight.shape[0], dtype=torch.bool, device=y.device)
    masked[[3, 7]] = True
    bias = bias.detach().masked_fill(masked, float("-inf")).requires_grad_()
    y[masked[y]] = 0
    ours = fused_linear_label_smoothing_loss(
        hidden, weight, y, 0.1, bias=bias, chunk_size=4, backend=backend
    )
    ref = label_smoothing_loss(logits_of(hidden, weight, bias), y, 0.1, dim=-1)
    assert torch.isfinite(ours)
    torch.testing.assert_close(ours, ref, **TOL64)
    for a, b in zip(grads(ours, (hidden, weight)), grads(ref, (hidden, weight)), strict=True):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, **TOL64)


def test_ignored_tokens_never_reach_the_matmul(monkeypatch):
    from lsdiffusion._kernels.chunked import fused_linear as fl

    rows = []
    original = fl._logits

    def spy(h, w, b):
        rows.append(h.shape[0])
        return original(h, w, b)

    monkeypatch.setattr(fl, "_logits", spy)
    hidden, weight, bias, y = make()
    fused_linear_label_smoothing_loss(hidden, weight, y, bias=bias, chunk_size=4).backward()
    assert sum(rows) == int((y != -100).sum())


def test_higher_order_modes():
    hidden, weight, _, y = make(shape=(9,), h=4, v=6, bias=False)

    def fused(h, w):
        return fused_linear_label_smoothing_loss(h, w, y, 0.2, chunk_size=4)

    def ref(h, w):
        return label_smoothing_loss(h @ w.T, y, 0.2, dim=-1)

    assert torch.autograd.gradgradcheck(fused, (hidden, weight))
    h0, w0 = hidden.detach(), weight.detach()
    torch.testing.assert_close(
        torch.func.grad(fused, argnums=(0, 1))(h0, w0),
        torch.func.grad(ref, argnums=(0, 1))(h0, w0),
        **TOL64,
    )
    compiled = torch.compile(fused, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(h0, w0), ref(h0, w0), **TOL64)


def test_weighted_mean_under_transforms_with_every_token_ignored():
    hidden, weight, _, y = make(shape=(6,), h=4, v=5, bias=False)
    y.fill_(-100)
    class_weight = torch.rand(5, dtype=torch.float64)
    g = torch.func.grad(
        lambda h: fused_linear_label_smoothing_loss(h, weight, y, class_weight=class_weight)
    )(hidden.detach())
    assert torch.count_nonzero(g) == 0  # 0, not NaN, as on the fast path


def test_module_equals_function_and_keeps_weights_as_a_buffer(backend):
    hidden, weight, bias, y = make(shape=(2, 5), device=BACKEND_DEVICE[backend])
    class_weight = torch.rand(weight.shape[0], dtype=torch.float64).to(y.device)
    module = FusedLinearLabelSmoothingLoss(
        0.2, class_weight=class_weight, reduction="sum", chunk_size=3, backend=backend
    )
    torch.testing.assert_close(
        module(hidden, weight, y, bias),
        fused_linear_label_smoothing_loss(
            hidden, weight, y, 0.2, bias=bias, class_weight=class_weight, reduction="sum",
            chunk_size=3, backend=backend,
        ),
    )  # fmt: skip
    assert "class_weight" in module.state_dict()
    for part in ("alpha=0.2", "chunk_size=3", "reduction='sum'", f"backend='{backend}'"):
        assert part in repr(module)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": 1.5}, ValueError, "alpha must be in"),
        ({"reduction": "batchmean"}, ValueError, "reduction must be one of"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"bias": torch.zeros(3)}, ValueError, r"bias must be a \(11,\) tensor"),
        ({"class_weight": torch.ones(3)}, ValueError, r"class_weight must be 1-D .*\(11\)"),
        (
            {"class_weight": torch.ones(11, requires_grad=True)},
            ValueError,
            "class_weight requires grad",
        ),
    ],
)
def test_bad_arguments(kwargs, error, match):
    hidden, weight, _, y = make(bias=False)
    if "class_weight" in kwargs and kwargs["class_weight"].shape == (11,):
        kwargs = {"class_weight": kwargs["class_weight"].double().detach().requires_grad_()}
    with pytest.raises(error, match=match):
        fused_linear_label_smoothing_loss(hidden, weight, y, **kwargs)


def test_bad_tensors():
    hidden, weight, _bias, y = make()
    with pytest.raises(ValueError, match="token shape"):
        fused_linear_label_smoothing_loss(hidden, weight, y[:3])
    with pytest.raises(ValueError, match="class index 11, outside"):
        fused_linear_label_smoothing_loss(hidden, weight, torch.full_like(y, 11))
    with pytest.raises(TypeError, match="target must be an integer tensor"):
        fused_linear_label_smoothing_loss(hidden, weight, y.double())
    with pytest.raises(TypeError, match="weight must have the hidden states' dtype"):
        fused_linear_label_smoothing_loss(hidden, weight.float(), y)
    with pytest.raises(ValueError, match=r"H = 6 \(the hidden size\)"):
        fused_linear_label_smoothing_loss(hidden, weight[:, :4], y)
    with pytest.raises(ValueError, match=r"hidden must be \(N, H\) or \(B, L, H\)"):
        fused_linear_label_smoothing_loss(hidden[0], weight, y[0])
    with pytest.raises(ValueError, match="class_weight must be a 1-D"):
        FusedLinearLabelSmoothingLoss(class_weight=torch.ones(2, 2))


def test_torchscript_gets_the_library_message():
    with pytest.raises(Exception, match=r"torch\.compile"):
        torch.jit.script(FusedLinearLabelSmoothingLoss())
