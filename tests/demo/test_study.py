"""The demo's task and studies: structure, determinism, outputs and the command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch

from lsdiffusion.demo import DemoConfig, make_hierarchical_task, run_demo


def test_task_has_the_planned_hierarchy(tiny_study):
    cfg = tiny_study
    task = make_hierarchical_task(cfg, seed=0)
    assert task.train_x.shape == (60, 8)
    assert task.test_y.bincount().tolist() == [10] * 6
    assert task.similar_sets()[0] == [1]
    assert task.dissimilar_sets()[0] == [2, 3, 4, 5]
    # siblings are closer than other superclasses, on average, by construction
    means = torch.stack([task.train_x[task.train_y == c].mean(0) for c in range(6)])
    d = torch.cdist(means, means)
    sib = torch.tensor([d[c, c ^ 1] for c in range(6)]).mean()
    other = torch.tensor([d[c, j] for c in range(6) for j in range(6) if j // 2 != c // 2]).mean()
    assert sib < other
    # the same seed draws the same data
    again = make_hierarchical_task(cfg, seed=0)
    assert torch.equal(task.train_x, again.train_x)


def test_run_is_deterministic_and_complete(tiny_run, tmp_path):
    first, a, first_out = tiny_run  # one worker
    second = run_demo(first.config, progress=False, workers=2, out=tmp_path / "b")
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("teacher_accuracy", "student_accuracy", "diffusion_index", "target_entropy"):
        assert a[key] == b[key], key
    assert first.checks() == second.checks()
    assert set(a["student_accuracy"]) == {"0/1", "0/3", "0.1/1", "0.1/3"}
    assert set(a["diffusion_index"]) == {"0/3", "0.1/3"}
    assert len(a["student_accuracy"]["0.1/3"]["values"]) == 2
    assert a["max_entropy"] == pytest.approx(math.log(6))
    for cell in a["target_entropy"].values():
        assert 0 <= cell["mean"] <= math.log(6) + 1e-9
    assert (first_out / "figure.png").stat().st_size > 0
    assert (first_out / "diffusion.png").stat().st_size > 0
    text = first.tables()
    assert "Table 2" in text
    assert "Table 3" in text
    assert "Appendix H" in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"temperatures": (1.0,)}, "temperatures must hold T0"),
        ({"temperatures": (1.0, 0.0)}, r"finite and in \[0.01, 1000\]"),
        ({"temperatures": (3.0, 1.0)}, r"after the first \(T0 = 3\) must be > T0"),
        ({"seeds": (-1,)}, r"seeds must be integers in \[0, 4294967295\]"),
        ({"seeds": (2**32,)}, r"seeds must be integers in \[0, 4294967295\]"),
        ({"seeds": (True,)}, r"seeds must be integers"),
        ({"seeds": (0, 0)}, "seeds must be distinct"),
        ({"alphas": (0.0, 0.1, 0.1)}, "alphas must be distinct"),
        ({"temperatures": (1.0, 1.0)}, "distinct"),
        ({"subclasses": 1}, "subclasses must be >= 2"),
        ({"seeds": ()}, "seeds must not be empty"),
        ({"alphas": (1.5,)}, "alphas must be in"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"alphas": (0.0,)}, "at least one alpha > 0"),
        ({"alphas": (0.1, 0.2)}, "must hold 0"),
        ({"temperatures": (1.0, 2.0)}, "diffusion_t1=3.0 must be one of"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DemoConfig(**kwargs)


def test_command_line(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "lsdiffusion", "demo", "--seeds", "0", "--epochs", "1"]
    cmd += ["--temperatures", "1", "3", "--out", str(out), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Table 2" in proc.stdout
    assert (out / "results.json").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "lsdiffusion", "demo", "--temperatures", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "temperatures must hold T0" in bad.stderr
