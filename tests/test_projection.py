"""Templates and the two projections (Müller's plane, the paper's QR + PCA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lsdiffusion.projection import Projection, Templates, muller_projection, templates_from_linear

# ---------------------------------------------------------------------------
# Müller projection
# ---------------------------------------------------------------------------


def pairwise(a):
    return np.linalg.norm(a[:, None] - a[None], axis=-1)


def _augment(x):
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)


@pytest.mark.parametrize("use_bias", [False, True])
def test_projection_properties(device, dtype, use_bias):
    gen = torch.Generator().manual_seed(2)
    d = 10
    w = torch.randn(3, d, generator=gen).to(dtype).to(device)
    b = torch.randn(3, generator=gen).to(dtype).to(device) if use_bias else None
    x = torch.randn(50, d, generator=gen).to(dtype).to(device)
    proj = muller_projection(x, w, b)
    assert isinstance(proj, Projection)
    assert proj.points.shape == (50, 2)
    assert proj.templates.shape == (3, 2)
    assert proj.points.dtype == torch.float64
    # the templates keep their pairwise distances
    w_aug = Templates(w, b).augmented()
    np.testing.assert_allclose(
        pairwise(proj.templates.cpu().numpy()),
        pairwise(w_aug.cpu().numpy()),
        rtol=1e-10,
        atol=1e-10,
    )
    # the first axis runs along w1 - w0, the origin is the templates' mean
    t = proj.templates.cpu().numpy()
    assert abs(t[1, 1] - t[0, 1]) < 1e-10
    assert t[1, 0] > t[0, 0]
    assert t[2, 1] > t[0, 1]
    np.testing.assert_allclose(t.mean(axis=0), 0.0, atol=1e-10)
    # a vector orthogonal to the plane does not move a point
    basis = proj.basis.cpu().numpy()
    dirs = np.random.default_rng(0).normal(size=(50, basis.shape[0]))
    ortho = dirs - (dirs @ basis) @ basis.T
    if use_bias:
        assert np.abs(ortho[:, -1]).max() > 0  # keep the augmented 1 fixed instead:
        # project out the last coordinate too by choosing directions with a zero bias part
        e = np.eye(basis.shape[0])[-1]
        m = np.stack([basis[:, 0], basis[:, 1], e], axis=1)
        q, _ = np.linalg.qr(m)
        ortho = dirs - (dirs @ q) @ q.T
        ortho = ortho[:, :-1]
        assert np.abs(ortho @ basis[:-1]).max() < 1e-8
    moved = x.cpu().double().numpy() + 5.0 * ortho
    proj2 = muller_projection(torch.from_numpy(moved).to(device), w, b)
    np.testing.assert_allclose(
        proj2.points.cpu().numpy(), proj.points.cpu().numpy(), rtol=1e-9, atol=1e-9
    )
    # reference: Gram-Schmidt in numpy
    wn = w_aug.cpu().numpy()
    xn = x.cpu().double().numpy()
    if use_bias:
        xn = _augment(xn)
    u1 = wn[1] - wn[0]
    e1 = u1 / np.linalg.norm(u1)
    u2 = wn[2] - wn[0]
    u2 = u2 - (u2 @ e1) * e1
    e2 = u2 / np.linalg.norm(u2)
    o = wn.mean(axis=0)
    want = np.stack([(xn - o) @ e1, (xn - o) @ e2], axis=1)
    np.testing.assert_allclose(proj.points.cpu().numpy(), want, rtol=1e-9, atol=1e-9)


def test_templates_from_linear_uses_global_bias_index():
    torch.manual_seed(0)
    fc = nn.Linear(6, 10)
    tpl = templates_from_linear(fc, [7, 2, 9])
    assert tpl.classes == (7, 2, 9)
    assert torch.equal(tpl.weight, fc.weight.detach()[[7, 2, 9]])
    assert torch.equal(tpl.bias, fc.bias.detach()[[7, 2, 9]])  # not bias[[0, 1, 2]]
    assert tpl.augmented().shape == (3, 7)
    no_bias = templates_from_linear(fc, np.array([7, 2, 9]), bias=False)
    assert no_bias.bias is None
    assert no_bias.augmented().shape == (3, 6)
    # a whole model: its last Linear
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), fc)
    assert torch.equal(templates_from_linear(model, [7, 2, 9]).weight, tpl.weight)
    x = torch.randn(20, 6)
    proj = muller_projection(x, tpl)
    assert proj.classes == (7, 2, 9)
    pts, tp = proj
    want = muller_projection(x, fc.weight[[7, 2, 9]], fc.bias[[7, 2, 9]])
    torch.testing.assert_close(pts, want.points)
    torch.testing.assert_close(tp, want.templates)
    with pytest.raises(ValueError, match="exactly 3"):
        templates_from_linear(fc, [1, 2])
    with pytest.raises(ValueError, match="3 distinct"):
        templates_from_linear(fc, [1, 2, 2])
    with pytest.raises(ValueError, match=r"\[0, 9\].*\[10\]"):
        templates_from_linear(fc, [1, 2, 10])
    with pytest.raises(ValueError, match="has no bias"):
        templates_from_linear(nn.Linear(6, 10, bias=False), [1, 2, 3])
    with pytest.raises(TypeError, match=r"nn\.Linear"):
        templates_from_linear("fc", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bias must be None"):
        muller_projection(x, tpl, torch.zeros(3))


def test_projection_errors():
    x = torch.randn(5, 4)
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"templates must have shape \(3, D\), got \(2, 4\)"):
        muller_projection(x, w[:2])
    with pytest.raises(ValueError, match=r"D=4 columns.*got \(3, 5\)"):
        muller_projection(x, torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        muller_projection(x, w, torch.zeros(4))
    with pytest.raises(ValueError, match="collinear"):
        muller_projection(x, torch.stack([w[0], 2 * w[0], 3 * w[0]]))
    with pytest.raises(ValueError, match="features must be 2-D"):
        muller_projection(x[0], w)
    with pytest.raises(ValueError, match="method must be one of"):
        muller_projection(x, w, method="tsne")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must be finite"):
        muller_projection(x, torch.full((3, 4), math.nan))
    with pytest.raises(ValueError, match="at least 2 features"):
        muller_projection(x[:1], w, method="pca")


def test_pca_method_preserves_distances_within_template_plane():
    """Features on the affine plane of the templates keep their distances under QR+PCA."""
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 8))
    coef = rng.dirichlet(np.ones(3), size=40) * 2 - 1 / 3  # rows sum to 1
    x = coef @ w
    proj = muller_projection(x, w, method="pca")
    assert proj.method == "pca"
    assert proj.points.shape == (40, 2)
    pts = proj.points.numpy()
    np.testing.assert_allclose(
        np.linalg.norm(pts[:, None] - pts[None], axis=-1),
        np.linalg.norm(x[:, None] - x[None], axis=-1),
        rtol=1e-9,
        atol=1e-9,
    )
    # ... and agree with the plane method up to a rigid motion: same distances to templates
    plane = muller_projection(x, w)
    np.testing.assert_allclose(
        np.linalg.norm(pts[:, None] - proj.templates.numpy()[None], axis=-1),
        np.linalg.norm(plane.points.numpy()[:, None] - plane.templates.numpy()[None], axis=-1),
        rtol=1e-9,
        atol=1e-9,
    )
