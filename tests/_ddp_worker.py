"""One rank of the gloo tests in ``test_centroids.py`` and ``test_scatter.py`` (a script).

Usage: ``python _ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_FILE [MODE]``.

* ``centroids`` (default): each rank takes the interleaved shard
  ``rows[rank::world]`` of the shared data set, feeds it to the accumulators in
  small batches, and saves what ``compute()`` returns.
* ``scatter``: uneven contiguous shards (:func:`scatter_shards`; the last rank
  gets nothing and does not pass ``num_features``) into ``ClassScatter``.
* ``mismatch``: accumulators configured differently per rank; saves the error
  message each rank got (every rank must raise, none may hang).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

NUM_CLASSES = 11
NUM_FEATURES = 7
NUM_ROWS = 403
TEMPERATURES = (1.0, 4.0)


def make_data(exact: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The shared data set; the last class never occurs.

    With ``exact=True`` every feature is a multiple of 1/4 in [-16, 16), so every
    partial sum is exactly representable and the summation order cannot matter.
    """
    g = torch.Generator().manual_seed(1234)
    if exact:
        feats = torch.randint(-64, 64, (NUM_ROWS, NUM_FEATURES), generator=g).float() / 4
    else:
        feats = torch.randn(NUM_ROWS, NUM_FEATURES, generator=g) * 10 + 3
    labels = torch.randint(0, NUM_CLASSES - 1, (NUM_ROWS,), generator=g)
    logits = torch.randn(NUM_ROWS, NUM_CLASSES, generator=g) * 3
    return feats, labels, logits


def scatter_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Clustered float32 features at a 1e4 offset; the last class never occurs."""
    g = torch.Generator().manual_seed(99)
    means = torch.randn(NUM_CLASSES, NUM_FEATURES, generator=g) * 3
    labels = torch.randint(0, NUM_CLASSES - 1, (NUM_ROWS,), generator=g)
    feats = means[labels] + torch.randn(NUM_ROWS, NUM_FEATURES, generator=g) + 1e4
    return feats.float(), labels


def scatter_shards(world: int) -> list[slice]:
    """Uneven contiguous shards covering every row; the last rank's is empty."""
    cuts = [*[0, 37, 190][: world - 1], NUM_ROWS]
    return [slice(cuts[r], cuts[r + 1]) for r in range(world - 1)] + [slice(0, 0)]


def launch(world: int, tmp_path: Path, mode: str = "centroids") -> list[Any]:
    """Run ``world`` ranks of this script in ``mode`` (gloo, FileStore); return what each saved."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    outs = [tmp_path / f"{mode}-rank{r}.pt" for r in range(world)]
    store = tmp_path / f"{mode}-store"
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, str(r), str(world), str(store), str(outs[r]), mode],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(world)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log
    return [torch.load(out, weights_only=False) for out in outs]


def run_scatter(rank: int, world: int) -> dict[str, object]:
    from lsdiffusion.scatter import ClassScatter

    feats, labels = scatter_data()
    shard = scatter_shards(world)[rank]
    x, y = feats[shard], labels[shard]
    results: dict[str, object] = {}
    for exact in (True, False):
        acc = ClassScatter(NUM_CLASSES, on_empty="ignore", exact=exact)
        for start in range(0, x.shape[0], 29):
            acc.update(x[start : start + 29], y[start : start + 29])
        before = None if acc._state is None else {k: v.clone() for k, v in acc._state.items()}
        first = acc.compute()
        second = acc.compute()
        after = None if acc._state is None else acc._state
        unchanged = before is None or all(torch.equal(before[k], after[k]) for k in before)
        results[f"exact={exact}"] = {"first": first, "second": second, "unchanged": unchanged}
    return results


def run_mismatch(rank: int) -> dict[str, str]:
    from lsdiffusion.centroids import ClassCentroids
    from lsdiffusion.entropy import TargetEntropy
    from lsdiffusion.scatter import ClassScatter

    cases: dict[str, object] = {
        "entropy_order": TargetEntropy((1.0, 2.0) if rank == 0 else (2.0, 1.0)),
        "entropy_k": TargetEntropy((1.0,), num_classes=5 + rank),
        "entropy_count": TargetEntropy((1.0, 2.0) if rank == 0 else (1.0, 2.0, 3.0)),
        "centroids_k": ClassCentroids(4 + rank, num_features=3),
        "centroids_d": ClassCentroids(4, num_features=3 + rank),
        "scatter_d": ClassScatter(4, num_features=3 + rank),
    }
    out: dict[str, str] = {}
    for name, acc in cases.items():
        try:
            if isinstance(acc, TargetEntropy):
                acc.update(torch.zeros(2, acc.num_classes or 5))
            acc.compute()  # type: ignore[attr-defined]
            out[name] = "no error"
        except ValueError as exc:
            out[name] = str(exc)
    # a rank that saw nothing (and was not told D or K) learns them from the others
    late = ClassCentroids(4, on_empty="ignore")
    if rank == 0:
        late.update(torch.ones(2, 3), torch.tensor([0, 1]))
    got = late.compute()
    out["centroids_late"] = "ok" if got.shape == (4, 3) and got[0].tolist() == [1.0] * 3 else "bad"
    entropy = TargetEntropy((1.0,))
    if rank == 0:
        entropy.update(torch.zeros(3, 4))
    report = entropy.compute()
    out["entropy_late"] = "ok" if report.num_classes == 4 and report.num_samples == 3 else "bad"
    return out


def run(rank: int, world: int, init_file: str, out_file: str, mode: str = "centroids") -> None:
    import torch.distributed as dist

    if mode != "centroids":
        dist.init_process_group(
            "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world
        )
        try:
            result = run_scatter(rank, world) if mode == "scatter" else run_mismatch(rank)
            torch.save(result, out_file)
        finally:
            dist.destroy_process_group()
        return

    from lsdiffusion.centroids import ClassCentroids
    from lsdiffusion.entropy import TargetEntropy

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results: dict[str, object] = {}
        for exact in (True, False):
            feats, labels, logits = make_data(exact)
            shard = slice(rank, None, world)
            x, y = feats[shard], labels[shard]
            acc = ClassCentroids(NUM_CLASSES, on_empty="ignore")
            for start in range(0, x.shape[0], 32):
                acc.update(x[start : start + 32], y[start : start + 32])
            local_sums = acc.sums.clone()
            first = acc.compute()
            second = acc.compute()  # compute() must not change the local state
            results[f"exact={exact}"] = {
                "centroids": first,
                "again": second,
                "counts": acc.class_counts(),
                "local_sums_before": local_sums,
                "local_sums_after": acc.sums.clone(),
                "local_centroids": acc.compute(sync=False),
            }
        _, _, logits = make_data(True)
        ent = TargetEntropy(temperatures=TEMPERATURES, num_classes=NUM_CLASSES)
        ent.update(logits[rank::world])
        report = ent.compute()
        results["entropy"] = (report.entropy, report.num_samples)
        # a rank that sees no data at all still takes part (state shape from num_features)
        feats, labels, _ = make_data(True)
        partial = ClassCentroids(NUM_CLASSES, num_features=NUM_FEATURES, on_empty="ignore")
        if rank == 0:
            partial.update(feats[:50], labels[:50])
        results["partial"] = partial.compute()
        torch.save(results, out_file)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], *sys.argv[5:6])
