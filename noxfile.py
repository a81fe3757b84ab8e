"""Nox sessions: tests, lint, typecheck, docs, demo.

Every session that needs torch installs the CPU build ``torch==2.13.0`` first
(override with ``LSDIFFUSION_TORCH_SPEC``) so that the package's ``torch>=2.1``
requirement is already satisfied and pip never pulls a multi-GB CUDA build.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
TORCH = os.environ.get("LSDIFFUSION_TORCH_SPEC", "torch==2.13.0")


def _install(session: nox.Session, extras: str) -> None:
    session.install(TORCH)
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
