"""Class centroids (streaming, DDP), the diffusion index and the Müller projection."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lsdiffusion.geometry import (
    ClassCentroids,
    DiffusionIndexTable,
    EmptyClassWarning,
    Projection,
    Templates,
    class_centroids,
    diffusion_index,
    diffusion_indices,
    muller_projection,
    relative_distances,
    templates_from_linear,
)

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# independent references (plain float64 numpy)
# ---------------------------------------------------------------------------


def ref_centroids(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.full((num_classes, x.shape[1]), np.nan)
    for c in range(num_classes):
        rows = x[y == c]
        if len(rows):
            out[c] = rows.sum(axis=0) / len(rows)
    return out


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
# class centroids
# ---------------------------------------------------------------------------


def test_class_centroids_matches_numpy(device, dtype, tol):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(500, 9, generator=g) * 5 + 2).to(dtype)
    y = torch.randint(0, 6, (500,), generator=g)
    got = class_centroids(x.to(device), y.to(device), num_classes=6)
    assert got.dtype == torch.float64
    assert got.device.type == device.type
    want = ref_centroids(x.numpy(), y.numpy(), 6)
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-12, atol=1e-12)


def test_class_centroids_accepts_numpy():
    x = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
    got = class_centroids(x, np.array([1, 1, 0]), num_classes=2)
    assert torch.equal(got, torch.tensor([[5.0, 6.0], [2.0, 3.0]], dtype=torch.float64))


def test_streaming_equals_one_shot_and_merge(device, dtype):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(333, 5, generator=g).to(dtype).to(device)
    y = torch.randint(0, 4, (333,), generator=g).to(device)
    full = class_centroids(x, y, 4)
    acc = ClassCentroids(4)
    for start in range(0, 333, 50):
        acc.update(x[start : start + 50], y[start : start + 50])
    torch.testing.assert_close(acc.compute(), full, rtol=1e-12, atol=1e-12)
    assert acc.counts.tolist() == torch.bincount(y, minlength=4).tolist()
    # merge two halves
    a, b = ClassCentroids(4), ClassCentroids(4)
    a.update(x[:100], y[:100])
    b.update(x[100:], y[100:])
    merged = a.merge(b, ClassCentroids(4))  # an empty accumulator merges as a no-op
    assert merged is a
    torch.testing.assert_close(a.compute(), full, rtol=1e-12, atol=1e-12)
    # into a fresh one
    fresh = ClassCentroids(4).merge(a)
    torch.testing.assert_close(fresh.compute(), full, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["random", "sorted"])
def test_staged_float32_path_close_to_exact(order):
    """exact=False: float32 staging, at most STAGE_LIMIT samples per class, then float64."""
    g = torch.Generator().manual_seed(3)
    n, c = 3000, 7
    x = torch.randn(n, 5, generator=g) * 3 + 10
    y = torch.randint(0, c, (n,), generator=g)
    if order == "sorted":  # like an unshuffled ImageFolder: long runs of one class
        y, _ = torch.sort(y)
    exact, staged = ClassCentroids(c), ClassCentroids(c, exact=False)
    for start in range(0, n, 100):
        exact.update(x[start : start + 100], y[start : start + 100])
        staged.update(x[start : start + 100], y[start : start + 100])
    abs_sums = torch.zeros(c, 5, dtype=torch.float64).index_add_(0, y, x.double().abs())
    bound = ClassCentroids.STAGE_LIMIT * 2.0**-24 * abs_sums
    assert ((staged.sums - exact.sums).abs() <= bound).all()
    assert torch.equal(staged.counts, exact.counts)
    torch.testing.assert_close(staged.compute(), exact.compute(), rtol=1e-6, atol=0)
    # merging flushes the staged part of the other accumulator
    other = ClassCentroids(c, exact=False)
    other.update(x[:10], y[:10])
    merged = ClassCentroids(c).merge(other)
    torch.testing.assert_close(
        merged.compute(on_empty="ignore"),
        class_centroids(x[:10], y[:10], c, on_empty="ignore"),
        rtol=1e-6,
        atol=0,
        equal_nan=True,
    )
    # float64 input always takes the exact path
    x64 = x.double()
    a, b = ClassCentroids(c), ClassCentroids(c, exact=False)
    a.update(x64, y)
    b.update(x64, y)
    assert torch.equal(a.sums, b.sums)
    b.to("cpu")
    b.reset()
    b.update(x[:5], y[:5])
    torch.testing.assert_close(
        b.compute(on_empty="ignore"),
        class_centroids(x[:5], y[:5], c, on_empty="ignore"),
        rtol=1e-6,
        atol=0,
        equal_nan=True,
    )


def test_compute_is_repeatable_and_reset():
    acc = ClassCentroids(2)
    acc.update(torch.ones(3, 2), torch.tensor([0, 1, 1]))
    first = acc.compute()
    second = acc.compute()
    assert torch.equal(first, second)
    assert acc.counts.tolist() == [1, 2]
    acc.reset()
    with pytest.raises(RuntimeError, match="seen no data"):
        acc.compute()
    acc.update(torch.zeros(2, 7), torch.tensor([0, 1]))  # a new feature dim after reset
    assert acc.compute().shape == (2, 7)
    fixed = ClassCentroids(2, num_features=3)
    fixed.update(torch.ones(1, 3), torch.tensor([0]))
    fixed.reset()
    assert fixed.counts.tolist() == [0, 0]
    assert "ClassCentroids(num_classes=2" in repr(fixed)


def test_empty_classes_warn_raise_ignore():
    x = torch.tensor([[1.0, 1.0], [3.0, 3.0]])
    y = torch.tensor([0, 2])
    with pytest.warns(EmptyClassWarning, match=r"2 of 4 classes have no samples.*\[1, 3\]"):
        c = class_centroids(x, y, 4)
    assert torch.isnan(c[1]).all()
    assert torch.isnan(c[3]).all()
    assert torch.equal(c[[0, 2]], torch.tensor([[1.0, 1.0], [3.0, 3.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"classes \[1, 3\]"):
        class_centroids(x, y, 4, on_empty="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        class_centroids(x, y, 4, on_empty="ignore")


@pytest.mark.parametrize(
    ("features", "labels", "exc", "match"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), ValueError, r"features must be 2-D"),
        (torch.zeros(4, 2, 1), torch.zeros(4, dtype=torch.long), ValueError, r"2-D"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), ValueError, r"features has 4 rows"),
        (torch.zeros(4, 2), torch.zeros(4), TypeError, r"labels must have an integer dtype"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool), TypeError, r"integer dtype"),
        (torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.long), ValueError, r"labels must be 1-D"),
        (torch.zeros(4, 2), torch.tensor([0, 1, 5, -1]), ValueError, r"\[0, 2\].*\[-1, 5\]"),
        (
            torch.zeros(4, 2, dtype=torch.long),
            torch.zeros(4, dtype=torch.long),
            TypeError,
            "floating",
        ),
        (
            [[0.0, 1.0]],
            torch.zeros(1, dtype=torch.long),
            TypeError,
            "features must be a torch.Tensor",
        ),
    ],
)
def test_centroid_input_errors(features, labels, exc, match):
    with pytest.raises(exc, match=match):
        class_centroids(features, labels, 3)


def test_centroid_state_errors():
    acc = ClassCentroids(3)
    acc.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"must have 4 columns.*got shape \(2, 5\)"):
        acc.update(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes=4"):
        acc.merge(ClassCentroids(4))
    other = ClassCentroids(3)
    other.update(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_features=2"):
        acc.merge(other)
    with pytest.raises(TypeError, match="merge ClassCentroids"):
        acc.merge("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        ClassCentroids(0)
    with pytest.raises(ValueError, match="on_empty must be one of"):
        ClassCentroids(3, on_empty="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_empty must be one of"):
        acc.compute(on_empty="nope")  # type: ignore[arg-type]
    meta = ClassCentroids(3, num_features=4, device="meta")
    with pytest.raises(ValueError, match="state is on meta"):
        meta.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="created with device=meta"):
        ClassCentroids(3, device="meta").update(torch.zeros(2, 4), torch.tensor([0, 1]))


def test_validate_false_skips_range_check_but_to_moves():
    acc = ClassCentroids(3, validate=False).to("cpu")
    acc.update(torch.ones(2, 2, dtype=torch.float64), torch.tensor([0, 2], dtype=torch.int32))
    assert acc.counts.tolist() == [1, 0, 1]
    assert acc.to("cpu").sums.device.type == "cpu"


def _load_worker():
    spec = importlib.util.spec_from_file_location("lsd_ddp_worker", HERE / "_ddp_worker.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_two_process_gloo_matches_one_process(tmp_path):
    """A real two-process gloo group on CPU (FileStore in tmp_path).

    Exactness: with features that are multiples of 1/4 every float64 partial
    sum is exact, so the all-reduced result must be *bit-identical* to one
    process over all the data. With Gaussian features the summation order
    differs between the runs, so that case is compared at rtol=1e-12.
    """
    worker = _load_worker()
    world = 2
    init_file = tmp_path / "store"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE / "_ddp_worker.py"),
                str(r),
                str(world),
                str(init_file),
                str(tmp_path / f"rank{r}.pt"),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    for p in procs:
        out, _ = p.communicate(timeout=180)
        assert p.returncode == 0, out
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]

    for exact in (True, False):
        feats, labels, _ = worker.make_data(exact)
        single = ClassCentroids(worker.NUM_CLASSES, on_empty="ignore")
        single.update(feats, labels)
        want = single.compute()
        want_counts = single.counts
        for r, res in enumerate(ranks):
            got = res[f"exact={exact}"]
            if exact:
                torch.testing.assert_close(got["centroids"], want, rtol=0, atol=0, equal_nan=True)
            else:
                torch.testing.assert_close(
                    got["centroids"], want, rtol=1e-12, atol=0, equal_nan=True
                )
            torch.testing.assert_close(
                got["again"], got["centroids"], rtol=0, atol=0, equal_nan=True
            )
            assert torch.equal(got["counts"], want_counts)
            assert torch.isnan(got["centroids"][-1]).all()  # the class nobody saw
            # the local state is untouched by the all-reduce
            assert torch.equal(got["local_sums_before"], got["local_sums_after"])
            local = ClassCentroids(worker.NUM_CLASSES, on_empty="ignore")
            local.update(feats[r::world], labels[r::world])
            torch.testing.assert_close(
                got["local_centroids"], local.compute(), rtol=0, atol=0, equal_nan=True
            )

    # a rank without any data still joins the reduction
    feats, labels, logits = worker.make_data(True)
    want_partial = class_centroids(feats[:50], labels[:50], worker.NUM_CLASSES, on_empty="ignore")
    for res in ranks:
        torch.testing.assert_close(res["partial"], want_partial, rtol=0, atol=0, equal_nan=True)

    from lsdiffusion.entropy import target_entropy

    for res in ranks:
        entropy, n = res["entropy"]
        assert n == worker.NUM_ROWS
        for h, t in zip(entropy, worker.TEMPERATURES, strict=True):
            want_h = target_entropy(logits.double(), temperature=t).item()
            assert h == pytest.approx(want_h, rel=1e-6)


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
        ValueError, match=r"dissimilar of target 0 must hold class indices in \[0, 5\].*got 9"
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
