"""Benchmarks of the measurement half: centroids, diffusion index, target entropy.

    python benchmarks/bench_geometry.py            # full sizes (ImageNet-like)
    python benchmarks/bench_geometry.py --quick    # ~10x smaller, a few seconds
    python benchmarks/bench_geometry.py --alternatives   # also time other centroid kernels

1. Centroid accumulation: N x 2048 float32 features (N = 1.28M, the ImageNet
   train set) streamed in batches of 256 into ``ClassCentroids(1000)``; reported
   in GB/s of float32 input and as a ratio against a plain ``torch.sum`` over the
   same batches (the memory-bandwidth floor of reading the input once). The
   stream is not materialised (10 GB): a pool of distinct batches, larger than
   the CPU caches, is cycled.
2. ``diffusion_indices`` for all 1000 classes of 1000 x 2048 centroids with ragged
   sets sized as the paper's feature-distance method (closest 1% = 10 classes,
   farthest 90% = 900 classes), for both references.
4. Cluster geometry: one pass of ``ClassScatter(1000)`` (NC1, CDNV, class
   separation R^2) over 200k x 2048 float32 features in batches of 1024, against
   ``ClassCentroids(1000)`` over the same batches, interleaved in rounds (target:
   <= 2x its time; state D x D + K x D float64, never per-class covariances).
   ``--geometry`` runs this section alone.
3. ``TargetEntropy`` over 4 temperatures for 50k x 1000 float32 teacher logits,
   against the obvious ``-(softmax * log_softmax).sum(1).mean()`` per temperature.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from lsdiffusion.centroids import ClassCentroids
from lsdiffusion.diffusion import diffusion_indices
from lsdiffusion.entropy import TargetEntropy
from lsdiffusion.scatter import ClassScatter


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bench_centroids(n: int, d: int, c: int, batch: int, pool: int, alternatives: bool):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, d, generator=g) for _ in range(pool)]
    ys = [torch.randint(0, c, (batch,), generator=g) for _ in range(pool)]
    steps = n // batch
    gbytes = steps * batch * d * 4 / 1e9
    sink = torch.zeros(())

    def plain_sum(x, y):
        sink.add_(x.sum())

    kernels = {"torch.sum (floor)": plain_sum}
    kernels["ClassCentroids.update (exact, default)"] = ClassCentroids(c, d).update
    kernels["ClassCentroids.update (validate=False)"] = ClassCentroids(c, d, validate=False).update
    kernels["ClassCentroids.update (exact=False: f32 staging)"] = ClassCentroids(
        c, d, exact=False
    ).update
    if alternatives:
        sums = torch.zeros(c, d, dtype=torch.float64)
        counts = torch.zeros(c, dtype=torch.int64)

        def onehot_mm(x, y):  # one-hot matmul over the classes present, float32 then float64
            u, inv = torch.unique(y, return_inverse=True)
            oh = torch.zeros(len(u), len(y))
            oh[inv, torch.arange(len(y))] = 1.0
            sums.index_add_(0, u, (oh @ x).double())
            counts.index_add_(0, u, oh.sum(1).long())

        def scatter(x, y):
            sums.scatter_add_(0, y[:, None].expand(-1, d), x.double())
            counts.add_(torch.bincount(y, minlength=c))

        def sort_segment(x, y):
            ys_, order = torch.sort(y)
            u, cnt = torch.unique_consecutive(ys_, return_counts=True)
            seg = torch.segment_reduce(x[order].double(), "sum", lengths=cnt)
            sums.index_add_(0, u, seg)
            counts.index_add_(0, u, cnt)

        kernels["alt: one-hot matmul (f32) + f64 acc"] = onehot_mm
        kernels["alt: scatter_add_ (f64)"] = scatter
        kernels["alt: sort + segment_reduce (f64)"] = sort_segment

    # Interleave the kernels in rounds so that load changes on a shared machine
    # hit every kernel alike; each kernel streams all `steps` batches in total.
    rounds = 10
    times = dict.fromkeys(kernels, 0.0)
    for fn in kernels.values():
        fn(xs[0], ys[0])  # warm-up
    for r in range(rounds):
        lo, hi = r * steps // rounds, (r + 1) * steps // rounds
        for name, fn in kernels.items():
            t = time.perf_counter()
            for i in range(lo, hi):
                fn(xs[i % pool], ys[i % pool])
            times[name] += time.perf_counter() - t
    t_sum = times["torch.sum (floor)"]
    print(f"\n## Centroid accumulation: {steps * batch:,} x {d} float32, batch {batch}, C={c}")
    print(f"({gbytes:.2f} GB streamed per kernel; pool of {pool} distinct batches; ")
    print(f"kernels interleaved in {rounds} rounds)\n")
    print("| kernel | time (s) | GB/s | time / torch.sum |")
    print("|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {t:.2f} | {gbytes / t:.2f} | {t / t_sum:.2f}x |")


def bench_diffusion(c: int, d: int):
    rng = np.random.default_rng(0)
    c0 = rng.normal(size=(c, d))
    c1 = c0 + 0.05 * rng.normal(size=(c, d))
    n_sim = max(1, round(0.01 * c))
    n_dis = round(0.9 * c)
    sims, diss = [], []
    for t in range(c):
        others = rng.permutation(np.delete(np.arange(c), t))
        sims.append(others[:n_sim].tolist())
        diss.append(others[n_sim : n_sim + n_dis].tolist())
    c0t, c1t = torch.from_numpy(c0), torch.from_numpy(c1)
    print(f"\n## Diffusion index: all {c} targets, {c} x {d} centroids (float64), ")
    print(f"ragged sets of {n_sim} similar / {n_dis} dissimilar classes\n")
    print("| call | time (s) |")
    print("|---|---:|")
    for ref in ("union", "all"):
        t = timeit(lambda ref=ref: diffusion_indices(c0t, c1t, range(c), sims, diss, reference=ref))
        print(f"| diffusion_indices(reference={ref!r}), ragged lists | {t:.3f} |")
    sim_m = np.zeros((c, c), dtype=bool)
    dis_m = np.zeros((c, c), dtype=bool)
    for t_, (s, ds) in enumerate(zip(sims, diss, strict=True)):
        sim_m[t_, s] = True
        dis_m[t_, ds] = True
    t = timeit(lambda: diffusion_indices(c0t, c1t, None, sim_m, dis_m))
    print(f"| diffusion_indices(reference='union'), (C, C) masks | {t:.3f} |")


def bench_entropy(n: int, k: int, temps: tuple[float, ...]):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(n, k, generator=g) * 4

    def ours():
        acc = TargetEntropy(temps)
        acc.update(z)
        return acc.compute()

    def naive():
        out = []
        for t in temps:
            lp = torch.log_softmax(z / t, dim=1)
            out.append(float(-(lp.exp() * lp).sum(1).mean()))
        return out

    t_ours = timeit(ours)
    t_naive = timeit(naive)
    got, want = ours().entropy, naive()
    err = max(abs(a - b) for a, b in zip(got, want, strict=True))
    gb = n * k * 4 / 1e9
    print(f"\n## Target entropy: {n:,} x {k} float32 logits, T in {list(temps)}\n")
    print("| method | time (s) | input GB/s per T | vs naive |")
    print("|---|---:|---:|---:|")
    print(
        f"| TargetEntropy.update + compute | {t_ours:.3f} | "
        f"{gb * len(temps) / t_ours:.2f} | {t_ours / t_naive:.2f}x |"
    )
    print(
        f"| naive -(softmax*log_softmax) per T | {t_naive:.3f} | "
        f"{gb * len(temps) / t_naive:.2f} | 1.00x |"
    )
    print(f"\nmax |difference| of the mean entropies: {err:.2e} nats")


def bench_scatter(n: int, d: int, c: int, batch: int, pool: int, rounds: int = 4):
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(batch, d, generator=g) + 3.0 for _ in range(pool)]
    ys = [torch.randint(0, c, (batch,), generator=g) for _ in range(pool)]
    steps = n // batch
    accs = {
        "ClassCentroids": ClassCentroids(c, d),
        "ClassScatter": ClassScatter(c, d),
        "ClassScatter(exact=False)": ClassScatter(c, d, exact=False),
    }
    for acc in accs.values():  # warm-up
        acc.update(xs[0], ys[0])
    times = {name: [] for name in accs}
    per_round = steps // rounds
    for r in range(rounds):
        order = list(accs) if r % 2 == 0 else list(reversed(accs))
        for name in order:
            t = time.perf_counter()
            for i in range(r * per_round, (r + 1) * per_round):
                accs[name].update(xs[i % pool], ys[i % pool])
            times[name].append(time.perf_counter() - t)
    t = time.perf_counter()
    geometry = accs["ClassScatter"].compute()
    t_compute = time.perf_counter() - t
    ratios = {
        name: statistics.median(a / b for a, b in zip(ts, times["ClassCentroids"], strict=True))
        for name, ts in times.items()
    }
    ratio = ratios["ClassScatter"]
    state_mb = (d * d + c * d) * 8 / 2**20
    print(f"\n## Cluster geometry: {per_round * rounds * batch:,} x {d} float32, batch {batch}, ")
    print(f"K={c}, {rounds} interleaved rounds\n")
    print("ClassScatter forms a D x D scatter product per batch (O(B D^2) flops) where")
    print("ClassCentroids only sums (O(B D)): compute-bound against bandwidth-bound.\n")
    print("| accumulator | time (s) | vs ClassCentroids |")
    print("|---|---:|---:|")
    for name, ts in times.items():
        print(f"| {name}.update | {sum(ts):.2f} | {ratios[name]:.2f}x |")
    print(
        f"\nClassScatter.compute(): {t_compute:.2f} s (NC1 {geometry.nc1:.3g}, "
        f"R^2 {geometry.class_separation:.3g}); state D x D + K x D float64 = {state_mb:.0f} MiB "
        f"(per-class covariances would be {c * d * d * 8 / 2**30:.0f} GiB). "
        f"Target <= 2x: {'yes' if ratio <= 2.0 else 'NO'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 10x smaller sizes")
    parser.add_argument("--alternatives", action="store_true", help="also time other kernels")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--geometry", action="store_true", help="only the cluster geometry")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.geometry:
        bench_scatter(20_000 if args.quick else 200_000, 2048, 1000, 1024, pool=16)
        return
    print(f"# bench_geometry ({'quick' if args.quick else 'full'})")
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}"
    )
    n = 128_000 if args.quick else 1_281_167
    bench_centroids(n, 2048, 1000, 256, pool=32, alternatives=args.alternatives)
    bench_diffusion(1000, 2048)
    bench_entropy(5_000 if args.quick else 50_000, 1000, (1.0, 2.0, 3.0, 64.0))
    bench_scatter(20_000 if args.quick else 200_000, 2048, 1000, 1024, pool=16)


if __name__ == "__main__":
    main()
