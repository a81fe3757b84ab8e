"""Cluster geometry (NC1, CDNV, Kornblith's R²) against float64 two-pass numpy references."""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import lsdiffusion
from lsdiffusion.centroids import EmptyClassWarning
from lsdiffusion.scatter import ClassScatter, ClusterGeometry, class_scatter

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# independent reference: float64 numpy, two passes, formulas as written
# ---------------------------------------------------------------------------


def ref_geometry(x: np.ndarray, y: np.ndarray, k: int) -> dict[str, object]:
    x = np.asarray(x, dtype=np.float64)
    present = [c for c in range(k) if (y == c).any()]
    n, d = x.shape
    means = np.full((k, d), np.nan)
    var = np.full(k, np.nan)
    sw = np.zeros((d, d))
    for c in present:
        rows = x[y == c]
        means[c] = rows.mean(axis=0)
        dev = rows - means[c]
        var[c] = (dev**2).sum(axis=1).mean()
        sw += dev.T @ dev
    sw /= n
    mu = means[present]
    mbar = mu.mean(axis=0)
    sb = (mu - mbar).T @ (mu - mbar) / len(present)
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-9, hermitian=True)) / len(present)
    cdnv = np.full((k, k), np.nan)
    for a in present:
        for b in present:
            if a != b:
                cdnv[a, b] = (var[a] + var[b]) / (2 * ((means[a] - means[b]) ** 2).sum())
    # Kornblith's R^2 from the full pairwise cosine-distance matrix (m = n included)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - unit @ unit.T
    blocks = np.array([[dist[np.ix_(y == j, y == i)].mean() for i in present] for j in present])
    r2 = 1.0 - np.mean(np.diag(blocks)) / blocks.mean()
    return {
        "means": means,
        "within_variance": var,
        "sigma_w": sw,
        "sigma_b": sb,
        "nc1": nc1,
        "cdnv": cdnv,
        "class_separation": r2,
    }


def clustered(
    n: int, k: int, d: int, *, seed: int = 0, offset: float = 0.0, spread: float = 4.0
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, d, generator=g, dtype=torch.float64) * spread
    y = torch.randint(0, k, (n,), generator=g)
    scale = torch.rand(k, 1, generator=g, dtype=torch.float64) + 0.5
    x = centres[y] + torch.randn(n, d, generator=g, dtype=torch.float64) * scale[y] + offset
    return x, y


def assert_matches(got: ClusterGeometry, want: dict[str, object], rtol: float) -> None:
    for name in ("means", "within_variance", "sigma_w", "sigma_b", "cdnv"):
        value = getattr(got, name)
        assert value.dtype == torch.float64, name
        np.testing.assert_allclose(
            value.cpu().numpy(), want[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name
        )
    assert got.nc1 == pytest.approx(want["nc1"], rel=rtol)
    assert got.class_separation == pytest.approx(want["class_separation"], rel=rtol)


# ---------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "d"), [(5, 8), (7, 3), (2, 1)], ids=["D>K", "D<K", "D=1"])
def test_matches_two_pass_reference(device, dtype, k, d):
    x, y = clustered(400, k, d, seed=k + d)
    x = x.to(dtype)
    want = ref_geometry(x.double().numpy(), y.numpy(), k)
    got = class_scatter(x.to(device), y.to(device), k)
    assert got.counts.tolist() == np.bincount(y.numpy(), minlength=k).tolist()
    assert_matches(got, want, rtol=1e-9)
    # tr(Sigma_W) is the count-weighted mean of the per-class variances
    pooled = (got.counts.double() * got.within_variance).sum() / got.num_samples
    assert torch.trace(got.sigma_w).item() == pytest.approx(pooled.item(), rel=1e-12)


def test_float32_product_path_is_close(dtype):
    x, y = clustered(500, 6, 10, seed=3, offset=50.0)
    x = x.to(dtype)
    want = ref_geometry(x.double().numpy(), y.numpy(), 6)
    acc = ClassScatter(6, exact=False)
    for start in range(0, 500, 64):
        acc.update(x[start : start + 64], y[start : start + 64])
    assert_matches(acc.compute(), want, rtol=1e-9 if dtype == torch.float64 else 2e-5)


def test_offset_1e4_in_float32_keeps_its_digits():
    """Unit-variance clusters at 1e4: raw second moments would cancel ~8 digits."""
    x, y = clustered(3000, 4, 5, seed=5, offset=1e4, spread=2.0)
    x32 = x.float()
    want = ref_geometry(x32.double().numpy(), y.numpy(), 4)
    for exact, rtol in ((True, 1e-9), (False, 2e-5)):
        acc = ClassScatter(4, exact=exact)
        for start in range(0, 3000, 128):
            acc.update(x32[start : start + 128], y[start : start + 128])
        got = acc.compute()
        for name in ("within_variance", "sigma_w", "cdnv"):
            np.testing.assert_allclose(
                getattr(got, name).numpy(), want[name], rtol=rtol, atol=rtol * 1e-3, err_msg=name
            )
        assert got.nc1 == pytest.approx(want["nc1"], rel=rtol)


def test_streaming_equals_one_pass_and_merge():
    x, y = clustered(700, 6, 9, seed=8, offset=30.0)
    one = class_scatter(x, y, 6)
    acc = ClassScatter(6)
    for start in range(0, 700, 41):
        acc.update(x[start : start + 41], y[start : start + 41])
    assert_matches(acc.compute(), vars(one), rtol=1e-10)
    parts = [ClassScatter(6) for _ in range(3)]
    parts[0].update(x[:5], y[:5])  # some classes first seen in later parts
    parts[1].update(x[5:400], y[5:400])
    parts[2].update(x[400:], y[400:])
    merged = ClassScatter(6).merge(parts[0], ClassScatter(6), parts[1])
    merged.merge(parts[2])
    assert torch.equal(merged.counts, one.counts)
    assert_matches(merged.compute(), vars(one), rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_invariances(dtype):
    x, y = clustered(600, 5, 6, seed=11)
    base = class_scatter(x.to(dtype), y, 5)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(2)).double())
    rtol = 1e-9 if dtype == torch.float64 else 1e-4
    transforms = {
        "translate": (x + torch.linspace(-7, 9, 6, dtype=torch.float64), False),
        "rotate": (x @ q, True),
        "scale": (x * 37.5, True),
    }
    for name, (moved, keeps_r2) in transforms.items():
        got = class_scatter(moved.to(dtype), y, 5)
        assert got.nc1 == pytest.approx(base.nc1, rel=rtol), name
        torch.testing.assert_close(got.cdnv, base.cdnv, rtol=rtol, atol=0, equal_nan=True)
        if keeps_r2:
            assert got.class_separation == pytest.approx(base.class_separation, rel=rtol), name
    shifted = class_scatter((x + 100.0).to(dtype), y, 5)
    assert shifted.class_separation != pytest.approx(base.class_separation, rel=1e-3)


def test_tighter_clusters_lower_nc1_cdnv_and_higher_r2():
    x, y = clustered(800, 6, 8, seed=4)
    centres = class_scatter(x, y, 6).means
    tight = centres[y] + 0.3 * (x - centres[y])
    loose, snug = class_scatter(x, y, 6), class_scatter(tight, y, 6)
    assert snug.nc1 == pytest.approx(0.09 * loose.nc1, rel=1e-9)  # Sigma_W scales by 0.3^2
    torch.testing.assert_close(snug.cdnv, 0.09 * loose.cdnv, equal_nan=True)
    assert snug.class_separation > loose.class_separation


def test_mean_cdnv_over_class_sets():
    x, y = clustered(300, 5, 4, seed=6)
    g = class_scatter(x, y, 5)
    assert g.mean_cdnv(0, [1, 3]) == pytest.approx(float((g.cdnv[0, 1] + g.cdnv[0, 3]) / 2))
    assert g.mean_cdnv(2, np.array([4])) == g.cdnv[2, 4].item()
    assert g.mean_cdnv(2, torch.tensor([0, 1, 3, 4])) == pytest.approx(
        float(g.cdnv[2, [0, 1, 3, 4]].mean())
    )
    assert torch.isnan(torch.diagonal(g.cdnv)).all()
    torch.testing.assert_close(g.cdnv, g.cdnv.T, equal_nan=True)
    for target, classes, match in [
        (0, [], "at least one"),
        (0, [0, 1], "must not contain the target"),
        (0, [5], r"classes must hold class indices in \[0, 4\] \(num_classes=5\), got \[5\]"),
        (5, [1], r"target must be in \[0, 4\]"),
        (0, [1.5], "integer class indices"),
        (-1, [1], "target must be an int >= 0, got -1"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            g.mean_cdnv(target, classes)


def test_degenerate_cases():
    # coincident means of distinct classes: CDNV inf; a single class: NC1 NaN
    x = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    g = class_scatter(x, torch.tensor([0, 0, 1, 1]))
    assert math.isinf(g.cdnv[0, 1].item())
    assert math.isnan(g.nc1)
    one = class_scatter(x, torch.zeros(4, dtype=torch.long))
    assert math.isnan(one.nc1)
    assert one.within_variance.tolist() == [1.0]
    # a zero feature vector has cosine 0 with everything (F.normalize's convention)
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    gz = class_scatter(z, torch.tensor([0, 0, 1]))
    unit = torch.nn.functional.normalize(z.double(), dim=1)
    within = 1 - (unit[:2].mean(0).square().sum() + 1.0) / 2
    total = 1 - ((unit[:2].mean(0) + unit[2]) / 2).square().sum()
    assert gz.class_separation == pytest.approx(float(1 - within / total))


def test_empty_classes_and_to_dict():
    x, y = clustered(200, 5, 4, seed=9)
    y = torch.where(y == 3, torch.zeros_like(y), y)  # class 3 never occurs
    want = ref_geometry(x.numpy(), y.numpy(), 5)
    with pytest.warns(EmptyClassWarning, match=r"1 of 5 classes have no samples.*\[3\]"):
        got = class_scatter(x, y, 5)
    assert_matches(got, want, rtol=1e-9)
    assert torch.isnan(got.means[3]).all()
    assert torch.isnan(got.cdnv[3]).all()
    assert torch.isnan(got.cdnv[:, 3]).all()
    assert got.num_present == 4
    with pytest.raises(ValueError, match=r"classes \[3\]"):
        class_scatter(x, y, 5, on_empty="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = class_scatter(x, y, 5, on_empty="ignore").to_dict()
    text = json.dumps(d, allow_nan=False)  # NaN written as null
    assert json.loads(text)["within_variance"][3] is None
    assert d["num_samples"] == 200
    assert d["nc1"] == pytest.approx(want["nc1"], rel=1e-9)


def test_token_features_and_ignore_index():
    x, y = clustered(120, 4, 5, seed=12)
    pad = y.clone()
    pad[::7] = -100
    keep = pad != -100
    want = class_scatter(x[keep], y[keep], 4)
    got = class_scatter(x.reshape(10, 12, 5), pad.reshape(10, 12), 4)
    assert_matches(got, vars(want), rtol=1e-12)
    acc = ClassScatter(4, ignore_index=None)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\].*-100"):
        acc.update(x, pad)


def test_reset_to_repr_and_counts():
    x, y = clustered(50, 3, 2, seed=1)
    acc = ClassScatter(3).to("cpu")
    acc.update(x, y)
    assert acc.counts.sum().item() == 50
    assert "samples=50" in repr(acc)
    acc.reset()
    with pytest.raises(RuntimeError, match="seen no data"):
        acc.compute()
    acc.update(torch.zeros(2, 7), torch.tensor([0, 1]))  # a new feature dim after reset
    assert acc.compute(on_empty="ignore").sigma_w.shape == (7, 7)
    fixed = ClassScatter(3, num_features=2)
    with pytest.raises(RuntimeError, match="no samples"):
        fixed.compute()
    fixed.update(x, y)
    fixed.reset()
    assert fixed.counts.tolist() == [0, 0, 0]


@pytest.mark.parametrize(
    ("features", "labels", "exc", "match"),
    [
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), ValueError, r"labels must be \(4,\)"),
        (torch.zeros(4, 2), torch.zeros(4), TypeError, "integer dtype"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool), TypeError, "integer dtype"),
        (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.long), TypeError, "real"),
        (
            torch.zeros(4, 2, dtype=torch.complex64),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "real",
        ),
        (torch.zeros(4, 2), torch.tensor([0, 1, 5, -1]), ValueError, r"\[0, 2\].*\[-1, 5\]"),
        ([[0.0]], torch.zeros(1, dtype=torch.long), TypeError, "features must be a torch.Tensor"),
        (torch.tensor(1.0), torch.tensor(0), ValueError, "0-d"),
    ],
)
def test_input_errors(features, labels, exc, match):
    with pytest.raises(exc, match=match):
        ClassScatter(3).update(features, labels)


def test_argument_and_state_errors():
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        ClassScatter(0)
    with pytest.raises(TypeError, match="num_features must be an int"):
        ClassScatter(3, num_features=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_empty must be one of"):
        ClassScatter(3, on_empty="drop")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        ClassScatter(3, ignore_index=1.5)  # type: ignore[arg-type]
    acc = ClassScatter(3)
    acc.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"4 features.*got shape \(2, 5\)"):
        acc.update(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="on_empty must be one of"):
        acc.compute(on_empty="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="into itself"):
        acc.merge(acc)
    with pytest.raises(ValueError, match="num_classes=4"):
        acc.merge(ClassScatter(4))
    other = ClassScatter(3)
    other.update(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_features=2"):
        acc.merge(other)
    with pytest.raises(TypeError, match="merge ClassScatter"):
        acc.merge("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="created with device=meta"):
        ClassScatter(3, device="meta").update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="needs num_classes"):
        class_scatter(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\]"):
        ClassScatter(3, validate=False).update(torch.zeros(2, 2), torch.tensor([0, 3]))


def test_exported_from_the_package():
    assert lsdiffusion.ClassScatter is ClassScatter
    assert lsdiffusion.class_scatter is class_scatter
    assert lsdiffusion.ClusterGeometry is ClusterGeometry


# ---------------------------------------------------------------------------
# DDP: 2 and 3 gloo processes, uneven shards, a rank without data
# ---------------------------------------------------------------------------


def _load_worker():
    spec = importlib.util.spec_from_file_location("lsd_ddp_worker", HERE / "_ddp_worker.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_gloo_uneven_and_empty_shards(tmp_path, world):
    worker = _load_worker()
    ranks = worker.launch(world, tmp_path, "scatter")
    feats, labels = worker.scatter_data()
    want = ref_geometry(feats.double().numpy(), labels.numpy(), worker.NUM_CLASSES)
    for res in ranks:
        for exact, rtol in ((True, 1e-9), (False, 2e-5)):
            got = res[f"exact={exact}"]
            assert got["unchanged"]  # compute() leaves the local state alone
            assert got["first"].num_samples == worker.NUM_ROWS
            assert_matches(got["first"], want, rtol=rtol)
            torch.testing.assert_close(got["second"].sigma_w, got["first"].sigma_w)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("exact", [True, False])
def test_non_finite_features_name_the_statistic_and_the_classes(bad, exact):
    """NaN/inf features: a ValueError naming the statistic and the classes, not a LinAlgError."""
    x, y = clustered(40, 4, 3, seed=2)
    x[(y == 2).nonzero()[0, 0], 1] = bad
    acc = ClassScatter(4, exact=exact)
    acc.update(x, y)
    with pytest.raises(
        ValueError, match=r"non-finite class means.* for 1 of 4 classes \(class 2\)"
    ):
        acc.compute()
    with pytest.raises(ValueError, match="NaN or inf"):
        class_scatter(x, y)


def test_overflowing_scatter_is_named():
    """Finite class statistics but an overflowing D x D scatter: the pooled scatter is named."""
    x = torch.tensor([[0.0, 0.0], [1.2e154, 0.0]] * 2, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])  # each class's sum of squares fits, their total does not
    with pytest.raises(ValueError, match=r"pooled within-class scatter \(D × D\) is non-finite"):
        class_scatter(x, y)


def test_every_label_ignored():
    """Every label ignore_index: the message says so (not 'no labels', not 'call update')."""
    x, labels = torch.zeros(5, 3), torch.full((5,), -100)
    for kwargs in ({}, {"num_classes": 4}):
        with pytest.raises(ValueError, match=r"all 5 labels are ignore_index \(-100\)"):
            class_scatter(x, labels, **kwargs)
    acc = ClassScatter(4)
    acc.update(x, labels)
    with pytest.raises(RuntimeError, match="every label so far was ignore_index"):
        acc.compute()


def test_state_size_is_what_the_docs_say():
    """The state is D × D + 3·K × D + 2·K float64/int64 numbers, as the docstring and docs say."""
    k, d = 5, 7
    acc = ClassScatter(k)
    acc.update(torch.randn(10, d), torch.arange(10) % k)
    assert acc._state is not None
    assert sum(v.numel() for v in acc._state.values()) == d * d + 3 * k * d + 2 * k
    assert "D × D + 3·K × D" in (ClassScatter.__doc__ or "")
    benchmarks = (HERE.parent / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert "three K × D" in benchmarks
