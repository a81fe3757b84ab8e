"""Templates and the two projections (Müller's plane, the paper's QR + PCA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from lsdiffusion.centroids import class_centroids
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
    with pytest.raises(ValueError, match="at least 2 points to fit"):
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


# ---------------------------------------------------------------------------
# the paper's Algorithm 1, centroids and transform
# ---------------------------------------------------------------------------


def _paper_setup(dtype: torch.dtype, seed: int = 0):
    """A final layer of 10 classes, 16-D features of classes 6, 2, 9 (train and validation)."""
    gen = torch.Generator().manual_seed(seed)
    fc = nn.Linear(16, 10).to(dtype)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(10, 16, generator=gen))
        fc.bias.copy_(torch.randn(10, generator=gen) * 3)
    classes = [6, 2, 9]

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.tensor(classes).repeat_interleave(per_class)
        x = fc.weight.detach()[y] * 2 + torch.randn(len(y), 16, generator=gen).to(dtype)
        return x.to(dtype), y

    return fc, classes, split(40), split(15)


def _paper_reference(weight, bias, classes, train_x, train_y, val_x, val_y, bias_rows=None):
    """The released code's steps, re-derived in float64 numpy (global bias indices).

    Step 1: ``basis, _ = np.linalg.qr([W[idx], b[idx]].T)``; step 2: features with
    a 1 appended (the hook output concatenated with ones) and the class centroids
    of those features, both times ``basis``; step 3: ``PCA(n_components=2)`` fitted
    on the projected features plus the projected centroids, here as the top two
    eigenvectors of their covariance; the validation split reuses the fit.
    """
    w = np.asarray(weight, dtype=np.float64)[classes]
    rows = classes if bias_rows is None else bias_rows
    b = np.asarray(bias, dtype=np.float64)[rows]  # global indices, not 0, 1, 2
    basis, _ = np.linalg.qr(np.concatenate([w, b[:, None]], axis=1).T)  # (D + 1, 3)

    def lift(x):
        x = np.asarray(x, dtype=np.float64)
        return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)

    def centroids(x, y):
        return np.stack([lift(x)[np.asarray(y) == c].mean(axis=0) for c in classes])

    out_project = lift(train_x) @ basis
    centroids_project = centroids(train_x, train_y) @ basis
    fit = np.concatenate([out_project, centroids_project])
    mean = fit.mean(axis=0)
    cov = (fit - mean).T @ (fit - mean) / (fit.shape[0] - 1)
    evals, evecs = np.linalg.eigh(cov)
    comps = evecs[:, np.argsort(evals)[::-1][:2]]  # (3, 2)

    def pca(z):
        return (z - mean) @ comps

    return {
        "train": pca(out_project),
        "train_centroids": pca(centroids_project),
        "val": pca(lift(val_x) @ basis),
        "val_centroids": pca(centroids(val_x, val_y) @ basis),
    }


def _match_up_to_axis_signs(got: np.ndarray, want: np.ndarray, signs: np.ndarray) -> None:
    np.testing.assert_allclose(got * signs, want, rtol=0, atol=1e-8)


def test_pca_reproduces_the_papers_released_steps(dtype):
    fc, classes, (tx, ty), (vx, vy) = _paper_setup(dtype)
    tpl = templates_from_linear(fc, classes)
    want = _paper_reference(fc.weight.detach(), fc.bias.detach(), classes, tx, ty, vx, vy)
    centroids = class_centroids(tx, ty, num_classes=10, on_empty="ignore")[classes]  # float64
    proj = muller_projection(tx, tpl, method="pca", centroids=centroids)
    got = proj.points.numpy()
    signs = np.sign(np.sum(got * want["train"], axis=0))  # one sign per axis
    assert set(signs.tolist()) <= {-1.0, 1.0}
    _match_up_to_axis_signs(got, want["train"], signs)
    assert proj.centroids is not None
    _match_up_to_axis_signs(proj.centroids.numpy(), want["train_centroids"], signs)
    # the validation split through the training fit, as the paper plots it
    _match_up_to_axis_signs(proj.transform(vx).numpy(), want["val"], signs)
    val_centroids = class_centroids(vx, vy, num_classes=10, on_empty="ignore")[classes]
    _match_up_to_axis_signs(proj.transform(val_centroids).numpy(), want["val_centroids"], signs)
    # the released code's local bias indices (0, 1, 2) give another picture
    weight, bias = fc.weight.detach(), fc.bias.detach()
    bugged = _paper_reference(weight, bias, classes, tx, ty, vx, vy, bias_rows=[0, 1, 2])
    assert not np.allclose(np.abs(bugged["train"]), np.abs(want["train"]), atol=1e-3)


def test_pca_with_centroids_fits_features_plus_centroids():
    fc, classes, (tx, ty), _ = _paper_setup(torch.float64, seed=1)
    tpl = templates_from_linear(fc, classes)
    far = torch.stack([tx[ty == c].mean(0) for c in classes]) * 5  # pull the fit
    with_c = muller_projection(tx, tpl, method="pca", centroids=far)
    stacked = muller_projection(torch.cat([tx, far]), tpl, method="pca")
    torch.testing.assert_close(with_c.points, stacked.points[: len(tx)], rtol=0, atol=1e-10)
    assert with_c.centroids is not None
    torch.testing.assert_close(with_c.centroids, stacked.points[len(tx) :], rtol=0, atol=1e-10)
    without = muller_projection(tx, tpl, method="pca")
    assert without.centroids is None
    assert not torch.allclose(without.points.abs(), with_c.points.abs(), atol=1e-3)


@pytest.mark.parametrize("method", ["plane", "pca"])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("with_centroids", [False, True])
def test_transform_of_the_fitted_features_is_exactly_the_points(
    device, dtype, method, use_bias, with_centroids
):
    fc, classes, (tx, ty), (vx, _) = _paper_setup(dtype, seed=2)
    tpl = templates_from_linear(fc.to(device), classes, bias=use_bias)
    tx, vx = tx.to(device), vx.to(device)
    cents = torch.stack([tx[ty.to(device) == c].mean(0) for c in classes])
    proj = muller_projection(tx, tpl, method=method, centroids=cents if with_centroids else None)
    assert torch.equal(proj.transform(tx), proj.points)
    assert torch.equal(proj.transform(tx.cpu().numpy()).to(device), proj.points)
    assert proj.augmented is use_bias
    assert proj.num_features == 16
    assert proj.basis.shape == (16 + use_bias, 2)
    eye = torch.eye(2, dtype=torch.float64, device=proj.basis.device)
    torch.testing.assert_close(proj.basis.T @ proj.basis, eye, rtol=0, atol=1e-12)
    # every point goes through the same map: templates, centroids, another split
    if not use_bias:
        torch.testing.assert_close(proj.transform(tpl.weight), proj.templates)
    if with_centroids:
        assert proj.centroids is not None
        torch.testing.assert_close(proj.transform(cents), proj.centroids, rtol=0, atol=1e-10)
    val = proj.transform(vx)
    assert val.shape == (vx.shape[0], 2)
    assert val.dtype == torch.float64
    # against a float64 numpy re-derivation of the stored map
    lifted = vx.double().cpu().numpy()
    if use_bias:
        lifted = np.concatenate([lifted, np.ones((lifted.shape[0], 1))], axis=1)
    want = (lifted - proj.origin.cpu().numpy()) @ proj.basis.cpu().numpy()
    np.testing.assert_allclose(val.cpu().numpy(), want, rtol=1e-10, atol=1e-10)


def test_plane_ignores_the_data_and_pca_does_not():
    fc, classes, (tx, _), (vx, _) = _paper_setup(torch.float64, seed=3)
    tpl = templates_from_linear(fc, classes)
    a = muller_projection(tx, tpl)
    b = muller_projection(vx, tpl)
    torch.testing.assert_close(a.basis, b.basis, rtol=0, atol=0)
    torch.testing.assert_close(a.transform(vx), b.points, rtol=0, atol=1e-12)
    c = muller_projection(tx, tpl, method="pca")
    d = muller_projection(vx, tpl, method="pca")
    assert not torch.allclose(c.origin, d.origin)


def test_projection_centroid_and_transform_errors():
    x = torch.randn(6, 4)
    w = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"centroids must have shape \(3, 4\).*got \(2, 4\)"):
        muller_projection(x, w, centroids=torch.zeros(2, 4))
    with pytest.raises(TypeError, match="centroids must have a floating dtype"):
        muller_projection(x, w, centroids=torch.zeros(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="centroids must be finite"):
        muller_projection(x, w, centroids=torch.full((3, 4), math.nan))
    with pytest.raises(TypeError, match=r"centroids must be a torch\.Tensor or a numpy"):
        muller_projection(x, w, centroids=[[0.0] * 4] * 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="linearly dependent"):
        muller_projection(x, torch.stack([w[0], w[1], w[0] + w[1]]), method="pca")
    # one feature is enough when the centroids join the fit
    one = muller_projection(x[:1], w, method="pca", centroids=torch.randn(3, 4))
    assert one.points.shape == (1, 2)
    proj = muller_projection(x, w, torch.zeros(3))
    with pytest.raises(ValueError, match=r"D=4 columns.*got shape \(2, 5\)"):
        proj.transform(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="features must be 2-D"):
        proj.transform(torch.zeros(4))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_random_16_bit_heads_span_a_plane(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 16, generator=g).to(dtype)
    accepted = 0
    for _ in range(50):
        w = torch.randn(3, 16, generator=g).to(dtype)
        proj = muller_projection(x, w)
        accepted += 1
        ref = muller_projection(x.double(), w.double())  # same numbers, float64 input
        torch.testing.assert_close(proj.points, ref.points)
    assert accepted == 50
    w = torch.randn(3, 16, generator=g).to(dtype)
    with pytest.raises(ValueError, match="collinear"):
        muller_projection(x, torch.stack([w[0], 2 * w[0], 4 * w[0]]))


def test_one_feature_templates_span_no_plane():
    x = torch.randn(5, 1)
    with pytest.raises(ValueError, match="span no plane"):
        muller_projection(x, torch.tensor([[0.0], [1.0], [3.0]]))
    with pytest.raises(ValueError, match="needs templates spanning 3 dimensions"):
        muller_projection(x, torch.tensor([[0.0], [1.0], [3.0]]), method="pca")
    # with a bias, D' = 2: a plane exists
    proj = muller_projection(x, torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([0.0, 1.0, 0.0]))
    assert proj.points.shape == (5, 2)


@pytest.mark.parametrize("method", ["plane", "pca"])
def test_non_finite_features_are_refused(method):
    x = torch.randn(6, 4)
    x[2, 1] = math.nan
    x[4, 0] = math.inf
    with pytest.raises(ValueError, match=r"features must be finite; rows \[2, 4\]"):
        muller_projection(x, torch.randn(3, 4), method=method)
