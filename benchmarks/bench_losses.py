"""Benchmark the losses against PyTorch and against ``torch.compile`` of the plain formulas.

Forward + backward wall time, as medians over alternating rounds (every
implementation runs once per round, in an order that alternates, so all see
the same machine state); ratios are medians of the per-round ratios. Each
sample repeats the call until it lasts at least 20 ms, after a warm-up.

Implementations, per loss:

* ``torch``: ``F.cross_entropy(label_smoothing=0.1)`` for LS; the usual KD one-liner
  ``F.kl_div(F.log_softmax(s/T, 1), F.softmax(t/T, 1), "batchmean") * T * T``;
* ``ours``: ``label_smoothing_loss`` / ``kd_loss``;
* ``compile``: ``torch.compile`` of the same plain formulas (compile time is
  excluded from the rounds and printed separately).

Extra peak memory (beyond the inputs, in logits-sized tensors) is read in a
fresh child process: on CUDA from the caching allocator's peak, on the CPU
(Linux) from the peak resident set (``VmHWM`` after ``/proc/self/clear_refs``),
with a fixed glibc mmap threshold so that freed blocks go back to the system.

``--contention`` starts one busy process (a pure-Python spin loop) for the
duration of the timing, the situation of a training loop whose DataLoader
workers or a second job hold a core, and reports ours against torch there.

Targets (issue 8): at 2048x32000 LS <= 0.5x torch and KD <= 0.25x
the one-liner with 1.0 tensor of extra memory; LS <= 1.0x and KD <= 0.75x
``torch.compile`` at 2048x32000 and (8, 512, 32000); at 256x1000 LS <= 1.0x and
KD <= 0.6x torch over >= 30 rounds; with contention, ours <= torch.

``--device cuda`` prints the GPU table instead (issue 9): for each size and
dtype, ours with the eager engine and with the Triton kernels, PyTorch,
``torch.compile`` and, where ``liger_kernel`` imports, Liger's
``LigerCrossEntropyLoss`` / ``LigerKLDIVLoss``; time, extra peak memory from
``torch.cuda.max_memory_allocated`` (in logits tensors) and the ratio to the
HBM floor: the bytes the loss must touch (read the logits, and the teacher's
for KD, write the gradient) over the bandwidth of a large device copy measured
in the same run. ``--gpu-table --device cpu`` runs the same code on CPU
tensors (Triton through its interpreter, tiny sizes): a dry run.

Usage: ``python benchmarks/bench_losses.py [--device cpu|cuda] [--repeat N]
[--quick] [--contention] [--no-compile] [--gpu-table] [--sizes 256x1000,...]
[--dtypes bfloat16,float32]``
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
# (loss, size label) -> (target vs torch, target vs compile)
TARGETS = {"ls": (0.5, 1.0), "kd": (0.25, 0.75)}
SMALL_TARGETS = {"ls": 1.0, "kd": 0.6}
SMALL_ROUNDS = 31

Step = Callable[[], None]


def _read_status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_extra_bytes(fn: Step, device: torch.device) -> int:
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
    impls: dict[str, Step], device: torch.device, repeat: int
) -> tuple[dict[str, float], Callable[[str, str], float]]:
    """Median time of each implementation, and ``ratio(a, b)``: the median per-round a / b."""

    def sample(fn: Step, calls: int) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / calls

    calls = {}
    for name, fn in impls.items():
        fn()  # warm-up
        once = sample(fn, 1)
        calls[name] = max(1, int(0.02 / max(once, 1e-9)))
    times: dict[str, list[float]] = {name: [] for name in impls}
    order = list(impls)
    for i in range(repeat):
        for name in order if i % 2 == 0 else reversed(order):
            times[name].append(sample(impls[name], calls[name]))
    medians = {name: statistics.median(ts) for name, ts in times.items()}

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    return medians, ratio


def plain_ls(logits: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    # class dim last, flattened to (rows, V): how (B, L, V) token logits are usually fed
    v = logits.shape[dim]
    return F.cross_entropy(logits.reshape(-1, v), target.reshape(-1), label_smoothing=ALPHA)


def plain_kd(s: torch.Tensor, t: torch.Tensor, dim: int) -> torch.Tensor:
    temp = TEMPERATURE
    v = s.shape[dim]
    log_p = F.log_softmax(s.reshape(-1, v) / temp, 1)
    p_t = F.softmax(t.reshape(-1, v) / temp, 1)
    return F.kl_div(log_p, p_t, reduction="batchmean") * temp * temp


_compiled: dict[str, Callable[..., torch.Tensor]] = {}


def compiled(name: str) -> Callable[..., torch.Tensor]:
    if name not in _compiled:
        fn = plain_ls if name == "ls" else plain_kd
        _compiled[name] = torch.compile(fn, dynamic=False)
    return _compiled[name]


def cases(
    shape: tuple[int, ...], device: torch.device, with_compile: bool
) -> dict[str, dict[str, Step]]:
    """``{loss: {impl: step}}`` over logits of ``shape`` with the class dim last."""
    g = torch.Generator(device="cpu").manual_seed(0)
    dim = len(shape) - 1 if len(shape) > 2 else 1
    logits = torch.randn(*shape, generator=g).to(device).requires_grad_()
    teacher = torch.randn(*shape, generator=g).to(device)
    target = torch.randint(0, shape[dim], shape[:dim] + shape[dim + 1 :], generator=g).to(device)
    temp = TEMPERATURE

    def run(loss_fn: Callable[[], torch.Tensor]) -> Step:
        def step() -> None:
            logits.grad = None
            loss_fn().backward()
            logits.grad = None

        return step

    out: dict[str, dict[str, Step]] = {
        "ls": {
            "torch": run(lambda: plain_ls(logits, target, dim)),
            "ours": run(lambda: label_smoothing_loss(logits, target, ALPHA, dim=dim)),
        },
        "kd": {
            "torch": run(lambda: plain_kd(logits, teacher, dim)),
            "ours": run(lambda: kd_loss(logits, teacher, temp, dim=dim)),
        },
    }
    if with_compile:
        out["ls"]["compile"] = run(lambda: compiled("ls")(logits, target, dim))
        out["kd"]["compile"] = run(lambda: compiled("kd")(logits, teacher, dim))
    return out


def _memory_in_child(loss: str, impl: str, shape: tuple[int, ...], device: str) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    dims = ",".join(map(str, shape))
    cmd = [sys.executable, __file__, "--memory-child", loss, impl, dims, device]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def _label(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) if len(shape) == 2 else f"({','.join(map(str, shape))})"


def _busy_process() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


# ---------------------------------------------------------------------------
# the GPU table
# ---------------------------------------------------------------------------

GPU_SIZES = "256x1000,4096x32000,16384x128000"


def _liger() -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None:
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss, LigerKLDIVLoss
    except Exception:  # not installed, or no triton
        return None
    ce = LigerCrossEntropyLoss(label_smoothing=ALPHA)
    kl = LigerKLDIVLoss(reduction="batchmean")
    temp = TEMPERATURE

    def liger_ls(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ce(s, y)

    def liger_kd(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Liger's KL takes log-probabilities and probabilities, and has no T^2 factor
        return kl(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1)) * temp * temp

    return liger_ls, liger_kd


def copy_bandwidth(device: torch.device) -> float:
    """Bytes per second of a large device-to-device copy (read + write counted)."""
    n = (1 << 28) if device.type == "cuda" else (1 << 22)
    src = torch.empty(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n * 4 / best


def _gpu_time(fn: Step, device: torch.device, repeat: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _gpu_peak(fn: Step, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    gc.collect()
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return float(torch.cuda.max_memory_allocated(device) - before)


def _gpu_rows(
    n: int,
    c: int,
    dtype: torch.dtype,
    device: torch.device,
    args: argparse.Namespace,
    bandwidth: float,
    liger: tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]] | None,
) -> None:
    """The GPU table's rows for one size and dtype."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(n, c, generator=g).to(device, dtype).requires_grad_()
    t = torch.randn(n, c, generator=g).to(device, dtype)
    y = torch.randint(0, c, (n,), generator=g).to(device)
    tensor_bytes = n * c * x.element_size()
    temp = TEMPERATURE

    def run(loss_fn: Callable[[], torch.Tensor]) -> Step:
        def step() -> None:
            x.grad = None
            loss_fn().backward()
            x.grad = None

        return step

    ls_impls: dict[str, Step] = {
        "torch": run(lambda: F.cross_entropy(x, y, label_smoothing=ALPHA)),
        "eager": run(lambda: label_smoothing_loss(x, y, ALPHA, backend="eager")),
        "triton": run(lambda: label_smoothing_loss(x, y, ALPHA, backend="triton")),
    }
    kd_impls: dict[str, Step] = {
        "torch": run(lambda: plain_kd(x, t, 1)),
        "eager": run(lambda: kd_loss(x, t, temp, backend="eager")),
        "triton": run(lambda: kd_loss(x, t, temp, backend="triton")),
    }
    if not args.no_compile:
        ls_impls["compile"] = run(lambda: compiled("ls")(x, y, 1))
        kd_impls["compile"] = run(lambda: compiled("kd")(x, t, 1))
    if liger is not None:
        liger_ls, liger_kd = liger
        ls_impls["liger"] = run(lambda: liger_ls(x, y))
        kd_impls["liger"] = run(lambda: liger_kd(x, t))
    label = f"{n}x{c}"
    dname = str(dtype).removeprefix("torch.")
    for loss, impls, touched in (("ls", ls_impls, 2), ("kd", kd_impls, 3)):
        floor = touched * tensor_bytes / bandwidth
        base = None
        for impl, fn in impls.items():
            try:
                elapsed = _gpu_time(fn, device, args.repeat)
                peak = _gpu_peak(fn, device)
            except torch.OutOfMemoryError:
                print(f"{loss:<4} {label:>14} {dname:>9} {impl:>8}  OOM", flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            except Exception as exc:  # a baseline that cannot run here: say so, go on
                message = f"{type(exc).__name__}: {exc}".splitlines()[0][:80]
                print(f"{loss:<4} {label:>14} {dname:>9} {impl:>8}  failed ({message})")
                continue
            if impl == "torch":
                base = elapsed
            vs_torch = f"{elapsed / base:.2f}x" if base else "-"
            extra = "-" if peak is None else f"{peak / tensor_bytes:.2f}"
            over = f"{(elapsed - base) * 1e6:+.0f}us" if base else "-"
            print(
                f"{loss:<4} {label:>14} {dname:>9} {impl:>8} {elapsed * 1e3:>9.3f} "
                f"{elapsed / floor:>8.2f}x {vs_torch:>9} {over:>9} {extra:>14}",
                flush=True,
            )


def gpu_table(args: argparse.Namespace) -> None:
    """Time, memory and HBM-floor ratio of every implementation on one device."""
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    bandwidth = copy_bandwidth(device)
    liger = _liger()
    print(
        f"device: {name}, torch {torch.__version__}, copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s (read + write), liger: "
        f"{'yes' if liger else 'not importable'}"
    )
    header = (
        f"{'loss':<4} {'size':>14} {'dtype':>9} {'impl':>8} {'time ms':>9} "
        f"{'vs floor':>9} {'vs torch':>9} {'- torch':>9} {'extra tensors':>14}"
    )
    print(header)
    print("-" * len(header))
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    for n, c in sizes:
        for dtype in dtypes:
            _gpu_rows(n, c, dtype, device, args, bandwidth, liger)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(
        "vs floor = time / (bytes the loss must touch / copy bandwidth): LS reads the logits "
        "and writes the gradient, KD also reads the teacher. extra tensors = peak memory "
        "beyond the inputs in logits tensors (the gradient is 1.0). Targets at "
        "16384x128000 bf16: triton <= 1.3x the floor, <= 0.9x liger, ahead of compile, "
        "<= 1.05 tensors; at 256x1000 <= 20 us over torch."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=7, help="rounds at the large sizes")
    parser.add_argument("--quick", action="store_true", help="small size only")
    parser.add_argument(
        "--contention", action="store_true", help="time with one busy process on the machine"
    )
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory columns")
    parser.add_argument(
        "--gpu-table", action="store_true", help="the GPU table (default with --device cuda)"
    )
    parser.add_argument("--sizes", default=GPU_SIZES, help="GPU table: NxC sizes")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="GPU table: dtypes")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.gpu_table or (args.device.startswith("cuda") and not args.memory_child):
        gpu_table(args)
        return
    if args.memory_child:
        loss, impl, dims, dev = args.memory_child
        device = torch.device(dev)
        shape = tuple(int(v) for v in dims.split(","))
        fn = cases(shape, device, with_compile=False)[loss][impl]
        fn()  # warm-up: first-call allocations (kernels, thread pools) are not the loss's
        print(peak_extra_bytes(fn, device))
        return

    device = torch.device(args.device)
    with_compile = not args.no_compile
    shapes: list[tuple[int, ...]] = [(256, 1000)]
    if not args.quick:
        shapes += [(2048, 32000), (8, 512, 32000)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"contention: {'one busy process' if args.contention else 'none (idle machine)'}"
    )
    cols = ["torch s", "ours s", "ours/torch", "target"]
    if with_compile:
        cols += ["compile s", "ours/compile", "target"]
    if not args.no_memory:
        cols += ["torch MiB", "ours MiB", "ours tensors"]
    header = f"{'loss':<4} {'size':>16} {'rounds':>6} " + " ".join(f"{c:>12}" for c in cols)
    header += f" {'ok':>4}"
    print(header)
    print("-" * len(header))
    compile_times: list[str] = []
    for shape in shapes:
        small = shape == (256, 1000)
        rounds = max(SMALL_ROUNDS, args.repeat) if small else args.repeat
        tensor_bytes = torch.Size(shape).numel() * 4
        for loss, impls in cases(shape, device, with_compile).items():
            if "compile" in impls:
                start = time.perf_counter()
                impls["compile"]()
                compile_times.append(f"{loss} {_label(shape)}: {time.perf_counter() - start:.1f} s")
            busy = _busy_process() if args.contention else None
            try:
                times, ratio = paired_times(impls, device, rounds)
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            if args.contention:
                target_torch = 1.0
            else:
                target_torch = SMALL_TARGETS[loss] if small else TARGETS[loss][0]
            ok = ratio("ours", "torch") <= target_torch
            row = [
                f"{times['torch']:.4f}",
                f"{times['ours']:.4f}",
                f"{ratio('ours', 'torch'):.2f}x",
                f"{target_torch:.2f}x",
            ]
            if with_compile:
                vs_compile = ratio("ours", "compile")
                target_compile = TARGETS[loss][1]
                checked = not small and not args.contention
                ok = ok and (vs_compile <= target_compile or not checked)
                row += [
                    f"{times['compile']:.4f}",
                    f"{vs_compile:.2f}x",
                    f"{target_compile:.2f}x" if checked else "-",
                ]
            if not args.no_memory:
                m_base = _memory_in_child(loss, "torch", shape, args.device)
                m_ours = _memory_in_child(loss, "ours", shape, args.device)
                row += [f"{m_base / 2**20:.1f}", f"{m_ours / 2**20:.1f}"]
                row += [f"{m_ours / tensor_bytes:.2f}"]
            print(
                f"{loss:<4} {_label(shape):>16} {rounds:>6} "
                + " ".join(f"{c:>12}" for c in row)
                + f" {'yes' if ok else 'NO':>4}",
                flush=True,
            )
    print(
        "ours/compile = median per-round ratio of ours to torch.compile of the same plain "
        "formula. ours tensors = extra peak memory of ours in logits-sized tensors (the "
        "gradient itself is 1.0)."
    )
    if compile_times:
        print("compile time (first call, excluded above): " + "; ".join(compile_times))


if __name__ == "__main__":
    main()
