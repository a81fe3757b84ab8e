"""CUDA-only checks (marked ``cuda``; skipped without a GPU): the losses under AMP
with a GradScaler, on both backends, against PyTorch; the streaming metrics on
CUDA tensors against their CPU results. ``benchmarks/gpu_check.sh`` runs them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lsdiffusion import (
    ClassCentroids,
    KDLoss,
    LabelSmoothingLoss,
    TargetEntropy,
    class_centroids,
    kd_loss,
    label_smoothing_loss,
    target_entropy,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]
BACKENDS = ["eager", "triton"]


def _kd_ref(s, t, temperature):
    # PyTorch's own KD one-liner under autocast, on purpose (not tests/_reference.py):
    # the AMP checks compare a training step with what PyTorch's loss does there
    lp = F.log_softmax(s.float() / temperature, -1)
    return (
        F.kl_div(lp, F.softmax(t.float() / temperature, -1), reduction="batchmean") * temperature**2
    )


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_amp_training_step_with_grad_scaler(backend, dtype):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 1000).cuda()
    teacher = torch.nn.Linear(64, 1000).cuda()
    x = torch.randn(32, 64, device="cuda")
    y = torch.randint(0, 1000, (32,), device="cuda")
    scaler = torch.amp.GradScaler("cuda", init_scale=65536.0)
    grads = {}
    for impl in ("ours", "torch"):
        model.zero_grad()
        with torch.autocast("cuda", dtype=dtype):
            logits = model(x)
            with torch.no_grad():
                t_logits = teacher(x)
            if impl == "ours":
                loss = LabelSmoothingLoss(0.1, backend=backend)(logits, y)
                loss = loss + KDLoss(2.0, backend=backend)(logits, t_logits)
            else:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
                loss = loss + _kd_ref(logits, t_logits, 2.0)
        assert loss.dtype == torch.float32
        scaler.scale(loss).backward()
        grads[impl] = model.weight.grad.clone()
        assert torch.isfinite(grads[impl]).all()
    torch.testing.assert_close(grads["ours"], grads["torch"], rtol=2e-2, atol=2e-2 * 65536 / 1000)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_losses_match_torch_on_cuda(backend, dtype):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(64, 3000, generator=g, dtype=dtype).cuda().requires_grad_()
    t = torch.randn(64, 3000, generator=g, dtype=dtype).cuda()
    y = torch.randint(0, 3000, (64,), generator=g).cuda()
    y[3] = -100
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {}
    for ours, ref in (
        (
            lambda z: label_smoothing_loss(z, y, 0.1, backend=backend),
            lambda z: F.cross_entropy(z, y, label_smoothing=0.1),
        ),
        (lambda z: kd_loss(z, t, 3.0, backend=backend), lambda z: _kd_ref(z, t, 3.0)),
    ):
        a, b = ours(s), ref(s)
        (ga,) = torch.autograd.grad(a, s)
        (gb,) = torch.autograd.grad(b, s)
        torch.testing.assert_close(a, b, **tol)
        torch.testing.assert_close(ga, gb, **tol)


def test_triton_path_does_not_sync():
    s = torch.randn(16, 500, device="cuda", requires_grad=True)
    t = torch.randn(16, 500, device="cuda")
    y = torch.randint(0, 500, (16,), device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = label_smoothing_loss(s, y, backend="triton") + kd_loss(s, t, 2.0, backend="triton")
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert s.grad is not None


def test_centroids_and_entropy_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(2)
    feats = torch.randn(500, 16, generator=g)
    labels = torch.randint(0, 10, (500,), generator=g)
    cpu = class_centroids(feats, labels, 10)
    metric = ClassCentroids(10, 16, device="cuda")
    for chunk in range(0, 500, 128):
        metric.update(feats[chunk : chunk + 128].cuda(), labels[chunk : chunk + 128].cuda())
    torch.testing.assert_close(metric.compute().cpu(), cpu.to(metric.compute().dtype).cpu())
    logits = torch.randn(300, 50, generator=g)
    entropy = TargetEntropy((1.0, 4.0))
    entropy.update(logits.cuda())
    report = entropy.compute()
    for temperature in (1.0, 4.0):
        want = target_entropy(logits, temperature)
        got = target_entropy(logits.cuda(), temperature)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-6)
    assert report is not None


# ---------------------------------------------------------------------------
# the fused linear losses on CUDA: the chunked Triton path, against the CPU in float64
# ---------------------------------------------------------------------------

FUSED_TOL = {
    torch.float32: {"rtol": 1e-4, "atol": 1e-5},
    torch.bfloat16: {"rtol": 3e-2, "atol": 3e-2},
}


def _fused_inputs(dtype, n=300, h=64, v=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    hs = torch.randn(n, h, generator=g, dtype=torch.float64)
    ws = torch.randn(v, h, generator=g, dtype=torch.float64) * h**-0.5
    bs = torch.randn(v, generator=g, dtype=torch.float64) * 0.1
    ht = torch.randn(n, h, generator=g, dtype=torch.float64)
    wt = torch.randn(v, h, generator=g, dtype=torch.float64) * h**-0.5
    y = torch.randint(0, v, (n,), generator=g)
    y[::7] = -100
    cpu = [t.clone().requires_grad_(i < 3) for i, t in enumerate((hs, ws, bs, ht, wt))]
    cuda = [t.to("cuda", dtype).requires_grad_(i < 3) for i, t in enumerate((hs, ws, bs, ht, wt))]
    return cpu, cuda, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss", ["kd", "kd_smoothed", "topk", "ls"])
def test_fused_linear_on_cuda_matches_cpu_float64(dtype, loss):
    from lsdiffusion import TopKTeacher, fused_linear_kd_loss, fused_linear_label_smoothing_loss

    cpu, cuda, y = _fused_inputs(dtype)
    # one cached teacher (from the float64 logits) for both runs
    cached = TopKTeacher.from_logits(cpu[3] @ cpu[4].T, 32, kind="logprobs", tail="bucket")
    results = []
    for (hs, ws, bs, ht, wt), target in ((cpu, y), (cuda, y.cuda())):
        if loss == "ls":
            out = fused_linear_label_smoothing_loss(hs, ws, target, 0.1, bias=bs, chunk_size=64)
        elif loss == "topk":
            cache = cached.to(hs.device)
            out = fused_linear_kd_loss(
                hs, ws, cache, None, 2.0, student_bias=bs, target=target, beta=0.5, alpha=0.1
            )
        else:
            smoothed = {"beta": 0.5, "alpha": 0.1} if loss == "kd_smoothed" else {}
            out = fused_linear_kd_loss(
                hs, ws, ht, wt, 2.0, student_bias=bs, target=target, chunk_size=64, **smoothed
            )
        results.append((out, torch.autograd.grad(out, (hs, ws, bs))))
    (ref, ref_grads), (got, got_grads) = results
    tol = FUSED_TOL[dtype]
    torch.testing.assert_close(got.double().cpu(), ref, **tol)
    for a, b in zip(got_grads, ref_grads, strict=True):
        assert a.dtype == dtype
        scale = b.abs().max()
        torch.testing.assert_close(a.double().cpu() / scale, b / scale, **tol)


def test_fused_linear_auto_takes_the_triton_chunks_on_cuda(monkeypatch):
    pytest.importorskip("triton")
    from lsdiffusion import fused_linear_kd_loss
    from lsdiffusion._kernels.triton import kd as triton_kd

    calls = []
    original = triton_kd.run
    monkeypatch.setattr(
        triton_kd, "run", lambda k, x, g: calls.append(x.device.type) or original(k, x, g)
    )
    _, (hs, ws, _bs, ht, wt), _y = _fused_inputs(torch.float32)
    fused_linear_kd_loss(hs, ws, ht, wt, 2.0, chunk_size=64).backward()
    assert calls
    assert set(calls) == {"cuda"}


def test_fused_linear_without_target_does_not_sync():
    pytest.importorskip("triton")
    from lsdiffusion import fused_linear_kd_loss

    _, (hs, ws, _bs, ht, wt), _ = _fused_inputs(torch.bfloat16)
    fused_linear_kd_loss(hs, ws, ht, wt, 2.0, chunk_size=64).backward()  # compile first
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        fused_linear_kd_loss(hs, ws, ht, wt, 2.0, chunk_size=64).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert ws.grad is not None


@pytest.mark.parametrize("loss", ["kd", "ls"])
def test_fused_linear_peak_memory_on_cuda(loss):
    """max_memory_allocated beyond the inputs and the gradients: <= 0.25 logits tensors."""
    from lsdiffusion import fused_linear_kd_loss, fused_linear_label_smoothing_loss

    n, h, v = 4096, 512, 32000
    dev, dt = "cuda", torch.bfloat16
    hs = torch.randn(n, h, device=dev, dtype=dt, requires_grad=True)
    ws = (torch.randn(v, h, device=dev, dtype=dt) * h**-0.5).requires_grad_()
    ht = torch.randn(n, h, device=dev, dtype=dt)
    wt = torch.randn(v, h, device=dev, dtype=dt) * h**-0.5
    y = torch.randint(0, v, (n,), device=dev)

    def step():
        hs.grad = ws.grad = None
        if loss == "kd":
            out = fused_linear_kd_loss(hs, ws, ht, wt, 2.0, target=y, beta=0.5, alpha=0.1)
        else:
            out = fused_linear_label_smoothing_loss(hs, ws, y, 0.1)
        out.backward()

    step()
    hs.grad = ws.grad = None
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    grads = (hs.numel() + ws.numel()) * 2
    extra = torch.cuda.max_memory_allocated() - before - grads
    assert extra <= 0.25 * n * v * 2, f"{extra / (n * v * 2):.3f} logits tensors"
