"""Fixtures shared by the demo's tests: the tiny task, one tiny finished run, guards."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

import lsdiffusion.demo.cli as demo_cli
import lsdiffusion.demo.study as demo_study
from lsdiffusion.demo import DemoConfig, DemoResult, run_demo

# A task small enough to train in well under a second per study.
TINY: dict[str, Any] = {
    "superclasses": 3,
    "subclasses": 2,
    "input_dim": 8,
    "train_per_class": 10,
    "test_per_class": 10,
    "teacher_width": 16,
    "teacher_features": 8,
    "student_width": 8,
    "student_features": 4,
}
# The tiny task as a study: two seeds, one T1.
TINY_STUDY: dict[str, Any] = {
    **TINY,
    "epochs": 2,
    "seeds": (0, 1),
    "temperatures": (1.0, 3.0),
    "diffusion_t1": 3.0,
}


@pytest.fixture
def tiny_fields() -> dict[str, Any]:
    """The tiny task's fields (a fresh copy)."""
    return dict(TINY)


@pytest.fixture
def tiny_study() -> DemoConfig:
    """The tiny task with two seeds and temperatures (1, 3)."""
    return DemoConfig(**TINY_STUDY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[DemoResult, dict[str, Any], Path]:
    """One finished run of ``tiny_study`` (one worker): the result, its results.json, the folder."""
    out = tmp_path_factory.mktemp("demo")
    result = run_demo(DemoConfig(**TINY_STUDY), progress=False, workers=1, out=out)
    return result, json.loads((out / "results.json").read_text()), out


@pytest.fixture
def tiny_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command line with a tiny task (the defaults of the other fields stay)."""
    monkeypatch.setattr(demo_cli, "DemoConfig", functools.partial(DemoConfig, **TINY))


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any study starts: every check must come before training."""

    def trained(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the arguments were checked")

    monkeypatch.setattr(demo_cli, "run_demo", trained)
    monkeypatch.setattr(demo_study, "run_study", trained)
