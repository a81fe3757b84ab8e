"""The top-level command line wiring."""

from __future__ import annotations

import pytest

from lsdiffusion import __version__
from lsdiffusion.cli import build_parser, main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out
    assert "classes" in out


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


def test_parser_has_func_defaults():
    args = build_parser().parse_args(["classes", "207"])
    assert callable(args.func)
