"""``lsdiffusion demo``: the sub-command's arguments, its checks and its messages."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from lsdiffusion.demo.config import MAX_TEMPERATURE, MIN_TEMPERATURE, DemoConfig, check_device
from lsdiffusion.demo.output import prepare_out, save_demo
from lsdiffusion.demo.study import run_demo

__all__ = ["add_parser"]


def _float_list(values: Iterable[str]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _words(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def add_parser(subparsers: Any) -> None:
    """Register ``lsdiffusion demo``."""
    from lsdiffusion import demo

    defaults = DemoConfig()
    p = subparsers.add_parser(
        "demo",
        help="reproduce the LS x KD finding on a synthetic class hierarchy",
        description=(
            (demo.__doc__.splitlines()[0] if demo.__doc__ else "")
            + " Every argument is checked before training starts; the tables are printed "
            "before any file is written, and the files are written atomically."
        ),
    )
    p.add_argument(
        "--device",
        default=defaults.device,
        help=f"torch device: cpu, cuda, cuda:1, mps, ... (default: {defaults.device})",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=list(defaults.seeds),
        metavar="SEED",
        help=f"distinct seeds in [0, 2^32 - 1], one full study each "
        f"(default: {_words(defaults.seeds)})",
    )
    p.add_argument(
        "--temperatures",
        type=float,
        nargs="+",
        default=list(defaults.temperatures),
        metavar="T",
        help=f"KD temperatures in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}]; the first is T0 of "
        f"the diffusion index, the others must be higher (default: "
        f"{_words(defaults.temperatures)})",
    )
    p.add_argument(
        "--alphas",
        type=float,
        nargs="+",
        default=list(defaults.alphas),
        metavar="ALPHA",
        help=f"teachers' label smoothing in [0, 1): 0 and at least one > 0 "
        f"(default: {_words(defaults.alphas)})",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help=f"training epochs of every teacher and student (default: {defaults.epochs})",
    )
    p.add_argument(
        "--diffusion-t1",
        type=float,
        default=None,
        metavar="T1",
        help="T1 of the diffusion-index check (default: 3 if among the temperatures, "
        "else the second temperature)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="parallel worker processes on the CPU (default: one per core, at most one per "
        "study; 1 on an accelerator)",
    )
    p.add_argument(
        "--out",
        default="lsdiffusion-demo",
        metavar="DIR",
        help="output folder for results.json and the figures; created if missing "
        "(default: lsdiffusion-demo)",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress line on stderr (default: shown)",
    )
    p.set_defaults(func=_main)


def _config_from_args(args: argparse.Namespace) -> DemoConfig:
    """The [`DemoConfig`][lsdiffusion.demo.DemoConfig] of parsed ``lsdiffusion demo`` arguments.

    Raises:
        ValueError: an argument is out of range; the message names its flag.
    """
    temps = _float_list(args.temperatures)
    t1 = args.diffusion_t1
    if t1 is None:
        t1 = 3.0 if 3.0 in temps[1:] else (temps[1] if len(temps) > 1 else 3.0)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    try:
        return DemoConfig(
            seeds=tuple(args.seeds),
            temperatures=temps,
            alphas=_float_list(args.alphas),
            epochs=args.epochs,
            diffusion_t1=t1,
            device=args.device,
        )
    except ValueError as exc:  # name the flag: "temperatures must ..." -> "--temperatures must ..."
        message = str(exc)
        for name in ("temperatures", "seeds", "alphas", "epochs"):
            if message.startswith(name + " "):
                message = f"--{message}"
        message = message.replace("diffusion_t1=", "--diffusion-t1 ")
        raise ValueError(message) from None


def _main(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"lsdiffusion demo: error: {message}", file=sys.stderr)
        return 2

    try:  # every check before any training
        config = _config_from_args(args)
        check_device(config.device, flag="--device")
        out = prepare_out(args.out, flag="--out")
    except ValueError as exc:
        return fail(str(exc))
    try:
        result = run_demo(config, progress=not args.no_progress, workers=args.workers)
    except KeyboardInterrupt:
        print("lsdiffusion demo: interrupted; nothing was written", file=sys.stderr)
        return 130
    print(result.tables())
    print()
    try:
        written = save_demo(result, out)
    except (OSError, ValueError) as exc:
        print(f"lsdiffusion demo: error: writing {out} failed: {exc}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(str(path) for path in written))
    if result.figure is None:
        print(
            "figures skipped: matplotlib is not installed; install the [plot] extra "
            '(pip install "lsdiffusion[plot]", or ".[plot]" from a clone)'
        )
    print(f"total time {result.seconds:.1f} s on {config.device}")
    return 0
