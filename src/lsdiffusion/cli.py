"""The ``lsdiffusion`` command line.

Each sub-command lives next to the code it drives and registers itself through
an ``add_parser(subparsers)`` function; this module only wires them together,
so ``lsdiffusion --help`` stays fast: the package imports its modules lazily,
and torch is imported inside the commands, never to build the parser.

Errors in the arguments are one line, ``lsdiffusion demo: error: ...``, with
exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["build_parser", "main"]

# Modules that expose ``add_parser(subparsers) -> None``; each parser sets a
# ``func(args) -> int`` default that runs the command.
_COMMAND_MODULES: tuple[str, ...] = (
    "lsdiffusion.demo",
    "lsdiffusion.semantics.cli",
    "lsdiffusion.analyze",
)


class _Parser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (its sub-parsers inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every sub-command registered."""
    from lsdiffusion import __version__

    parser = _Parser(
        prog="lsdiffusion",
        description="Label smoothing x knowledge distillation: losses, measurements, class sets.",
    )
    parser.add_argument("--version", action="version", version=f"lsdiffusion {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    try:  # Ctrl-C while the commands' modules import: one line and 130, no traceback
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("lsdiffusion: interrupted", file=sys.stderr)
        return 130
    args.as_program = argv is None  # the process's own command line: it exits after this
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
