"""Nox sessions: tests, lint, typecheck, docs, demo.

Every session that needs torch installs the pinned ``torch==2.13.0`` first
(override the spec with ``LSDIFFUSION_TORCH_SPEC``), so the package's own
``torch>=2.1`` requirement is already met when the package is installed.
Which build the pin resolves to is pip's choice: a wheel in pip's cache or
``--find-links`` (as on the project's CI machines, where it is the CPU build)
is used as is; otherwise, on Linux, PyPI's ``torch`` wheel is the CUDA build,
several GB. For the CPU build from PyTorch's own index, set
``LSDIFFUSION_TORCH_INDEX=https://download.pytorch.org/whl/cpu``.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
TORCH = os.environ.get("LSDIFFUSION_TORCH_SPEC", "torch==2.13.0")
TORCH_INDEX = os.environ.get("LSDIFFUSION_TORCH_INDEX")


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH, *(["--index-url", TORCH_INDEX] if TORCH_INDEX else []))
    session.install("-e", f".[{extras}]")


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
    """Build the documentation site in strict mode."""
    _install(session, "docs,plot")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run the end-to-end demo (pass options after --)."""
    _install(session, "plot")
    session.run("lsdiffusion", "demo", *session.posargs)
