"""Benchmark fused linear KD against KD on materialised logits.

One training step's forward + backward (gradients to the student's hidden
states, head weight and bias; the teacher gets none) at N tokens, hidden size
H and vocabulary V, for:

* ``unfused``: ``kd_loss(h_s @ W_s.T + b_s, h_t @ W_t.T + b_t, T)`` (our loss on logits);
* ``one-liner``: the usual plain-PyTorch KD on the same logits;
* ``fused``: ``fused_linear_kd_loss`` (chunks of at most 64 MiB of temporaries);
* ``liger``: Liger-Kernel's ``LigerFusedLinearJSDLoss`` with ``beta=0`` (its
  forward KL), times T² for a like-for-like value, where it imports and runs.

Times are medians over alternating rounds; ratios are medians of per-round
ratios against ``unfused``. Extra peak memory is read in a fresh child process
(peak resident set on the CPU, the caching allocator's peak on CUDA), minus the
weight and bias gradients every method must hold, in N×V logits tensors.

Targets (issue 12): fused <= 1.1x the unfused time, <= 0.25 logits tensors of
extra peak memory.

Usage: ``python benchmarks/bench_fused_linear.py [--device cpu|cuda] [--dtype float32]
[--tokens 4096] [--hidden 1024] [--vocab 32000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_losses import _sync, peak_extra_bytes  # the same memory and sync helpers

from lsdiffusion import fused_linear_kd_loss, kd_loss

TEMPERATURE = 2.0
TIME_TARGET = 1.1
MEMORY_TARGET = 0.25

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
    n: int, h: int, v: int, device: torch.device, dtype: torch.dtype
) -> tuple[dict[str, Step], dict[str, torch.Tensor]]:
    g = torch.Generator(device="cpu").manual_seed(0)

    def rand(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * scale).to(device, dtype)

    hs = rand(n, h).requires_grad_()
    ws = rand(v, h, scale=h**-0.5).requires_grad_()
    bs = rand(v, scale=0.1).requires_grad_()
    ht = rand(n, h)
    wt = rand(v, h, scale=h**-0.5)
    bt = rand(v, scale=0.1)
    temp = TEMPERATURE

    def run(loss_fn: Callable[[], torch.Tensor]) -> Step:
        def step() -> None:
            for p in (hs, ws, bs):
                p.grad = None
            loss_fn().backward()

        return step

    def one_liner() -> torch.Tensor:
        s = hs @ ws.T + bs
        t = ht @ wt.T + bt
        kl = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean")
        return kl * temp * temp

    impls: dict[str, Step] = {
        "unfused": run(lambda: kd_loss(hs @ ws.T + bs, ht @ wt.T + bt, temp)),
        "one-liner": run(one_liner),
        "fused": run(
            lambda: fused_linear_kd_loss(hs, ws, ht, wt, temp, student_bias=bs, teacher_bias=bt)
        ),
    }
    liger = _liger_loss()
    if liger is not None:
        impls["liger"] = run(lambda: liger(hs, ws, bs, ht, wt, bt))
    return impls, {"hs": hs, "ws": ws, "bs": bs}


def _memory_in_child(impl: str, args: argparse.Namespace) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="16384", MALLOC_TRIM_THRESHOLD_="0")
    cmd = [
        sys.executable,
        __file__,
        "--memory-child",
        impl,
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
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return int(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.memory_child:
        impls, params = steps(args.tokens, args.hidden, args.vocab, device, dtype)
        fn = impls[args.memory_child]
        fn()  # warm-up
        for p in params.values():
            p.grad = None
        extra = peak_extra_bytes(fn, device)
        head = params["ws"].numel() + params["bs"].numel()  # their gradients: not "extra"
        print(extra - head * params["ws"].element_size())
        return

    impls, _ = steps(args.tokens, args.hidden, args.vocab, device, dtype)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    logits_bytes = args.tokens * args.vocab * torch.empty((), dtype=dtype).element_size()
    print(
        f"device: {name}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"N={args.tokens} H={args.hidden} V={args.vocab} {args.dtype}, "
        f"one logits tensor = {logits_bytes / 2**20:.0f} MiB"
    )
    if "liger" not in impls:
        print("liger: not measured (liger-kernel not importable here)")
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
    header = (
        f"{'method':<10} {'time s':>9} {'vs unfused':>11} {'extra MiB':>10} "
        f"{'logits tensors':>15} {'ok':>4}"
    )
    print(header)
    print("-" * len(header))
    for key in impls:
        ratio = statistics.median(a / b for a, b in zip(times[key], times["unfused"], strict=True))
        extra = _memory_in_child(key, args)
        tensors = extra / logits_bytes
        ok = ""
        if key == "fused":
            ok = "yes" if ratio <= TIME_TARGET and tensors <= MEMORY_TARGET else "NO"
        print(
            f"{key:<10} {statistics.median(times[key]):>9.3f} {ratio:>10.2f}x "
            f"{extra / 2**20:>10.1f} {tensors:>15.3f} {ok:>4}",
            flush=True,
        )
    print(
        "extra = peak memory of one step beyond the inputs and the head's weight/bias "
        f"gradients. Targets for fused: <= {TIME_TARGET}x the unfused time, <= "
        f"{MEMORY_TARGET} logits tensors."
    )


if __name__ == "__main__":
    main()
