"""Relative distances, the diffusion index (one target, many targets), its table."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lsdiffusion.diffusion import (
    DiffusionIndexTable,
    diffusion_index,
    diffusion_indices,
    relative_distances,
)

# ---------------------------------------------------------------------------
# independent references (plain float64 numpy)
# ---------------------------------------------------------------------------


def ref_alpha(c0, c1, target, sim, dis, reference="union"):
    c0 = np.asarray(c0, dtype=np.float64)
    c1 = np.asarray(c1, dtype=np.float64)
    if reference == "union":
        ref = list(sim) + list(dis)
    else:
        ref = [k for k in range(c0.shape[0]) if k != target]

    def rel(c):
        dist = {
            k: math.sqrt(sum((a - b) ** 2 for a, b in zip(c[target], c[k], strict=True)))
            for k in ref
        }
        total = sum(dist.values())
        return {k: v / total for k, v in dist.items()}

    d0, d1 = rel(c0), rel(c1)

    def alpha(s):
        return 100.0 * sum((d1[k] - d0[k]) / d0[k] for k in s) / len(s)

    return alpha(sim), alpha(dis)


def random_sets(rng, num_classes, targets, max_sim=4, max_dis=12):
    sims, diss = [], []
    for t in targets:
        others = rng.permutation([k for k in range(num_classes) if k != t])
        ns = int(rng.integers(1, max_sim + 1))
        nd = int(rng.integers(1, max_dis + 1))
        sims.append([int(k) for k in others[:ns]])
        diss.append([int(k) for k in others[ns : ns + nd]])
    return sims, diss


def random_orthogonal(dim: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    return q


# ---------------------------------------------------------------------------
# relative distance and the diffusion index
# ---------------------------------------------------------------------------


def test_hand_computed_three_class_example():
    # target 0 at the origin, similar class 1 at distance 1, dissimilar class 2 at 3 then 4
    t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
    # d0 = (1/4, 3/4), d1 = (1/5, 4/5)
    r = diffusion_index(t0, t1, target=0, similar=[1], dissimilar=[2])
    assert r.similar == pytest.approx(100 * (1 / 5 - 1 / 4) / (1 / 4))  # -20 %
    assert r.dissimilar == pytest.approx(100 * (4 / 5 - 3 / 4) / (3 / 4))  # +6.67 %
    assert r.similar == pytest.approx(-20.0)
    assert r.dissimilar == pytest.approx(20.0 / 3.0)
    assert r.systematic
    assert r.changes == pytest.approx({1: -20.0, 2: 20.0 / 3.0})
    assert r.similar_classes == (1,)
    assert r.dissimilar_classes == (2,)
    assert "similar -20.00%" in str(r)
    # with 3 classes "all" and "union" are the same reference set
    r_all = diffusion_index(t0, t1, target=0, similar=[1], dissimilar=[2], reference="all")
    assert r_all.similar == pytest.approx(-20.0)
    # no change at all: zero index
    r0 = diffusion_index(t0, t0, target=0, similar=[1], dissimilar=[2])
    assert r0.similar == 0.0
    assert r0.dissimilar == 0.0


def test_reference_all_uses_every_other_class():
    t0 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, -4.0]])
    t1 = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, -8.0]])
    union = diffusion_index(t0, t1, 0, [1], [2])
    assert union.similar == 0.0  # class 3 is outside R
    everything = diffusion_index(t0, t1, 0, [1], [2], reference="all")
    # d0(1) = 1/8, d1(1) = 1/12 -> -33.3 %
    assert everything.similar == pytest.approx(100 * (1 / 12 - 1 / 8) / (1 / 8))
    want = ref_alpha(t0, t1, 0, [1], [2], reference="all")
    assert (everything.similar, everything.dissimilar) == pytest.approx(want)


def test_relative_distances():
    mu = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [4.0, 0.0]])
    d = relative_distances(mu, 0)
    assert d.tolist() == pytest.approx([0.0, 1 / 8, 3 / 8, 4 / 8])
    d = relative_distances(mu, 0, reference=[1, 2])
    assert d.tolist() == pytest.approx([0.0, 1 / 4, 3 / 4, 1.0])
    with pytest.raises(ValueError, match="contains the target itself"):
        relative_distances(mu, 0, reference=[0, 1])
    with pytest.raises(ValueError, match="reference must be one of"):
        relative_distances(mu, 0, reference="union")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-finite rows for classes \\[2\\]"):
        relative_distances(torch.tensor([[0.0], [1.0], [math.nan]]), 0)
    with pytest.raises(ValueError, match="coincides"):
        relative_distances(torch.zeros(3, 2), 0)


@pytest.mark.parametrize("reference", ["union", "all"])
def test_scalar_matches_numpy_reference(dtype, reference):
    rng = np.random.default_rng(3)
    c0 = rng.normal(size=(15, 6)).astype(np.float32 if dtype == torch.float32 else np.float64)
    c1 = rng.normal(size=(15, 6)).astype(c0.dtype)
    sims, diss = random_sets(rng, 15, range(15))
    for t in range(15):
        got = diffusion_index(torch.from_numpy(c0), c1, t, sims[t], diss[t], reference=reference)
        want = ref_alpha(c0, c1, t, sims[t], diss[t], reference)
        assert (got.similar, got.dissimilar) == pytest.approx(want, rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("reference", ["union", "all"])
@pytest.mark.parametrize("seed", [0, 1])
def test_invariances(reference, seed):
    """Translation, rotation and uniform scaling, each applied independently to T0 and T1."""
    gen = torch.Generator().manual_seed(seed)
    c, d = 25, 16
    c0 = torch.randn(c, d, generator=gen, dtype=torch.float64)
    c1 = c0 + 0.3 * torch.randn(c, d, generator=gen, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    targets = list(range(0, c, 3))
    sims, diss = random_sets(rng, c, targets)
    base = diffusion_indices(c0, c1, targets, sims, diss, reference=reference)

    def similarity(x, k):
        q = random_orthogonal(d, seed * 10 + k)
        shift = torch.randn(d, generator=gen, dtype=torch.float64) * 100
        return 7.5**k * (x @ q) + shift

    moved = diffusion_indices(
        similarity(c0, 1), similarity(c1, 2), targets, sims, diss, reference=reference
    )
    np.testing.assert_allclose(moved.similar, base.similar, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(moved.dissimilar, base.dissimilar, rtol=1e-9, atol=1e-9)
    for name, f in [
        ("translate", lambda x: x + 1e3),
        ("rotate", lambda x: x @ random_orthogonal(d, 99)),
        ("scale", lambda x: 0.001 * x),
    ]:
        for t, s, ds in zip(targets, sims, diss, strict=True):
            one = diffusion_index(f(c0), f(c1), t, s, ds, reference=reference)
            want = base.row(t)
            assert (one.similar, one.dissimilar) == pytest.approx(want, rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("reference", ["union", "all"])
def test_vectorised_matches_scalar(device, dtype, reference):
    rng = np.random.default_rng(5)
    c, d = 40, 12
    c0 = torch.from_numpy(rng.normal(size=(c, d))).to(dtype).to(device)
    c1 = c0 + 0.2 * torch.from_numpy(rng.normal(size=(c, d))).to(dtype).to(device)
    targets = [int(t) for t in rng.permutation(c)[:30]]
    sims, diss = random_sets(rng, c, targets, max_sim=5, max_dis=20)
    tab = diffusion_indices(c0, c1, targets, sims, diss, reference=reference)
    assert tab.targets.tolist() == targets
    for (t, s, dsim), sim, dis in zip(tab, sims, diss, strict=True):
        one = diffusion_index(c0, c1, t, sim, dis, reference=reference)
        assert (s, dsim) == pytest.approx((one.similar, one.dissimilar), rel=1e-9, abs=1e-9)
        want = ref_alpha(c0.cpu().numpy(), c1.cpu().numpy(), t, sim, dis, reference)
        assert (s, dsim) == pytest.approx(want, rel=1e-9, abs=1e-9)
    # dict and mask forms give the same table
    tab_dict = diffusion_indices(
        c0,
        c1,
        None,
        dict(zip(targets, sims, strict=True)),
        dict(zip(targets, diss, strict=True)),
        reference=reference,
    )
    np.testing.assert_array_equal(tab_dict.similar, tab.similar)
    sim_mask = np.zeros((len(targets), c), dtype=bool)
    dis_mask = np.zeros((len(targets), c), dtype=bool)
    for i, (s, ds) in enumerate(zip(sims, diss, strict=True)):
        sim_mask[i, s] = True
        dis_mask[i, ds] = True
    tab_mask = diffusion_indices(
        c0, c1, targets, torch.from_numpy(sim_mask), dis_mask, reference=reference
    )
    np.testing.assert_allclose(tab_mask.similar, tab.similar, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tab_mask.dissimilar, tab.dissimilar, rtol=1e-12, atol=1e-12)


def test_vectorised_all_classes_square_masks():
    """(C, C) masks, row t for class t (as lsdiffusion.semantics.ClassSetMasks)."""
    rng = np.random.default_rng(7)
    c = 12
    c0, c1 = rng.normal(size=(c, 4)), rng.normal(size=(c, 4))
    sim = np.zeros((c, c), dtype=bool)
    dis = np.zeros((c, c), dtype=bool)
    for t in range(c):
        sim[t, (t + 1) % c] = True
        dis[t, (t + 5) % c] = dis[t, (t + 6) % c] = True
    full = diffusion_indices(c0, c1, None, sim, dis)
    assert full.targets.tolist() == list(range(c))
    sub = diffusion_indices(c0, c1, [7, 2], sim, dis)  # rows picked by class
    np.testing.assert_allclose(sub.similar, full.similar[[7, 2]], rtol=1e-12)
    one = diffusion_index(c0, c1, 7, [8], [0, 1])
    assert sub.row(7) == pytest.approx((one.similar, one.dissimilar), rel=1e-9)


def test_vectorised_precision_near_duplicate_centroids():
    """Pairs that nearly coincide are recomputed exactly, not by the matmul expansion."""
    base = np.full((4, 3), 1e4)
    base[1] += [1e-3, 0.0, 0.0]  # very close to the target, far from the origin
    base[2] += [0.0, 5.0, 0.0]
    base[3] += [0.0, 0.0, 7.0]
    c1 = base.copy()
    c1[1] = base[0] + [2e-3, 0.0, 0.0]
    tab = diffusion_indices(base, c1, [0], [[1]], [[2, 3]])
    want = ref_alpha(base, c1, 0, [1], [2, 3])
    assert (tab.similar[0], tab.dissimilar[0]) == pytest.approx(want, rel=1e-9)


def test_large_vectorised_runs():
    rng = np.random.default_rng(0)
    c, d = 300, 64
    c0 = rng.normal(size=(c, d))
    c1 = c0 + 0.1 * rng.normal(size=(c, d))
    sims, diss = random_sets(rng, c, range(c), max_sim=5, max_dis=200)
    tab = diffusion_indices(c0, c1, range(c), sims, diss, reference="all")
    assert len(tab) == c
    assert np.isfinite(tab.similar).all()


# -- errors -----------------------------------------------------------------


@pytest.fixture
def cents():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 3)), rng.normal(size=(6, 3))


@pytest.mark.parametrize(
    ("target", "sim", "dis", "exc", "match"),
    [
        (0, [0, 1], [2], ValueError, r"similar of target 0 contains the target itself"),
        (0, [1], [2, 0], ValueError, r"dissimilar of target 0 contains the target itself"),
        (0, [1, 2], [2, 3], ValueError, r"overlap in classes \[2\]"),
        (0, [], [2], ValueError, r"similar of target 0 is empty"),
        (0, [1], [], ValueError, r"dissimilar of target 0 is empty"),
        (0, [1, 6], [2], ValueError, r"\[0, 5\].*got \[6\]"),
        (0, [1], [-1], ValueError, r"\[0, 5\].*got \[-1\]"),
        (6, [1], [2], ValueError, r"target must be a class index in \[0, 5\].*got 6"),
        (0, [1, 1], [2], ValueError, r"duplicate classes \[1\]"),
        (0, [1.0], [2], TypeError, r"integer class indices"),
        (0.0, [1], [2], TypeError, r"target must be an int"),
        (0, "12", [2], TypeError, r"iterable of class indices"),
    ],
)
def test_scalar_errors(cents, target, sim, dis, exc, match):
    with pytest.raises(exc, match=match):
        diffusion_index(cents[0], cents[1], target, sim, dis)


def test_shape_and_finite_errors(cents):
    c0, c1 = cents
    with pytest.raises(
        ValueError, match=r"centroids_t1 must have shape \(6, 3\) like centroids_t0, got \(5, 3\)"
    ):
        diffusion_index(c0, c1[:5], 0, [1], [2])
    with pytest.raises(ValueError, match=r"centroids_t0 must be 2-D \(C, D\), got shape \(6,\)"):
        diffusion_index(c0[:, 0], c1, 0, [1], [2])
    with pytest.raises(
        TypeError, match=r"centroids_t0 must be a torch\.Tensor or a numpy\.ndarray"
    ):
        diffusion_index(c0.tolist(), c1, 0, [1], [2])
    with pytest.raises(ValueError, match="reference must be one of"):
        diffusion_index(c0, c1, 0, [1], [2], reference="others")  # type: ignore[arg-type]
    bad = c1.copy()
    bad[4] = np.nan
    with pytest.raises(ValueError, match=r"centroids_t1 has non-finite.*classes \[4\]"):
        diffusion_index(c0, bad, 0, [1], [4])
    # a NaN row outside the sets is fine for reference="union" but not for "all"
    ok = diffusion_index(c0, bad, 0, [1], [2])
    assert math.isfinite(ok.similar)
    with pytest.raises(ValueError, match=r"non-finite.*\[4\]"):
        diffusion_index(c0, bad, 0, [1], [2], reference="all")
    same = c0.copy()
    same[1] = same[0]
    with pytest.raises(ValueError, match="coincide"):
        diffusion_index(same, c1, 0, [1], [2])
    with pytest.raises(ValueError, match="coincides"):
        diffusion_indices(same, c1, [0], [[1]], [[2]])


def test_vectorised_errors(cents):
    c0, c1 = cents
    with pytest.raises(ValueError, match=r"similar of target 3 contains the target itself"):
        diffusion_indices(c0, c1, [0, 3], [[1], [3]], [[2], [4]])
    with pytest.raises(
        ValueError, match=r"similar and dissimilar of target 3 overlap in classes \[4\]"
    ):
        diffusion_indices(c0, c1, [0, 3], [[1], [4]], [[2], [4]])
    with pytest.raises(ValueError, match=r"dissimilar of target 3 is empty"):
        diffusion_indices(c0, c1, [0, 3], [[1], [4]], [[2], []])
    with pytest.raises(ValueError, match=r"similar of target 3 has duplicate classes \[4\]"):
        diffusion_indices(c0, c1, [0, 3], [[1], [4, 4]], [[2], [5]])
    with pytest.raises(
        ValueError, match=r"dissimilar of target 0 must hold class indices in \[0, 5\].*got \[9\]"
    ):
        diffusion_indices(c0, c1, [0, 3], [[1], [4]], [[9], [5]])
    with pytest.raises(ValueError, match=r"targets has duplicate classes \[0\]"):
        diffusion_indices(c0, c1, [0, 0], [[1], [1]], [[2], [2]])
    with pytest.raises(ValueError, match=r"targets must hold class indices in \[0, 5\].*\[7\]"):
        diffusion_indices(c0, c1, [7], [[1]], [[2]])
    with pytest.raises(ValueError, match="one set per target: 2 targets, got 1 sets"):
        diffusion_indices(c0, c1, [0, 3], [[1]], [[2], [5]])
    with pytest.raises(KeyError, match=r"no entry for targets \[3\]"):
        diffusion_indices(c0, c1, [0, 3], {0: [1]}, [[2], [5]])
    with pytest.raises(ValueError, match=r"mask must have shape \(2, 6\)"):
        diffusion_indices(c0, c1, [0, 3], np.zeros((3, 6), dtype=bool), [[2], [5]])
    with pytest.raises(TypeError, match="boolean mask"):
        diffusion_indices(c0, c1, [0, 3], np.zeros((2, 6)), [[2], [5]])
    with pytest.raises(ValueError, match="similar of target 0 is empty"):
        diffusion_indices(c0, c1, [0, 3], np.zeros((2, 6), dtype=bool), [[2], [5]])
    diag = np.zeros((2, 6), dtype=bool)
    diag[0, 0] = diag[1, 1] = True
    with pytest.raises(ValueError, match="similar of target 0 contains the target itself"):
        diffusion_indices(c0, c1, [0, 3], diag, [[2], [5]])
    with pytest.raises(ValueError, match="targets=None needs"):
        diffusion_indices(c0, c1, None, [[1]], [[2]])
    with pytest.raises(ValueError, match="targets is empty"):
        diffusion_indices(c0, c1, [], [], [])
    with pytest.raises(TypeError, match="list of class-index lists"):
        diffusion_indices(c0, c1, [0], 5, [[2]])  # type: ignore[arg-type]
    bad = c0.copy()
    bad[2, 1] = np.inf
    with pytest.raises(ValueError, match=r"centroids_t0 has non-finite.*\[2\]"):
        diffusion_indices(bad, c1, [0], [[1]], [[2]])
    # NaN outside the used rows is fine with the default reference
    tab = diffusion_indices(bad, c1, [0], [[1]], [[3]])
    assert np.isfinite(tab.similar).all()


# -- table ------------------------------------------------------------------


def test_table_outputs(tmp_path):
    tab = DiffusionIndexTable(
        targets=np.array([207, 208]),
        similar=np.array([-1.5, -2.5]),
        dissimilar=np.array([0.5, -0.5]),
        reference="union",
    )
    assert len(tab) == 2
    assert tab.mean_similar == pytest.approx(-2.0)
    assert tab.mean_dissimilar == pytest.approx(0.0)
    assert tab.fraction_systematic == pytest.approx(0.5)
    assert list(tab) == [(207, -1.5, 0.5), (208, -2.5, -0.5)]
    assert tab.row(208) == (-2.5, -0.5)
    with pytest.raises(KeyError, match="not in this table"):
        tab.row(1)
    text = str(tab)
    assert text.splitlines()[0].split() == ["target", "α_sim", "(%)", "α_dissim", "(%)"]
    assert text.splitlines()[-1].split() == ["mean", "-2.00", "+0.00"]
    names = {207: "golden_retriever", 208: "Labrador retriever"}
    md = tab.to_markdown(names=names, decimals=1)
    assert "| golden_retriever | -1.5 | +0.5 |" in md
    assert md.splitlines()[-1] == "| **mean** | **-2.0** | **+0.0** |"
    tex = tab.to_latex(names=names)
    assert "golden\\_retriever & $-1.50$ & $+0.50$ \\\\" in tex
    assert "Mean & $-2.00$ & $+0.00$" in tex
    assert tex.startswith("\\begin{tabular}")
    assert tex.endswith("\\end{tabular}")
    path = tmp_path / "alpha.csv"
    csv_text = tab.to_csv(path, names=["x"] * 300)
    assert path.read_text() == csv_text
    lines = csv_text.splitlines()
    assert lines[0] == "target,name,similar_pct,dissimilar_pct"
    assert lines[1] == "207,x,-1.5,0.5"
    assert lines[-1] == ",mean,-2.0,0.0"


# --- review findings -------------------------------------------------------


def _review_centroids():
    g = torch.Generator().manual_seed(5)
    c0 = torch.randn(8, 4, generator=g, dtype=torch.float64)
    c1 = torch.randn(8, 4, generator=g, dtype=torch.float64)
    return c0, c1


def test_scalar_and_vectorised_agree_when_a_non_set_reference_class_coincides():
    c0, c1 = _review_centroids()
    c0[7] = c0[0]  # class 7 is in the "all" reference but in neither set
    one = diffusion_index(c0, c1, 0, [1, 2], [3, 4], reference="all")
    many = diffusion_indices(c0, c1, [0], [[1, 2]], [[3, 4]], reference="all")
    assert one.similar == pytest.approx(float(many.similar[0]))
    assert one.dissimilar == pytest.approx(float(many.dissimilar[0]))


def test_collapsed_t1_centroids_raise():
    c0, _ = _review_centroids()
    c1 = torch.zeros_like(c0)
    with pytest.raises(ValueError, match="centroids_t1: every reference class coincides"):
        diffusion_index(c0, c1, 0, [1, 2], [3, 4])
    with pytest.raises(ValueError, match="centroids_t1: every reference class coincides"):
        diffusion_indices(c0, c1, [0], [[1, 2]], [[3, 4]])


def test_square_mask_with_permuted_targets_is_ambiguous():
    c0, c1 = _review_centroids()
    c0, c1 = c0[:4], c1[:4]
    sim = torch.zeros(4, 4, dtype=torch.bool)
    dis = torch.zeros(4, 4, dtype=torch.bool)
    for t in range(4):
        sim[t, t ^ 1] = True
        dis[t, (t + 2) % 4] = True
    ordered = diffusion_indices(c0, c1, None, sim, dis)
    assert len(ordered.similar) == 4
    with pytest.raises(ValueError, match="could be aligned with targets or indexed"):
        diffusion_indices(c0, c1, [1, 0, 3, 2], sim, dis)


# ---------------------------------------------------------------------------
# significance
# ---------------------------------------------------------------------------


def _table_from_centroids(dtype: torch.dtype, seed: int = 0, shrink: float = 0.8):
    """A table of 24 targets where similar centroids move closer by ``shrink`` at T1."""
    g = torch.Generator().manual_seed(seed)
    c = 24
    base = torch.randn(c, 6, generator=g, dtype=torch.float64) * 3
    sims = [[t ^ 1] for t in range(c)]  # pairs of siblings
    diss = [[k for k in range(c) if k // 2 != t // 2][:10] for t in range(c)]
    moved = base.clone()
    for t in range(0, c, 2):  # siblings drift towards their midpoint
        mid = (base[t] + base[t + 1]) / 2
        moved[t] = mid + shrink * (base[t] - mid)
        moved[t + 1] = mid + shrink * (base[t + 1] - mid)
    moved += 0.05 * torch.randn(c, 6, generator=g, dtype=torch.float64)
    return diffusion_indices(base.to(dtype), moved.to(dtype), range(c), sims, diss)


def _exact_signed_rank_p(x: np.ndarray, alternative: str) -> float:
    """Exact one-sided Wilcoxon p-value by enumerating all 2^n sign patterns (no ties)."""
    x = x[x != 0]
    ranks = np.argsort(np.argsort(np.abs(x))) + 1
    observed = ranks[x > 0].sum()
    n = len(x)
    signs = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
    stats_all = (signs * ranks).sum(axis=1)
    if alternative == "less":
        return float(np.mean(stats_all <= observed))
    return float(np.mean(stats_all >= observed))


def test_significance_equals_scipy_called_directly(dtype):
    stats = pytest.importorskip("scipy.stats")
    tab = _table_from_centroids(dtype)
    sig = tab.significance(confidence=0.9, n_resamples=2000, seed=7)
    a, b = tab.similar, tab.dissimilar
    assert sig.n == len(tab) == 24
    assert sig.p_similar_negative == stats.wilcoxon(a, alternative="less").pvalue
    assert sig.p_dissimilar_positive == stats.wilcoxon(b, alternative="greater").pvalue
    assert sig.p_similar_below_dissimilar == stats.wilcoxon(a, b, alternative="less").pvalue
    for values, got in ((a, sig.ci_similar), (b, sig.ci_dissimilar)):
        want = stats.bootstrap(
            (values,),
            np.mean,
            confidence_level=0.9,
            n_resamples=2000,
            rng=np.random.default_rng(7),
        ).confidence_interval
        assert got == (want.low, want.high)
        assert got[0] <= float(np.mean(values)) <= got[1]
    assert sig.mean_similar == tab.mean_similar
    assert sig.mean_dissimilar == tab.mean_dissimilar
    assert sig.confidence == 0.9
    assert sig.n_resamples == 2000
    # the diffusion built into the table is detected
    assert sig.mean_similar < 0 < sig.mean_dissimilar
    assert sig.systematic
    assert sig.ci_similar[1] < 0 < sig.ci_dissimilar[0]


def test_signed_rank_p_values_match_exact_enumeration():
    rng = np.random.default_rng(3)
    sim = rng.normal(-0.8, 1.0, size=12)
    dis = rng.normal(0.3, 1.0, size=12)
    tab = DiffusionIndexTable(np.arange(12), sim, dis)
    sig = tab.significance(n_resamples=100)
    assert sig.p_similar_negative == pytest.approx(_exact_signed_rank_p(sim, "less"), abs=1e-12)
    assert sig.p_dissimilar_positive == pytest.approx(
        _exact_signed_rank_p(dis, "greater"), abs=1e-12
    )
    assert sig.p_similar_below_dissimilar == pytest.approx(
        _exact_signed_rank_p(sim - dis, "less"), abs=1e-12
    )


def test_significance_is_seeded_and_invariant_to_row_order():
    tab = _table_from_centroids(torch.float64, seed=1)
    a = tab.significance(n_resamples=500)
    assert a == tab.significance(n_resamples=500)
    perm = np.random.default_rng(0).permutation(len(tab))
    shuffled = DiffusionIndexTable(tab.targets[perm], tab.similar[perm], tab.dissimilar[perm])
    b = shuffled.significance(n_resamples=500)
    assert b.p_similar_negative == a.p_similar_negative
    assert b.p_dissimilar_positive == a.p_dissimilar_positive
    assert b.p_similar_below_dissimilar == a.p_similar_below_dissimilar


def test_no_diffusion_is_not_systematic():
    rng = np.random.default_rng(5)
    tab = DiffusionIndexTable(np.arange(40), rng.normal(0, 1, 40), rng.normal(0, 1, 40))
    sig = tab.significance(n_resamples=500)
    assert not sig.systematic
    # the opposite effect gives large one-sided p-values
    flipped = DiffusionIndexTable(np.arange(40), rng.normal(5, 1, 40), rng.normal(-5, 1, 40))
    sig = flipped.significance(n_resamples=500)
    assert sig.p_similar_negative > 0.99
    assert sig.p_dissimilar_positive > 0.99
    assert sig.p_similar_below_dissimilar > 0.99


def test_significance_outputs():
    sig = _table_from_centroids(torch.float64).significance(n_resamples=300)
    data = sig.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["systematic"] is True
    assert len(data["ci_similar"]) == 2
    lines = str(sig).splitlines()
    assert lines[0].startswith("n = 24 targets; one-sided Wilcoxon")
    assert "95% CI [" in lines[1]
    assert "p(α_sim < 0) = " in lines[1]
    assert "p(α_dissim > 0) = " in lines[2]
    assert lines[3].startswith("paired")
    assert lines[3].index("p(") == lines[1].index("p(")
    assert sig.systematic_at(1e-30) is False
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1.5"):
        sig.systematic_at(1.5)


def test_concat_pools_seeds():
    a = _table_from_centroids(torch.float64, seed=0)
    b = _table_from_centroids(torch.float64, seed=1)
    pooled = DiffusionIndexTable.concat([a, b])
    assert len(pooled) == len(a) + len(b)
    np.testing.assert_array_equal(pooled.similar, np.concatenate([a.similar, b.similar]))
    np.testing.assert_array_equal(pooled.targets, np.concatenate([a.targets, b.targets]))
    assert pooled.significance(n_resamples=200).n == 48
    other = DiffusionIndexTable(a.targets, a.similar, a.dissimilar, reference="all")
    with pytest.raises(ValueError, match="one reference set"):
        DiffusionIndexTable.concat([a, other])
    with pytest.raises(ValueError, match="tables is empty"):
        DiffusionIndexTable.concat([])
    with pytest.raises(TypeError, match=r"tables\[1\] must be a DiffusionIndexTable, got tuple"):
        DiffusionIndexTable.concat([a, (1, 2)])  # type: ignore[list-item]


def test_significance_errors():
    tab = _table_from_centroids(torch.float64)
    one = DiffusionIndexTable(np.array([3]), np.array([-1.0]), np.array([1.0]))
    with pytest.raises(ValueError, match="at least 2 targets, got 1"):
        one.significance()
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        tab.significance(confidence=1.0)
    with pytest.raises(TypeError, match="confidence must be a float"):
        tab.significance(confidence=True)
    with pytest.raises(ValueError, match="n_resamples must be an int >= 1, got 0"):
        tab.significance(n_resamples=0)
    with pytest.raises(TypeError, match="n_resamples must be an int >= 1, got float"):
        tab.significance(n_resamples=1e4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        tab.significance(seed=-1)


# ---------------------------------------------------------------------------
# review fixes (issues 16 and 20)
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:The BCa")
def test_systematic_is_a_property_on_both_results():
    tab = _table_from_centroids(torch.float64)
    sig = tab.significance(n_resamples=300)
    assert isinstance(sig.systematic, bool)  # `if sig.systematic:` means what it says
    assert sig.systematic is sig.systematic_at(0.05)
    quiet = DiffusionIndexTable(np.arange(6), np.zeros(6) + 1.0, np.zeros(6) - 1.0)
    assert quiet.significance(n_resamples=200).systematic is False
    one = diffusion_index(*_review_centroids(), 0, [1, 2], [3, 4])
    assert isinstance(one.systematic, bool)
    with pytest.raises(TypeError, match="level must be a float"):
        sig.systematic_at("0.05")  # type: ignore[arg-type]


def test_table_checks_its_columns():
    tab = DiffusionIndexTable([0, 1], [-1.0, -2.0], (3, 4))  # type: ignore[arg-type]
    assert tab.targets.dtype == np.int64
    assert tab.similar.dtype == np.float64
    assert tab.dissimilar.dtype == np.float64
    assert tab.mean_dissimilar == 3.5
    assert tab.fraction_systematic == 1.0
    from_tensors = DiffusionIndexTable(torch.tensor([0, 1]), torch.tensor([-1.0, -2.0]),
                                       torch.tensor([3.0, 4.0]))  # fmt: skip
    assert from_tensors.row(1) == (-2.0, 4.0)
    with pytest.raises(
        ValueError, match="similar must have one value per target: 2 targets, got 3"
    ):
        DiffusionIndexTable(np.arange(2), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="dissimilar must have one value per target"):
        DiffusionIndexTable(np.arange(2), np.zeros(2), np.zeros(1))
    with pytest.raises(
        ValueError, match=r"reference must be one of \['union', 'all'\], got 'bogus'"
    ):
        DiffusionIndexTable(np.arange(2), np.zeros(2), np.zeros(2), "bogus")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets must hold integer class indices"):
        DiffusionIndexTable(np.array([0.0, 1.0]), np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="similar must hold real numbers"):
        DiffusionIndexTable(np.arange(2), np.array(["a", "b"]), np.zeros(2))
    with pytest.raises(ValueError, match="targets must be 1-D"):
        DiffusionIndexTable(np.zeros((2, 2), dtype=int), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="targets is empty"):
        DiffusionIndexTable(np.arange(0), np.zeros(0), np.zeros(0))


def test_exports_escape_their_special_characters():
    tab = DiffusionIndexTable(np.arange(3), np.array([-1.0, -2.0, -3.0]), np.array([1.0, 2.0, 3.0]))
    names = ["a^b~c\\d", "x|y", "50% & $5 #1 {u}_v"]
    latex = tab.to_latex(names=names)
    assert "a\\textasciicircum{}b\\textasciitilde{}c\\textbackslash{}d & " in latex
    assert "50\\% \\& \\$5 \\#1 \\{u\\}\\_v & " in latex
    md = tab.to_markdown(names=names)
    rows = md.splitlines()
    assert rows[3] == "| x\\|y | -2.00 | +2.00 |"
    assert all(r.replace("\\|", "").count("|") == 4 for r in rows)


@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:The BCa")
def test_to_dict_is_standard_json():
    tab = DiffusionIndexTable(np.array([4, 9]), np.array([-1.0, np.nan]), np.array([2.0, 1.0]))
    data = tab.to_dict(names={4: "cat"})
    text = json.dumps(data, allow_nan=False)  # raises on NaN
    assert json.loads(text) == data
    assert data["rows"][1] == {"target": 9, "name": "9", "similar": None, "dissimilar": 1.0}
    assert data["mean_similar"] is None
    assert data["mean_dissimilar"] == 1.5
    assert data["reference"] == "union"
    sig = DiffusionIndexTable(np.arange(4), np.zeros(4), np.zeros(4)).significance(n_resamples=50)
    json.dumps(sig.to_dict(), allow_nan=False)


@pytest.mark.parametrize("scale", [1e-160, 1e-170, 1e-300, 1e155, 1e300])
def test_index_is_the_same_at_extreme_float64_scales(scale):
    c0, c1 = _review_centroids()
    want = diffusion_index(c0, c1, 0, [1, 2], [3, 4], reference="all")
    got = diffusion_index(c0 * scale, c1 * scale, 0, [1, 2], [3, 4], reference="all")
    assert got.similar == pytest.approx(want.similar, rel=1e-12)
    assert got.dissimilar == pytest.approx(want.dissimilar, rel=1e-12)
    tab = diffusion_indices(c0 * scale, c1 * scale, [0, 5], [[1, 2], [6]], [[3, 4], [7]])
    ref = diffusion_indices(c0, c1, [0, 5], [[1, 2], [6]], [[3, 4], [7]])
    np.testing.assert_allclose(tab.similar, ref.similar, rtol=1e-10)
    np.testing.assert_allclose(tab.dissimilar, ref.dissimilar, rtol=1e-10)
    d = relative_distances(c0 * scale, 0)
    np.testing.assert_allclose(d.numpy(), relative_distances(c0, 0).numpy(), rtol=1e-12)
