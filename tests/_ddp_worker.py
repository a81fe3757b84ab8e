"""One rank of the two-process gloo test in ``test_centroids.py`` (run as a script).

Usage: ``python _ddp_worker.py RANK WORLD_SIZE INIT_FILE OUT_FILE``. Each rank
takes the interleaved shard ``rows[rank::world]`` of the shared data set, feeds
it to the accumulators in small batches, and saves what ``compute()`` returns.
"""

from __future__ import annotations

import sys

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


def run(rank: int, world: int, init_file: str, out_file: str) -> None:
    import torch.distributed as dist

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
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
