"""Benchmark the fused losses against the usual PyTorch formulations.

Measures forward + backward wall time (median of --repeat alternating rounds
after a warm-up; the ratio is the median of the per-round ratios)
and the extra peak memory beyond the inputs, for:

* label smoothing: ours vs ``F.cross_entropy(label_smoothing=0.1)``;
* KD: ours vs ``F.kl_div(F.log_softmax(s/T, 1), F.softmax(t/T, 1), "batchmean") * T * T``.

Extra peak memory is read on CUDA from the caching allocator's peak, on the CPU
(Linux) from the process's peak resident set (``VmHWM``, reset through
``/proc/self/clear_refs`` before the measured run). Each memory figure comes
from a fresh child process with a fixed glibc mmap threshold, so that freed
blocks go back to the system and the peak is not hidden by malloc's cache. The targets of DESIGN.md:
LS at <= 0.8x the torch time, KD at <= 0.6x the usual time, each with
<= 1.25 logits-tensors of extra peak memory.

Usage: ``python benchmarks/bench_losses.py [--device cpu|cuda] [--repeat 5] [--quick]``
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from lsdiffusion import kd_loss, label_smoothing_loss

ALPHA = 0.1
TEMPERATURE = 4.0
TARGETS = {"ls": 0.8, "kd": 0.6}
MEMORY_TARGET = 1.25


def _read_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_bytes(fn: Callable[[], None], device: torch.device) -> int:
    """Extra peak memory of one call of ``fn`` beyond what was allocated before."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    before = _read_status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    fn()
    return _read_status("VmHWM") - before


def paired_times(
    baseline: Callable[[], None], ours: Callable[[], None], device: torch.device, repeat: int
) -> tuple[float, float, float]:
    """Median times of both, and the median of the per-round ratios ours / baseline.

    The two run in alternating rounds so that both see the same machine state
    (a shared or virtualised CPU drifts by tens of percent within seconds). Each
    sample repeats the call until it lasts at least 20 ms, after a warm-up.
    """

    def sample(fn: Callable[[], None], calls: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / calls

    calls = {}
    for name, fn in (("baseline", baseline), ("ours", ours)):
        fn()  # warm-up
        once = sample(fn, 1)
        calls[name] = max(1, int(0.02 / max(once, 1e-9)))
    t_base, t_ours, ratios = [], [], []
    for i in range(repeat):
        order = [("baseline", baseline), ("ours", ours)]
        if i % 2:
            order.reverse()
        got = {name: sample(fn, calls[name]) for name, fn in order}
        t_base.append(got["baseline"])
        t_ours.append(got["ours"])
        ratios.append(got["ours"] / got["baseline"])
    return statistics.median(t_base), statistics.median(t_ours), statistics.median(ratios)


def cases(n: int, c: int, device: torch.device) -> dict[str, dict[str, Callable[[], None]]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    logits = torch.randn(n, c, generator=g).to(device).requires_grad_()
    teacher = torch.randn(n, c, generator=g).to(device)
    target = torch.randint(0, c, (n,), generator=g).to(device)
    t = TEMPERATURE

    def run(loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            logits.grad = None
            loss_fn().backward()
            logits.grad = None

        return step

    return {
        "ls": {
            "baseline": run(lambda: F.cross_entropy(logits, target, label_smoothing=ALPHA)),
            "ours": run(lambda: label_smoothing_loss(logits, target, ALPHA)),
        },
        "kd": {
            "baseline": run(
                lambda: (
                    F.kl_div(
                        F.log_softmax(logits / t, 1),
                        F.softmax(teacher / t, 1),
                        reduction="batchmean",
                    )
                    * t
                    * t
                )
            ),
            "ours": run(lambda: kd_loss(logits, teacher, t)),
        },
    }


def _memory_in_child(loss: str, impl: str, n: int, c: int, device: str) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [sys.executable, __file__, "--memory-child", loss, impl, str(n), str(c), device]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=11)
    parser.add_argument("--quick", action="store_true", help="small size only")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        loss, impl, n, c, dev = args.memory_child
        device = torch.device(dev)
        fn = cases(int(n), int(c), device)[loss][impl]
        fn()  # warm-up: first-call allocations (kernels, thread pools) are not the loss's
        print(peak_extra_bytes(fn, device))
        return

    device = torch.device(args.device)
    sizes = [(256, 1000)] if args.quick else [(256, 1000), (2048, 32000)]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    header = (
        f"{'loss':<4} {'size':>12} {'baseline s':>11} {'ours s':>9} {'time ratio':>10} "
        f"{'target':>7} {'base MiB':>9} {'ours MiB':>9} {'ours tensors':>12} {'ok':>4}"
    )
    print(header)
    print("-" * len(header))
    for n, c in sizes:
        tensor_bytes = n * c * 4
        for loss, impls in cases(n, c, device).items():
            t_base, t_ours, ratio = paired_times(
                impls["baseline"], impls["ours"], device, args.repeat
            )
            m_base = _memory_in_child(loss, "baseline", n, c, args.device)
            m_ours = _memory_in_child(loss, "ours", n, c, args.device)
            tensors = m_ours / tensor_bytes
            ok = ratio <= TARGETS[loss] and tensors <= MEMORY_TARGET
            print(
                f"{loss:<4} {f'{n}x{c}':>12} {t_base:>11.4f} {t_ours:>9.4f} {ratio:>9.2f}x "
                f"{TARGETS[loss]:>6.2f}x {m_base / 2**20:>9.1f} {m_ours / 2**20:>9.1f} "
                f"{tensors:>12.2f} {'yes' if ok else 'NO':>4}"
            )
    print(
        "ours tensors = extra peak memory of ours in logits-sized tensors "
        f"(target <= {MEMORY_TARGET}; the gradient itself is 1.0). Time the CPU on an "
        "otherwise idle machine: a busy core stalls PyTorch's thread pool."
    )


if __name__ == "__main__":
    main()
