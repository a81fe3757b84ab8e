"""Class centroids: one-shot and streaming, float32 staging, DDP (a two-process gloo group)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lsdiffusion.centroids import ClassCentroids, EmptyClassWarning, class_centroids

HERE = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------
# independent reference (plain float64 numpy)
# ---------------------------------------------------------------------------


def ref_centroids(x: np.ndarray, y: np.ndarray, num_classes: int) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    out = np.full((num_classes, x.shape[1]), np.nan)
    for c in range(num_classes):
        rows = x[y == c]
        if len(rows):
            out[c] = rows.sum(axis=0) / len(rows)
    return out


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
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), ValueError, r"labels must be \(\)"),
        (torch.zeros(4, 2, 1), torch.zeros(4, dtype=torch.long), ValueError, r"be \(4, 2\)"),
        (torch.zeros(4, 2), torch.zeros(3, dtype=torch.long), ValueError, r"labels must be \(4,\)"),
        (torch.zeros(4, 2), torch.zeros(4), TypeError, r"labels must have an integer dtype"),
        (torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool), TypeError, r"integer dtype"),
        (torch.zeros(4, 2), torch.zeros(4, 1, dtype=torch.long), ValueError, r"got labels of sha"),
        (torch.tensor(1.0), torch.tensor(0), ValueError, "0-d"),
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
    with pytest.raises(ValueError, match=r"4 features in their last dim.*got shape \(2, 5\)"):
        acc.update(torch.zeros(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes=4"):
        acc.merge(ClassCentroids(4))
    other = ClassCentroids(3)
    other.update(torch.zeros(1, 2), torch.tensor([0]))
    with pytest.raises(ValueError, match="num_features=2"):
        acc.merge(other)
    with pytest.raises(TypeError, match="merge ClassCentroids"):
        acc.merge("nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
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


@pytest.mark.parametrize("bad", [[0, 3], [-1, 0], [0, 300]])
def test_validate_false_bad_labels_are_a_clear_error_before_any_change(bad):
    """Issue 16 item 16: raw torch errors (index_add_/bincount) before the fix."""
    acc = ClassCentroids(3, validate=False)
    acc.update(torch.ones(1, 2), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 2\].*validate=False"):
        acc.update(torch.ones(2, 2), torch.tensor(bad))
    assert acc.counts.tolist() == [0, 1, 0]  # nothing was added
    assert acc.sums.tolist() == [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_narrow_label_dtype_does_not_wrap_num_classes(dtype):
    """Issue 16 item 14: ClassCentroids(300) refused uint8 label 50 (300 wrapped to 44)."""
    acc = ClassCentroids(300)
    acc.update(torch.ones(1, 2), torch.tensor([50], dtype=dtype))
    assert acc.counts[50].item() == 1
    assert acc.counts.sum().item() == 1
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\].*got \[100\]"):
        ClassCentroids(10).update(torch.ones(1, 2), torch.tensor([100], dtype=dtype))


def test_merge_into_itself_is_refused():
    """Issue 16 item 9: acc.merge(acc) doubled the counts silently before the fix."""
    acc = ClassCentroids(2)
    acc.update(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="into itself"):
        acc.merge(acc)
    with pytest.raises(ValueError, match="into itself"):
        acc.merge(ClassCentroids(2), acc)
    assert acc.counts.tolist() == [1, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_token_features_and_ignore_index(dtype):
    """Issue 17 item 1: (B, L, D) token features with (B, L) labels, padding skipped."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 5, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randint(0, 6, (4, 9), generator=g)
    y[:, 6:] = -100  # padding
    y[0, 0] = -100
    keep = (y != -100).numpy()
    want = ref_centroids(x.double().numpy()[keep], y.numpy()[keep], 6)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    got = class_centroids(x, y, 6, on_empty="ignore")
    np.testing.assert_allclose(got.numpy(), want, rtol=tol, atol=tol)
    for exact in (True, False):
        acc = ClassCentroids(6, exact=exact, on_empty="ignore")
        acc.update(x[:2], y[:2])
        acc.update(x[2:], y[2:])
        np.testing.assert_allclose(acc.compute().numpy(), want, rtol=tol, atol=tol)
        assert acc.counts.sum().item() == int(keep.sum())
    custom = y.masked_fill(y == -100, 7)
    np.testing.assert_allclose(
        class_centroids(x, custom, 6, on_empty="ignore", ignore_index=7).numpy(),
        want,
        rtol=tol,
        atol=tol,
    )
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\].*-100"):
        class_centroids(x, y, 6, ignore_index=None)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        ClassCentroids(6, ignore_index=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"labels must be \(4, 9\)"):
        ClassCentroids(6).update(x, y[:, :5])


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


def test_ddp_ranks_that_disagree_raise_naming_the_rank(tmp_path):
    """Issue 16 item 5: every rank raises a clear error (before the fix: mixed sums or a hang)."""
    worker = _load_worker()
    ranks = worker.launch(2, tmp_path, "mismatch")
    for res in ranks:
        assert (
            "temperatures=[1.0, 2.0] on rank 0 but temperatures=[2.0, 1.0] on rank 1"
            in (res["entropy_order"])
        )
        assert "num_classes=5 on rank 0 but num_classes=6 on rank 1" in res["entropy_k"]
        assert (
            "number of temperatures=2 on rank 0 but number of temperatures=3 on rank 1"
            in (res["entropy_count"])
        )
        assert "ClassCentroids is configured differently" in res["centroids_k"]
        assert "num_classes=4 on rank 0 but num_classes=5 on rank 1" in res["centroids_k"]
        assert "num_features=3 on rank 0 but num_features=4 on rank 1" in res["centroids_d"]
        assert "ClassScatter is configured differently" in res["scatter_d"]
        assert res["centroids_late"] == "ok"
        assert res["entropy_late"] == "ok"
