"""``lsdiffusion demo``: the sub-command's arguments, its checks and its messages."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lsdiffusion.demo.config import MAX_TEMPERATURE, MIN_TEMPERATURE, DemoConfig, check_device
from lsdiffusion.demo.output import (
    DemoInterrupted,
    StopSignals,
    missing_folders,
    prepare_out,
    remove_empty,
    save_demo,
)
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
    """Run ``lsdiffusion demo``; returns the exit status.

    0: done; 1: writing the outputs failed; 2: a bad argument (before any
    training); 128 + the signal number when SIGINT (130), SIGTERM (143) or
    SIGHUP (129) stopped it. A stop is one line on stderr, at every moment:
    the workers are ended first, no file is left half-written, and an output
    folder this run created stays only if it holds something. After the last
    line a signal is ignored: the run is complete.
    """
    as_program = bool(getattr(args, "as_program", False))  # set by lsdiffusion.cli.main
    stop = StopSignals()
    stop.install()
    state = _RunState(created=missing_folders(args.out))
    try:
        try:
            with stop.deferred():  # the checks import torch: a KeyboardInterrupt there can abort
                config = _config_from_args(args)
                check_device(config.device, flag="--device")
                out = prepare_out(args.out, flag="--out")
        except ValueError as exc:
            print(f"lsdiffusion demo: error: {exc}", file=sys.stderr)
            remove_empty(state.created)
            return 2
        code = _run(config, args, out, state)
        # a signal from here on finds the run complete: ignored (to the exit, as a program)
        stop.finish(until_exit=as_program)
        return code
    except KeyboardInterrupt as exc:  # DemoInterrupted included (a KeyboardInterrupt)
        return _interrupted(exc, state)
    finally:
        # as the process's own command, keep them to the exit (a Ctrl-C while Python shuts
        # down would print a traceback or end it with -SIGINT); called from Python, restore
        if not as_program:
            stop.restore()


@dataclass
class _RunState:
    """How far a run got, for the message of an interrupt."""

    created: list[Path]  # the folders the run creates, deepest first
    out: Path | None = None
    results_before: tuple[int, int] | None = None  # (device, inode) of results.json before saving


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _run(config: DemoConfig, args: argparse.Namespace, out: Path, state: _RunState) -> int:
    """Train, print the tables, write the files (the checks are done)."""
    result = run_demo(config, progress=not args.no_progress, workers=args.workers)
    print(result.tables())
    print()
    state.out, state.results_before = out, _identity(out / "results.json")
    try:
        written = save_demo(result, out)
    except (OSError, ValueError) as exc:
        print(f"lsdiffusion demo: error: writing {out} failed: {exc}", file=sys.stderr)
        remove_empty(state.created)
        return 1
    print("wrote " + ", ".join(str(path) for path in written))
    if result.figure is None:
        print(
            "figures skipped: matplotlib is not installed; install the [plot] extra "
            '(pip install "lsdiffusion[plot]", or ".[plot]" from a clone)'
        )
    print(f"total time {result.seconds:.1f} s on {config.device}")
    return 0


def _interrupted(exc: KeyboardInterrupt, state: _RunState) -> int:
    """One line on stderr, the folder cleaned up; returns 128 + the signal number."""
    signum = exc.signum if isinstance(exc, DemoInterrupted) else int(signal.SIGINT)
    by = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
    results = state.out / "results.json" if state.out is not None else None
    if results is not None and _identity(results) not in (None, state.results_before):
        done = f"{state.out} holds this run's complete outputs"  # stopped after the commit
    else:
        done = "nothing was written"
        remove_empty(state.created)
    with contextlib.suppress(OSError):  # the tables first, when both go to one terminal
        sys.stdout.flush()
    print(f"lsdiffusion demo: interrupted{by}; {done}", file=sys.stderr, flush=True)
    return 128 + signum
