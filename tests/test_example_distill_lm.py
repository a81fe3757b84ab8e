"""Smoke test of examples/distill_lm.py (fused linear KD on a tiny causal LM)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "distill_lm.py"


@pytest.fixture(scope="module")
def distill_lm():
    if not EXAMPLE.exists():
        pytest.skip("examples/ is not shipped in this distribution")
    spec = importlib.util.spec_from_file_location("distill_lm", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_distill_lm_runs_and_learns_something(distill_lm, capsys):
    argv = [
        "--vocab",
        "64",
        "--steps",
        "30",
        "--batch",
        "8",
        "--max-len",
        "12",
        "--chunk-size",
        "16",
    ]
    result = distill_lm.main(argv)
    out = capsys.readouterr().out
    assert "student step" in out
    assert "next-token accuracy" in out
    assert math.isfinite(result["teacher_acc"])
    assert math.isfinite(result["student_acc"])
    # 64 tokens, 6 successors: guessing uniformly gives 1/64; the models beat it
    assert result["student_acc"] > 100 / 64


def test_markov_text_pads_with_ignore_index(distill_lm):
    import torch

    text = distill_lm.MarkovText(32, 3, 9, seed=0)
    tokens, targets = text.batch(16, torch.Generator().manual_seed(0))
    assert tokens.shape == targets.shape
    lengths = (targets != distill_lm.PAD).sum(1)
    assert int(lengths.min()) >= 3
    assert int(lengths.max()) <= 9
    # each sentence is a prefix of real tokens followed by padding only
    for row, n in zip(targets, lengths, strict=True):
        assert (row[:n] != distill_lm.PAD).all()
        assert (row[n:] == distill_lm.PAD).all()


def test_distill_lm_quick_threads_and_bad_arguments(distill_lm, capsys):
    """Issue 20.6/20.8: --quick and --threads like the other examples; one-line errors."""
    import torch

    args = distill_lm.parse_args([])
    assert (args.vocab, args.steps, args.threads) == (2048, 150, 1)
    args = distill_lm.parse_args(["--quick"])
    assert (args.vocab, args.steps) == (256, 40)
    assert distill_lm.parse_args(["--quick", "--steps", "7"]).steps == 7
    threads = torch.get_num_threads()
    try:
        distill_lm.main(["--quick", "--steps", "2", "--threads", "1"])
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    capsys.readouterr()
    for argv, message in [
        (["--temperature", "0"], "--temperature must be finite and > 0"),
        (["--alpha", "2"], "--alpha must be in [0, 1]"),
        (["--min-len", "9", "--max-len", "4"], "--min-len (9) must not exceed"),
        (["--threads", "0"], "--threads must be >= 1"),
    ]:
        with pytest.raises(SystemExit) as info:
            distill_lm.parse_args(argv)
        assert info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert message in err[0]


def test_distill_lm_offline_from_a_cached_top_k_teacher(distill_lm, capsys, monkeypatch):
    """The teacher runs once; the student learns from its cached top-k log-probabilities.

    Through the fused loss, the cache in the teacher head's place.
    """
    teachers = []
    forward = distill_lm.FusedLinearKDLoss.forward

    def spy(self, student_hidden, student_weight, teacher_hidden, teacher_weight, *args, **kw):
        teachers.append((type(teacher_hidden).__name__, teacher_weight))
        return forward(
            self, student_hidden, student_weight, teacher_hidden, teacher_weight, *args, **kw
        )

    monkeypatch.setattr(distill_lm.FusedLinearKDLoss, "forward", spy)
    argv = ["--vocab", "64", "--steps", "30", "--batch", "8", "--max-len", "12", "--offline", "8"]
    result = distill_lm.main(argv)
    assert len(teachers) == 30
    assert set(teachers) == {("TopKTeacher", None)}
    out = capsys.readouterr().out
    assert "cached the teacher's top-8 of 64 for 30 batches" in out
    assert "KD loss (cached teacher)" in out
    assert result["student_acc"] > 100 / 64
    with pytest.raises(SystemExit) as info:
        distill_lm.parse_args(["--vocab", "64", "--offline", "65"])
    assert info.value.code == 2
    assert "--offline must be in [1, --vocab=64], got 65" in capsys.readouterr().err
