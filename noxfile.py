"""Nox sessions: tests, lint, typecheck, docs, demo.

Torch is installed once for all sessions, not once per session: the pinned
``torch==2.13.0`` (override the spec with ``LSDIFFUSION_TORCH_SPEC``) and its own
dependencies go into ``.nox/_torch/py3XX`` the first time a session needs them, and a
``.pth`` file puts that folder on the path of each session that needs torch; everything
else each session installs itself. Which build the pin resolves to is pip's choice: on
Linux, PyPI's torch wheel is the CUDA build (several GB); set
``LSDIFFUSION_TORCH_INDEX=https://download.pytorch.org/whl/cpu`` for the CPU build (as
the README's first command does). Delete ``.nox/_torch`` to change the build. The test
extra's triton (about 1 GB, for the interpreter tests of the kernels) is shared the same
way.

The docs session installs no torch and not the package: mkdocstrings reads the sources
statically (griffe), so only the ``docs`` extra's requirements, and pytest for the
browser check (``tests/test_docs_browser.py``, which needs Chromium) are installed.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox
import tomllib

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
TORCH = os.environ.get("LSDIFFUSION_TORCH_SPEC", "torch==2.13.0")
TORCH_INDEX = os.environ.get("LSDIFFUSION_TORCH_INDEX")
ROOT = Path(__file__).resolve().parent
SHARED_TORCH = ROOT / ".nox" / "_torch"


def _share_torch(session: nox.Session) -> None:
    """Put the one shared torch on the session's path (installing it the first time)."""
    version = session.run(
        "python", "-c", "import sys; print('%d%d' % sys.version_info[:2])", silent=True
    )
    site = SHARED_TORCH / f"py{str(version).strip()}"
    if not (site / "torch").is_dir():
        index = ["--index-url", TORCH_INDEX] if TORCH_INDEX else []
        session.install("--target", str(site), TORCH, *_triton(), *index)
    purelib = session.run(
        "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", silent=True
    )
    pth = Path(str(purelib).strip()) / "_lsdiffusion_shared_torch.pth"
    pth.write_text(f"{site}\n", encoding="utf-8")


def _triton() -> list[str]:
    """The test extra's triton requirement (1 GB, the other big one): shared with torch."""
    return [r for r in _extra("test") if r.startswith("triton")]


def _install(session: nox.Session, extras: str) -> None:
    _share_torch(session)
    session.install("-e", f".[{extras}]")


def _extra(name: str) -> list[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["project"]["optional-dependencies"][name])


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the test suite (doctests included)."""
    _install(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Mypy strict on src/."""
    _install(session, "test")
    session.install("mypy>=1.8")
    session.run("mypy")


@nox.session(python=PYTHON)
def docs(session: nox.Session) -> None:
    """Build the site in strict mode, then read it in headless Chromium (no torch needed)."""
    session.install(*_extra("docs"), "pytest>=7.4")
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )
    session.run(
        "pytest",
        "tests/test_docs_browser.py",
        "--noconftest",  # tests/conftest.py imports torch
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the end-to-end demo (pass options after --)."""
    _install(session, "plot")
    session.run("lsdiffusion", "demo", *session.posargs)
