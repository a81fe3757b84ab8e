"""The package surface: lazy top-level imports, a fast command line without torch, metadata."""

from __future__ import annotations

import ast
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import lsdiffusion

INIT = Path(lsdiffusion.__file__)


def _python(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_import_and_help_load_no_torch() -> None:
    code = (
        "import sys, contextlib, io\n"
        "import lsdiffusion\n"
        "from lsdiffusion.cli import main\n"
        "for argv in (['--help'], ['demo', '--help'], ['classes', '--help'], ['--version']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit as exc:\n"
        "            assert exc.code == 0, (argv, exc.code)\n"
        "print(sorted(m for m in ('torch', 'matplotlib', 'nltk', 'scipy') if m in sys.modules))"
    )
    assert _python(code) == "[]"


def test_semantics_and_its_checks_load_no_torch() -> None:
    # the semantics modules share lsdiffusion._validation with the losses; its
    # scalar checks (check_int here) must stay usable without torch
    code = (
        "import sys\n"
        "from lsdiffusion import _validation\n"
        "from lsdiffusion.semantics import feature_set_sizes\n"
        "assert feature_set_sizes(10, 0.1, 0.5) == (1, 5)\n"
        "try:\n"
        "    feature_set_sizes(2.0)\n"
        "except TypeError as exc:\n"
        "    assert 'num_classes must be an int >= 0, got float 2.0' in str(exc), exc\n"
        "assert _validation.check_int('n', 3, minimum=1) == 3\n"
        "print('torch' in sys.modules)"
    )
    assert _python(code) == "False"


def test_public_names_load_on_first_use() -> None:
    code = (
        "import sys, lsdiffusion\n"
        "before = 'torch' in sys.modules or 'numpy' in sys.modules\n"
        "from lsdiffusion import KDLoss\n"
        "print(before, 'torch' in sys.modules, KDLoss.__module__)"
    )
    assert _python(code) == "False True lsdiffusion.losses"


def _type_checking_imports() -> dict[str, str]:
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    return {
        alias.name: node.module
        for node in block.body
        if isinstance(node, ast.ImportFrom) and node.module != "lsdiffusion"
        for alias in node.names
    }


def test_exports_table_matches_the_typed_imports_and_all() -> None:
    exports = lsdiffusion._EXPORTS
    assert _type_checking_imports() == exports
    assert sorted(lsdiffusion.__all__) == sorted([*exports, "__version__"])
    assert len(set(lsdiffusion.__all__)) == len(lsdiffusion.__all__)
    for name, module in exports.items():
        value = getattr(lsdiffusion, name)
        assert value is getattr(importlib.import_module(module), name), name
    assert set(exports) <= set(dir(lsdiffusion))


def test_submodules_and_unknown_names() -> None:
    assert lsdiffusion.functional is importlib.import_module("lsdiffusion.functional")
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = lsdiffusion.no_such_name
    with pytest.raises(ImportError):
        exec("from lsdiffusion import no_such_name", {})


def test_version_matches_the_installed_metadata() -> None:
    assert importlib.metadata.version("lsdiffusion") == lsdiffusion.__version__


@pytest.mark.parametrize(
    "argv",
    [["demo", "--epochs", "x"], ["no-such-command"], ["classes"], ["demo", "--nope"]],
)
def test_argument_errors_are_one_line(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lsdiffusion", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("lsdiffusion")
    assert ": error: " in proc.stderr
    assert "--help" in proc.stderr
