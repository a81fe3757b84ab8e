"""KD from a cached top-k teacher against the dense teacher, side by side.

    python benchmarks/bench_topk.py            # N=2048, V=32000, k=64, float32
    python benchmarks/bench_topk.py --quick    # N=256, V=1000, k=16

Both rows run `kd_loss` forward and backward (T = 2): `dense` with the teacher's
(N, V) logits, `topk-renormalize` and `topk-bucket` with a `TopKTeacher` of k
classes per row. Time is the median over alternating rounds (ratio to dense
measured in the same run); extra peak memory (beyond the inputs, in student
logits tensors) is read in a child process from the peak RSS, as in
`bench_losses.py`. Target: top-k time <= dense, extra memory <= 1.05 tensors.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.dirname(__file__))
from bench_losses import paired_times, peak_extra_bytes

from lsdiffusion import TopKTeacher, kd_loss

TEMPERATURE = 2.0
IMPLS = ("dense", "topk-renormalize", "topk-bucket")


def cases(n: int, v: int, k: int) -> dict[str, Callable[[], None]]:
    """One fwd+bwd step per implementation, inputs built once."""
    torch.manual_seed(0)
    s = torch.randn(n, v, requires_grad=True)
    t = torch.randn(n, v)
    renorm = TopKTeacher.from_logits(t, k, kind="logprobs")
    bucket = TopKTeacher.from_logits(t, k, kind="logprobs", tail="bucket")
    if os.environ.get("BENCH_TOPK_NO_DENSE"):  # the memory child of a top-k row
        del t

    def step(teacher: object) -> Callable[[], None]:
        def run() -> None:
            s.grad = None
            kd_loss(s, teacher, TEMPERATURE).backward()  # type: ignore[arg-type]
            s.grad = None

        return run

    out = {"topk-renormalize": step(renorm), "topk-bucket": step(bucket)}
    if not os.environ.get("BENCH_TOPK_NO_DENSE"):
        out["dense"] = step(t)
    return out


def _memory_in_child(impl: str, n: int, v: int, k: int) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    if impl != "dense":
        env["BENCH_TOPK_NO_DENSE"] = "1"
    cmd = [sys.executable, __file__, "--memory-child", impl, str(n), str(v), str(k)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=256, V=1000, k=16")
    parser.add_argument("--repeat", type=int, default=9, help="alternating rounds")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        impl, n, v, k = args.memory_child
        fn = cases(int(n), int(v), int(k))[impl]
        fn()  # warm-up
        print(peak_extra_bytes(fn, torch.device("cpu")))
        return
    n, v, k = (256, 1000, 16) if args.quick else (2048, 32000, 64)
    print(f"cpu, torch {torch.__version__}, threads {torch.get_num_threads()}; N={n} V={v} k={k}")
    impls = cases(n, v, k)
    impls = {name: impls[name] for name in IMPLS}
    medians, ratio = paired_times(impls, torch.device("cpu"), args.repeat)
    tensor = n * v * 4
    print(f"{'teacher':<18}{'ms':>9}{'vs dense':>10}{'extra tensors':>15}  ok")
    for name in IMPLS:
        mem = _memory_in_child(name, n, v, k) / tensor
        r = ratio(name, "dense")
        ok = name == "dense" or (r <= 1.0 and mem <= 1.05)
        print(
            f"{name:<18}{medians[name] * 1e3:>9.2f}{r:>9.2f}x{mem:>15.2f}  {'yes' if ok else 'NO'}"
        )


if __name__ == "__main__":
    main()
