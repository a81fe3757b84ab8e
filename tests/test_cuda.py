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
