"""Benchmark the fused linear losses against the same losses on materialised logits.

One training step's forward + backward (gradients to the student's hidden
states, head weight and bias; the teacher gets none) at N tokens, hidden size
H and vocabulary V. ``--loss kd`` (the default) times:

* ``unfused``: ``kd_loss(h_s @ W_s.T + b_s, h_t @ W_t.T + b_t, T)`` (our loss on logits);
* ``one-liner``: the usual plain-PyTorch KD on the same logits;
* ``fused``: ``fused_linear_kd_loss`` (default chunking, ``backend="auto"``);
* ``fused-topk``: ``fused_linear_kd_loss`` against the teacher's cached top 64
  classes (``TopKTeacher``, bucket tail): no teacher head runs;
* ``liger``: Liger-Kernel's ``LigerFusedLinearJSDLoss`` with ``beta=0`` (its
  forward KL), times T² for a like-for-like value, where it imports and runs.

``--loss ls`` times label smoothing (alpha = 0.1) with ``unfused``
(``label_smoothing_loss`` of the logits), ``one-liner``
(``F.cross_entropy(..., label_smoothing=0.1)``), ``fused``
(``fused_linear_label_smoothing_loss``) and ``torch-chunked``
(``F.linear_cross_entropy`` with ``LinearCrossEntropyOptions()``, torch >= 2.13:
its chunked path refuses ``label_smoothing != 0`` and runs the materialised
reference, with a warning; ``torch-chunk-a0`` is its chunked path at alpha = 0,
plain cross-entropy, for its speed).

Times are medians over alternating rounds; ratios are medians of per-round
ratios against ``unfused``. Extra peak memory is read in a fresh child process
(peak resident set on the CPU, the caching allocator's peak on CUDA), minus the
weight and bias gradients every method must hold, in N×V logits tensors.

Targets (issue 15, N=4096, H=1024, V=32000 float32 on the CPU): fused <= 1.05x
the unfused time and <= 0.25 logits tensors of extra memory; KD also <= 0.95x
Liger's time, LS ahead of torch's chunked ``linear_cross_entropy``.
``--check`` exits 1 when a measured memory target is missed (the GPU check
uses it: a materialised-logits regression fails there).

Usage: ``python benchmarks/bench_fused_linear.py [--loss kd|ls] [--device cpu|cuda]
[--dtype float32] [--tokens 4096] [--hidden 1024] [--vocab 32000] [--repeat 5] [--check]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_losses import (  # the same memory, bandwidth and sync helpers
    _sync,
    copy_bandwidth,
    peak_extra_bytes,
)

from lsdiffusion import (
    TopKTeacher,
    fused_linear_kd_loss,
    fused_linear_label_smoothing_loss,
    kd_loss,
    label_smoothing_loss,
)

TEMPERATURE = 2.0
ALPHA = 0.1
TOP_K = 64
TIME_TARGET = 1.05
MEMORY_TARGET = 0.25
FUSED = ("fused", "fused-topk")

Step = Callable[[], None]


def _liger_loss() -> Callable[..., torch.Tensor] | None:
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss
    except Exception:  # not installed, or no triton
        return None
    # beta=0 is its forward KL(teacher || student); soft term only; compiled=False
    # keeps torch.compile (a CPU C++ build per shape) out of the comparison
    jsd = LigerFusedLinearJSDLoss(
        weight_hard_loss=0.0, weight_soft_loss=1.0, beta=0.0, temperature=TEMPERATURE,
        compiled=False,
    )  # fmt: skip

    def loss(h, w, b, ht, wt, bt) -> torch.Tensor:
        labels = torch.zeros(h.shape[0], dtype=torch.long, device=h.device)  # unused: no hard term
        # Liger scales the logits by 1/T with no T^2 factor: add it for a like-for-like value
        return jsd(h, w, ht, wt, labels, b, bt) * TEMPERATURE**2

    return loss


def steps(
    loss: str,
    n: int,
    h: int,
    v: int,
    device: torch.device,
    dtype: torch.dtype,
    compile_: bool = False,
) -> tuple[dict[str, Step], dict[str, torch.Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    hs = rand(n, h).requires_grad_()
    ws = rand(v, h, scale=h**-0.5).requires_grad_()
    bs = rand(v, scale=0.1).requires_grad_()
    temp = TEMPERATURE

    def run(loss_fn: Callable[[], torch.Tensor]) -> Step:
        def step() -> None:
            for p in (hs, ws, bs):
                p.grad = None
            loss_fn().backward()

        return step

    params = {"hs": hs, "ws": ws, "bs": bs}
    heads = [(hs, ws)] if loss == "ls" else [(hs, ws), (ht := rand(n, h), rand(v, h))]

    def matmuls() -> None:
        # the floor: the head's GEMMs of one step and nothing else (logits of each head,
        # then the student's two gradient GEMMs, with the logits standing in for G)
        with torch.no_grad():
            g = None
            for x, w in heads:
                out = x @ w.T
                g = out if g is None else g
            assert g is not None
            _ = g @ ws, g.T @ hs

    if loss == "ls":
        y = torch.randint(0, v, (n,), generator=g).to(device)
        impls: dict[str, Step] = {
            "unfused": run(lambda: label_smoothing_loss(hs @ ws.T + bs, y, ALPHA)),
            "one-liner": run(lambda: F.cross_entropy(hs @ ws.T + bs, y, label_smoothing=ALPHA)),
            "fused": run(lambda: fused_linear_label_smoothing_loss(hs, ws, y, ALPHA, bias=bs)),
            "matmuls": matmuls,
        }
        if compile_:
            compiled_ls = torch.compile(
                lambda: F.cross_entropy(hs @ ws.T + bs, y, label_smoothing=ALPHA)
            )
            impls["compiled"] = run(compiled_ls)
        if hasattr(F, "linear_cross_entropy"):
            options = torch.nn.LinearCrossEntropyOptions()
            # torch 2.13 chunks only label_smoothing == 0: with 0.1 it warns and runs its
            # reference (materialised) path; the alpha = 0 row shows its chunked speed
            impls["torch-chunked"] = run(
                lambda: F.linear_cross_entropy(
                    hs, ws, y, linear_bias=bs, label_smoothing=ALPHA, options=options
                )
            )
            impls["torch-chunk-a0"] = run(
                lambda: F.linear_cross_entropy(hs, ws, y, linear_bias=bs, options=options)
            )
        return impls, params

    wt = heads[1][1].mul_(h**-0.5)
    bt = rand(v, scale=0.1)
    with torch.no_grad():
        cache = TopKTeacher.from_logits(ht @ wt.T + bt, TOP_K, kind="logprobs", tail="bucket")

    def one_liner() -> torch.Tensor:
        s = hs @ ws.T + bs
        t = ht @ wt.T + bt
        kl = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean")
        return kl * temp * temp

    impls = {
        "unfused": run(lambda: kd_loss(hs @ ws.T + bs, ht @ wt.T + bt, temp)),
        "one-liner": run(one_liner),
        "fused": run(
            lambda: fused_linear_kd_loss(hs, ws, ht, wt, temp, student_bias=bs, teacher_bias=bt)
        ),
        "fused-topk": run(lambda: fused_linear_kd_loss(hs, ws, cache, None, temp, student_bias=bs)),
    }
    impls["matmuls"] = matmuls
    if compile_:
        impls["compiled"] = run(torch.compile(one_liner))
    liger = _liger_loss()
    if liger is not None:
        impls["liger"] = run(lambda: liger(hs, ws, bs, ht, wt, bt))
    return impls, params


def _memory_in_child(impl: str, args: argparse.Namespace) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        impl,
        "--loss",
        args.loss,
        "--device",
        args.device,
        "--dtype",
        args.dtype,
        "--tokens",
        str(args.tokens),
        "--hidden",
        str(args.hidden),
        "--vocab",
        str(args.vocab),
        *(["--compile"] if args.compile else []),
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loss", default="kd", choices=["kd", "ls"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--check", action="store_true", help="exit 1 if a memory target fails")
    parser.add_argument(
        "--compile", action="store_true", help="add torch.compile of the one-liner (slow on CPU)"
    )
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    # torch's "options ignored" warning for label_smoothing != 0 (said in the docstring)
    warnings.filterwarnings("ignore", message="linear_cross_entropy: ``options`` ignored")
    if args.memory_child:
        impls, params = steps(
            args.loss, args.tokens, args.hidden, args.vocab, device, dtype, args.compile
        )
        fn = impls[args.memory_child]
        fn()  # warm-up
        for p in params.values():
            p.grad = None
        extra = peak_extra_bytes(fn, device)
        head = params["ws"].numel() + params["bs"].numel()  # their gradients: not "extra"
        print(extra - head * params["ws"].element_size())
        return

    impls, params = steps(
        args.loss, args.tokens, args.hidden, args.vocab, device, dtype, args.compile
    )
    hs, ws = params["hs"], params["ws"]
    heads = [(hs, ws)] if args.loss == "ls" else [(hs, ws), (hs, ws)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    logits_bytes = args.tokens * args.vocab * torch.empty((), dtype=dtype).element_size()
    print(
        f"loss: {args.loss}, device: {name}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, N={args.tokens} H={args.hidden} V={args.vocab} "
        f"{args.dtype}, one logits tensor = {logits_bytes / 2**20:.0f} MiB"
    )
    if args.loss == "kd" and "liger" not in impls:
        print("liger: not measured (liger-kernel not importable here)")
    if args.loss == "ls" and "torch-chunked" not in impls:
        print("torch-chunked: not measured (F.linear_cross_entropy needs torch >= 2.13)")
    for fn in impls.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {key: [] for key in impls}
    order = list(impls)
    for i in range(args.repeat):
        for key in order if i % 2 == 0 else reversed(order):
            _sync(device)
            start = time.perf_counter()
            impls[key]()
            _sync(device)
            times[key].append(time.perf_counter() - start)

    def ratio(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(times[a], times[b], strict=True))

    rival = "liger" if args.loss == "kd" else "torch-chunked"
    header = (
        f"{'method':<13} {'time s':>9} {'vs unfused':>11} {f'vs {rival}':>15} "
        f"{'vs floor':>9} {'extra MiB':>10} {'logits tensors':>15} {'memory ok':>10}"
    )
    print(header)
    print("-" * len(header))
    failed = []
    for key in impls:
        if key == "matmuls":
            continue
        extra = _memory_in_child(key, args)
        tensors = extra / logits_bytes
        vs_rival = f"{ratio(key, rival):>14.2f}x" if rival in impls else f"{'-':>15}"
        ok = ""
        if key in FUSED:
            ok = "yes" if tensors <= MEMORY_TARGET else "NO"
            if ok == "NO":
                failed.append(f"{key}: {tensors:.3f} logits tensors > {MEMORY_TARGET}")
        print(
            f"{key:<13} {statistics.median(times[key]):>9.3f} {ratio(key, 'unfused'):>10.2f}x "
            f"{vs_rival} {ratio(key, 'matmuls'):>8.2f}x {extra / 2**20:>10.1f} "
            f"{tensors:>15.3f} {ok:>10}",
            flush=True,
        )
    gemms = len(heads) + 2
    item = torch.empty((), dtype=dtype).element_size()
    touched = sum(x.numel() + w.numel() for x, w in heads) + hs.numel() + ws.numel()
    hbm = touched * item / copy_bandwidth(device)
    print(
        f"matmul floor (the step's {gemms} head GEMMs alone, no loss): "
        f"{statistics.median(times['matmuls']):.3f} s = 1.00x in 'vs floor'; HBM floor "
        f"(read the heads' inputs, write the gradients, at the measured copy bandwidth): "
        f"{hbm * 1e3:.2f} ms"
    )
    print(
        "extra = peak memory of one step beyond the inputs and the head's weight/bias "
        f"gradients. Targets for fused: <= {TIME_TARGET}x the unfused time, <= "
        f"{MEMORY_TARGET} logits tensors; fused-topk caches the teacher's top {TOP_K}."
    )
    if args.check and failed:
        print("memory target missed: " + "; ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
