"""scripts/convert_docstrings.py: rST docstrings become the Markdown the docs render."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "convert_docstrings.py"
if not SCRIPT.is_file():  # pragma: no cover - an installed copy of the tests
    pytest.skip("scripts/ is not in this checkout", allow_module_level=True)

spec = importlib.util.spec_from_file_location("convert_docstrings", SCRIPT)
assert spec is not None
assert spec.loader is not None
convert = importlib.util.module_from_spec(spec)
sys.modules["convert_docstrings"] = convert
spec.loader.exec_module(convert)

ANCHORS = {
    "lsdiffusion.functional.kd_loss",
    "lsdiffusion.losses.KDLoss",
    "lsdiffusion.losses.KDLoss.terms",
    "lsdiffusion.diffusion",
}
EXPORTS = {"kd_loss": "lsdiffusion.functional", "KDLoss": "lsdiffusion.losses"}

SOURCE = '''\
r"""Losses.

Like :func:`kd_loss` and :class:`~lsdiffusion.losses.KDLoss` (:meth:`KDLoss.terms`,
:mod:`lsdiffusion.diffusion`, :func:`torch.nn.functional.cross_entropy`,
:func:`~lsdiffusion._kernels.run`), with :math:`\\alpha \\in [0, 1]`:

.. math::

    \\ell = (1 - \\alpha)\\, \\mathrm{CE}

    \\beta = 1

Example:
    >>> 1 + 1
    2
"""


def f() -> None:
    """One line with :class:`KDLoss`."""
'''

EXPECTED = '''\
r"""Losses.

Like [`kd_loss`][lsdiffusion.kd_loss] and [`KDLoss`][lsdiffusion.KDLoss]
([`KDLoss.terms`][lsdiffusion.losses.KDLoss.terms],
[`lsdiffusion.diffusion`][lsdiffusion.diffusion], `torch.nn.functional.cross_entropy`,
`run`), with $\\alpha \\in [0, 1]$:

$$
\\ell = (1 - \\alpha)\\, \\mathrm{CE}
$$

$$
\\beta = 1
$$

Examples:
    >>> 1 + 1
    2
"""


def f() -> None:
    """One line with [`KDLoss`][lsdiffusion.KDLoss]."""
'''


def _convert(source: str, limit: int = 88) -> tuple[str, object]:
    report = convert.Report()
    resolver = convert.Resolver(ANCHORS, EXPORTS)
    path = ROOT / "src" / "lsdiffusion" / "functional.py"
    out = convert.convert_source(source, path, "lsdiffusion.functional", resolver, report, limit)
    return out, report


def test_roles_math_and_examples_become_markdown() -> None:
    out, report = _convert(SOURCE)
    assert out == EXPECTED
    assert not report.problems
    assert any("cross_entropy" in e for e in report.external)


def test_conversion_is_idempotent_and_keeps_lines_short() -> None:
    once, _ = _convert(SOURCE)
    twice, _ = _convert(once)
    assert twice == once
    assert max(len(line) for line in once.splitlines()) <= 88


def test_a_long_summary_keeps_one_line_and_drops_the_link() -> None:
    summary = "A summary naming :class:`KDLoss` that is rather long, yes."
    source = f'def g() -> None:\n    """{summary}"""\n'
    out, report = _convert(source, limit=72)
    assert out.splitlines()[1] == '    """A summary naming `KDLoss` that is rather long, yes."""'
    assert report.unlinked


def test_unknown_directives_are_reported() -> None:
    source = '"""Doc.\n\n.. deprecated:: 0.2\n    Gone.\n"""\n'
    _, report = _convert(source)
    assert any("deprecated" in p for p in report.problems)


def test_doctest_outside_an_examples_section_is_reported() -> None:
    source = '"""Doc.\n\n>>> 1\n1\n"""\n'
    _, report = _convert(textwrap.dedent(source))
    assert any(">>>" in p for p in report.problems)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="needs the docs extra")
def test_the_package_docstrings_are_converted() -> None:
    """Nothing left to convert in src/ (after merges: python scripts/convert_docstrings.py)."""
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_member_links_point_at_their_anchor_and_dead_links_are_reported() -> None:
    source = (
        '"""See [`terms`][lsdiffusion.KDLoss.terms], [`kd_loss`][lsdiffusion.kd_loss],\n'
        "[`run`][lsdiffusion._kernels.run] and [`x`][lsdiffusion.no_such_name].\n"
        '"""\n'
    )
    out, report = _convert(source)
    assert "[`terms`][lsdiffusion.losses.KDLoss.terms]" in out
    assert "[`kd_loss`][lsdiffusion.kd_loss]" in out  # a top-level alias resolves as it is
    assert "`run`" in out
    assert "[lsdiffusion._kernels.run]" not in out  # private: no API page, plain code
    assert any("lsdiffusion.no_such_name" in p for p in report.problems)
