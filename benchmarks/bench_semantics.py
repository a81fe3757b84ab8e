"""Benchmark the semantic class sets: embedded WordNet sets, feature sets, import time.

    python benchmarks/bench_semantics.py [--repeat 5]

Target (issue 4): WordNet sets for all 1000 ImageNet classes in < 0.2 s from the
embedded data, including loading it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

from lsdiffusion.semantics import (
    ClassHierarchy,
    feature_class_masks,
    feature_class_sets,
    imagenet1k_hierarchy,
    set_consistency,
    wordnet_class_sets,
)


def timeit(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None):
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times)


def in_fresh_process(code: str, repeat: int) -> tuple[float, float]:
    """Median/min of the seconds that ``code`` prints, each run in a new interpreter."""
    times = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        out.check_returncode()
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times), min(times)


COLD_ALL_SETS = """
import time
import lsdiffusion.semantics
t0 = time.perf_counter()
from lsdiffusion.semantics import wordnet_class_sets
sets = [wordnet_class_sets(i) for i in range(1000)]
print(time.perf_counter() - t0)
"""

COLD_MASKS = """
import lsdiffusion.semantics as s, time
t0 = time.perf_counter()
m = s.wordnet_class_masks()
print(time.perf_counter() - t0)
"""

IMPORT_LSDIFFUSION = """
import time
t0 = time.perf_counter()
import lsdiffusion
print(time.perf_counter() - t0)
"""

IMPORT_SEMANTICS = """
import time, lsdiffusion
t0 = time.perf_counter()
import lsdiffusion.semantics
print(time.perf_counter() - t0)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    r = args.repeat

    rows: list[tuple[str, float, float]] = []

    def add(name: str, result: tuple[float, float]) -> None:
        rows.append((name, *result))
        print(f"  measured {name}", file=sys.stderr)

    add(
        "fresh process: load data + sets of all 1000 classes (< 200 ms)",
        in_fresh_process(COLD_ALL_SETS, r),
    )
    add("fresh process: load data + wordnet_class_masks", in_fresh_process(COLD_MASKS, r))

    text = imagenet1k_hierarchy().to_text()
    add(
        "load embedded hierarchy (gunzip + parse + index)",
        timeit(imagenet1k_hierarchy.__wrapped__, r),
    )
    add(
        "ClassHierarchy.from_text (already decompressed)",
        timeit(lambda: ClassHierarchy.from_text(text), r),
    )

    h = imagenet1k_hierarchy()
    add(
        "class_masks, all 1000 classes (uncached)",
        timeit(h.class_masks, r, setup=h._mask_cache.clear),
    )
    add(
        "class_sets x 1000 targets, masks built on first call",
        timeit(lambda: [h.class_sets(i) for i in range(1000)], r, setup=h._mask_cache.clear),
    )
    add(
        "wordnet_class_sets x 1000 targets, masks cached",
        timeit(lambda: [wordnet_class_sets(i) for i in range(1000)], r),
    )
    add(
        "row-by-row path (used above 4096 classes) x 1000",
        timeit(lambda: [h._class_sets_direct(i, 2, 3) for i in range(1000)], r),
    )

    def lca() -> None:
        h._lca = None
        h.lca_depths()

    add("lca_depths (1000x1000)", timeit(lca, r))

    rng = np.random.default_rng(0)
    centroids = rng.normal(size=(1000, 2048)).astype(np.float32)
    add("feature_class_masks, C=1000, D=2048", timeit(lambda: feature_class_masks(centroids), r))
    add(
        "feature_class_sets, one target, C=1000, D=2048",
        timeit(lambda: feature_class_sets(centroids, 207), r),
    )
    wn_masks, feat = h.class_masks(), feature_class_masks(centroids)
    add(
        "set_consistency, (1000,1000) masks",
        timeit(lambda: set_consistency(wn_masks.similar, feat.similar), r),
    )

    add("import lsdiffusion (fresh process)", in_fresh_process(IMPORT_LSDIFFUSION, r))
    add("import lsdiffusion.semantics after lsdiffusion", in_fresh_process(IMPORT_SEMANTICS, r))

    width = max(len(n) for n, _, _ in rows)
    print(f"\n{'benchmark':<{width}}  {'median':>10}  {'min':>10}")
    print(f"{'-' * width}  {'-' * 10}  {'-' * 10}")
    for name, med, best in rows:
        print(f"{name:<{width}}  {med * 1e3:>8.1f}ms  {best * 1e3:>8.1f}ms")
    masks = h.class_masks()
    sim, dis = masks.similar.sum(1), masks.dissimilar.sum(1)
    print(
        f"\ndefault WordNet set sizes: similar median {np.median(sim):.0f} "
        f"(min {sim.min()}, max {sim.max()}), dissimilar median {np.median(dis):.0f} "
        f"(min {dis.min()}, max {dis.max()})"
    )


if __name__ == "__main__":
    main()
