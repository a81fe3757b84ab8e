"""Smoke tests: every script in examples/ runs end to end on the CPU.

The image examples run on a tiny ImageFolder written by ``examples/make_data.py``
(4 classes named by ImageNet-1K wnids, 8 train + 4 val PNGs of 16x16 each) with the tiny CNN; the
token example runs a few steps. The scripts are imported by path and their
``main(argv)`` called in-process (much faster than a subprocess each).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
Image = pytest.importorskip("PIL.Image")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# golden retriever, Labrador retriever, container ship, submarine (sorted wnids = class order)
WNIDS = ("n02099601", "n02099712", "n03095699", "n04347754")
NAMES = ("golden retriever", "Labrador retriever", "container ship", "submarine")
SMALL = {"image_size": 16, "batch_size": 16, "workers": 0, "device": "cpu"}


@pytest.fixture(scope="module")
def examples() -> Iterator[dict[str, ModuleType]]:
    """The example scripts as modules (``examples/`` on sys.path for their ``import common``)."""
    saved = sys.modules.pop("common", None)
    threads = torch.get_num_threads()
    # Tiny models: one thread is fastest, and immune to a busy shared CPU (OpenMP waits).
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(EXAMPLES))
        modules = {}
        for name in ("make_data", "train_teacher", "distill", "analyze", "distill_tokens"):
            spec = importlib.util.spec_from_file_location(
                f"_example_{name}", EXAMPLES / f"{name}.py"
            )
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module  # dataclasses look their module up while defined
            spec.loader.exec_module(module)
            modules[name] = module
        yield modules
    torch.set_num_threads(threads)
    for module in modules.values():
        sys.modules.pop(module.__name__, None)
    sys.modules.pop("common", None)
    if saved is not None:
        sys.modules["common"] = saved


def cli(*flags: str, **options: object) -> list[str]:
    """``cli("--amp", data=path, students=[a, b])`` -> ``["--amp", "--data", path, ...]``."""
    argv = list(flags)
    for key, value in options.items():
        argv.append("--" + key.replace("_", "-"))
        argv += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
    return argv


def run(main: Callable[[list[str]], Any], argv: list[str]) -> tuple[Any, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = main(argv)
    return result, out.getvalue()


@pytest.fixture(scope="module")
def pipeline(
    examples: dict[str, ModuleType], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """train_teacher -> distill at T=1 and T=3 -> analyze, once for the module."""
    tmp = tmp_path_factory.mktemp("examples")
    data = tmp / "data"
    run(examples["make_data"].main, cli(out=data, train=8, val=4, size=16))
    teacher = tmp / "teacher.pt"
    results: dict[str, Any] = {"tmp": tmp, "data": data, "teacher": teacher}
    results["teacher_run"] = run(
        examples["train_teacher"].main,
        cli(data=data, alpha=0.1, epochs=3, arch="tiny", lr=0.05, out=teacher, **SMALL),
    )
    students = []
    for t in (1, 3):
        student = tmp / f"student_T{t}.pt"
        results[f"distill_T{t}"] = run(
            examples["distill"].main,
            cli(data=data, teacher=teacher, temperature=t, epochs=2, lr=0.05, out=student, **SMALL),
        )
        students.append(student)
    results["students"] = students
    results["analysis"] = tmp / "analysis"
    results["analyze"] = run(
        examples["analyze"].main,
        cli(
            data=data,
            teacher=teacher,
            students=students,
            temperatures=[1, 3],
            out=results["analysis"],
            **SMALL,
        ),
    )
    return results


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["name"] != "mean"]


def test_train_teacher_writes_checkpoint(pipeline: dict[str, Any]) -> None:
    result, stdout = pipeline["teacher_run"]
    assert pipeline["teacher"].stat().st_size > 0
    assert len(result["history"]) == 3
    assert stdout.count("val acc") == 3
    assert all(np.isfinite(h["loss"]) for h in result["history"])
    ckpt = torch.load(pipeline["teacher"], weights_only=True)
    assert (ckpt["arch"], ckpt["num_classes"], ckpt["classes"]) == ("tiny", 4, list(WNIDS))
    assert ckpt["meta"]["alpha"] == 0.1
    assert (ckpt["meta"]["epoch"], ckpt["meta"]["epochs"]) == (3, 3)
    assert ckpt["meta"]["val_acc"] == result["history"][-1]["val_acc"]
    assert [p.name for p in pipeline["teacher"].parent.glob(".*tmp*")] == []


def test_make_data_writes_a_wnid_image_folder(
    examples: dict[str, ModuleType], pipeline: dict[str, Any], tmp_path: Path
) -> None:
    data: Path = pipeline["data"]
    for split, count in (("train", 8), ("val", 4)):
        assert sorted(p.name for p in (data / split).iterdir()) == list(WNIDS)
        for wnid in WNIDS:
            files = sorted((data / split / wnid).glob("*.png"))
            assert len(files) == count
            with Image.open(files[0]) as image:
                assert image.size == (16, 16)
    # defaults: the documented walk-through's data
    result, stdout = run(examples["make_data"].main, cli(out=tmp_path / "d"))
    assert len(result["files"]) == 4 * (32 + 16)
    assert "wrote 192 images of 4 classes (32 train + 16 val each, 32x32)" in stdout
    for argv, message in (
        (cli(classes=["golden"]), "--classes must be wnids"),
        (cli(classes=[WNIDS[0], WNIDS[0]]), "--classes must be distinct"),
        (cli(train=0), "--train must be >= 1"),
    ):
        with pytest.raises(SystemExit) as info:
            examples["make_data"].parse_args(argv)
        assert info.value.code == 2, message


def test_quick_preset_and_threads(examples: dict[str, ModuleType], tmp_path: Path) -> None:
    parse = examples["train_teacher"].parse_args
    full = parse(cli(data=tmp_path))
    assert (full.image_size, full.epochs, full.batch_size, full.threads) == (224, 30, 128, None)
    quick = parse(cli("--quick", data=tmp_path))
    assert (quick.image_size, quick.epochs, quick.batch_size, quick.workers) == (32, 3, 32, 0)
    assert quick.threads == 1
    assert torch.get_num_threads() == 1
    mixed = parse(cli("--quick", data=tmp_path, epochs=5, image_size=48))
    assert (mixed.epochs, mixed.image_size, mixed.batch_size) == (5, 48, 32)
    # distill and analyze take the teacher's image size unless told
    (tmp_path / "t.pt").write_bytes(b"")
    distill = examples["distill"].parse_args(
        cli("--quick", data=tmp_path, teacher=tmp_path / "t.pt", temperature=1)
    )
    assert distill.image_size is None
    assert distill.epochs == 3
    for argv in (cli(data=tmp_path, threads=0), cli(data=tmp_path, epochs=0)):
        with pytest.raises(SystemExit) as info:
            parse(argv)
        assert info.value.code == 2
    tokens = examples["distill_tokens"].parse_args([])
    assert (tokens.steps, tokens.eval_batches, tokens.threads) == (600, 20, 1)
    tokens = examples["distill_tokens"].parse_args(["--quick"])
    assert (tokens.steps, tokens.eval_batches) == (100, 4)


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        ("train_teacher", ["--data", "nonexistent"], "--data nonexistent is not a folder"),
        ("train_teacher", ["--data", "{tmp}", "--alpha", "2.0"], r"--alpha must be in \[0, 1\]"),
        (
            "train_teacher",
            ["--data", "{tmp}", "--out", "/proc/no/teacher.pt"],
            "--out /proc/no/teacher.pt: cannot write into /proc/no",
        ),
        ("train_teacher", ["--data", "{tmp}", "--out", "{tmp}"], "is a folder; give a file"),
        ("train_teacher", ["--data", "{tmp}", "--device", "gpu"], "--device 'gpu' is not usable"),
        ("distill", ["--data", "{tmp}", "--teacher", "nope.pt", "-T", "1"], "not a file"),
        (
            "distill",
            ["--data", "{tmp}", "--teacher", "{tmp}/t.pt", "-T", "0"],
            r"--temperature must be in \(0, inf\]",
        ),
        ("distill_tokens", ["--temperature", "0"], "--temperature must be finite and > 0"),
        ("distill_tokens", ["--alpha", "2"], r"--alpha must be in \[0, 1\]"),
        (
            "analyze",
            ["--data", "{tmp}", "--teacher", "{tmp}/t.pt", "--students", "{tmp}/t.pt",
             "{tmp}/t.pt", "--temperatures", "3", "1"],
            "--temperatures must increase",
        ),
        ("analyze", ["--data", "nonexistent", "--teacher", "t", "--students", "s",
                     "--temperatures", "1"], "--data nonexistent is not a folder"),
        ("analyze", ["--data", "{tmp}", "--teacher", "{tmp}/t.pt", "--students", "{tmp}/t.pt",
                     "{tmp}/t.pt", "--temperatures", "3", "1", "--sets", "cifar100"],
         "--temperatures must increase"),  # --sets cifar100 is a choice, as in the CLI
        ("analyze", ["--data", "{tmp}", "--teacher", "{tmp}/t.pt", "--students", "{tmp}/t.pt",
                     "--temperatures", "1"], r"--teacher .*t\.pt: empty or cut short"),
    ],
)  # fmt: skip
def test_bad_arguments_fail_before_work_in_one_line(
    examples: dict[str, ModuleType],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    script: str,
    argv: list[str],
    message: str,
) -> None:
    """Issue 20.8: one line on stderr and status 2, before any training or reading."""
    import re

    (tmp_path / "t.pt").write_bytes(b"")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as info:
        examples[script].main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing ran
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert re.search(message, lines[0]), lines[0]


def test_checkpoint_is_saved_after_every_epoch(
    examples: dict[str, ModuleType], pipeline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = examples["train_teacher"]
    saved: list[int] = []
    real = module.save_checkpoint

    def save(path: Any, *args: Any, **meta: Any) -> Path:
        out = real(path, *args, **meta)
        saved.append(torch.load(out, weights_only=True)["meta"]["epoch"])
        return out

    monkeypatch.setattr(module, "save_checkpoint", save)
    out = pipeline["tmp"] / "every_epoch.pt"
    run(module.main, cli(data=pipeline["data"], epochs=2, out=out, **SMALL))
    assert saved == [1, 2]


def test_distill_logs_soft_term_and_saves(pipeline: dict[str, Any]) -> None:
    for t in (1, 3):
        result, stdout = pipeline[f"distill_T{t}"]
        assert Path(result["checkpoint"]).stat().st_size > 0
        assert "soft T²·KL" in stdout
        assert all(h["soft"] > 0 for h in result["history"])
        assert all(np.isfinite(h["loss"]) for h in result["history"])
        ckpt = torch.load(result["checkpoint"], weights_only=True)
        assert ckpt["meta"]["temperature"] == t


def test_analyze_outputs(pipeline: dict[str, Any]) -> None:
    out: Path = pipeline["analysis"]
    for name in (
        "report.md",
        "projection.png",
        "diffusion_index.png",
        "diffusion_T1_to_T3.md",
        "diffusion_T1_to_T3.csv",
        "target_entropy.md",
        "target_entropy.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert (out / "projection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # wnid class folders: WordNet sets; one table row per class, named.
    result, stdout = pipeline["analyze"]
    assert "WordNet" in stdout
    rows = csv_rows(out / "diffusion_T1_to_T3.csv")
    assert [r["name"] for r in rows] == list(NAMES)
    assert all(np.isfinite(float(r["similar_pct"])) for r in rows)
    assert len(result["tables"][3.0]) == len(NAMES)
    markdown = (out / "diffusion_T1_to_T3.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"| {name} |" in markdown
        assert name in stdout

    entropy = result["entropy"]
    assert entropy.temperatures == (1.0, 3.0)
    assert 0 < entropy.entropy[0] < entropy.entropy[1] <= np.log(4) + 1e-9
    assert len((out / "target_entropy.csv").read_text().splitlines()) == 3


def test_analyze_feature_and_hand_picked_sets(
    examples: dict[str, ModuleType], pipeline: dict[str, Any]
) -> None:
    base = {
        "data": pipeline["data"],
        "teacher": pipeline["teacher"],
        "students": pipeline["students"],
        "temperatures": [1, 3],
        **SMALL,
    }
    out = pipeline["tmp"] / "analysis_feature"
    _, stdout = run(
        examples["analyze"].main,
        cli(out=out, sets="feature", classes=[3, 0, "container ship"], **base),
    )
    assert "feature distance" in stdout
    assert "1 closest / 2 farthest" in stdout
    assert [r["target"] for r in csv_rows(out / "diffusion_T1_to_T3.csv")] == ["0", "1", "2", "3"]
    assert (out / "projection.png").stat().st_size > 0

    out = pipeline["tmp"] / "analysis_hand"
    run(
        examples["analyze"].main,
        cli(
            out=out,
            similar=["golden retriever", WNIDS[1]],
            dissimilar=["submarine", 2],
            **base,
        ),
    )
    assert [r["name"] for r in csv_rows(out / "diffusion_T1_to_T3.csv")] == list(NAMES[:2])


def test_train_teacher_is_deterministic_on_cpu_and_runs_amp(
    examples: dict[str, ModuleType], pipeline: dict[str, Any]
) -> None:
    tmp = pipeline["tmp"]
    options = {"data": pipeline["data"], "epochs": 1, "seed": 3, **SMALL}
    first, _ = run(examples["train_teacher"].main, cli(out=tmp / "a.pt", **options))
    second, _ = run(examples["train_teacher"].main, cli(out=tmp / "b.pt", **options))
    assert first["history"] == second["history"]
    a = torch.load(tmp / "a.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    amp, stdout = run(examples["train_teacher"].main, cli("--amp", out=tmp / "c.pt", **options))
    assert "autocast bfloat16" in stdout
    assert np.isfinite(amp["history"][0]["loss"])


def test_distill_with_labels_logs_hard_term(
    examples: dict[str, ModuleType], pipeline: dict[str, Any]
) -> None:
    out = pipeline["tmp"] / "student_beta.pt"
    result, stdout = run(
        examples["distill"].main,
        cli(
            data=pipeline["data"],
            teacher=pipeline["teacher"],
            temperature=2,
            beta=0.5,
            epochs=1,
            out=out,
            **SMALL,
        ),
    )
    assert "hard CE" in stdout
    assert result["history"][0]["hard"] > 0
    assert out.stat().st_size > 0


def test_distill_tokens(examples: dict[str, ModuleType]) -> None:
    argv = cli(
        steps=8,
        vocab=24,
        temperature=2,
        batch_size=16,
        max_len=10,
        teacher_dim=32,
        student_dim=16,
        eval_batches=2,
        device="cpu",
    )
    result, stdout = run(examples["distill_tokens"].main, argv)
    assert "teacher token accuracy" in stdout
    assert "student token accuracy" in stdout
    assert 0.0 <= result["teacher_acc"] <= 1.0
    assert 0.0 <= result["student_acc"] <= 1.0
    assert result["entropy"].temperatures == (1.0, 2.0)
    assert result["entropy"].num_classes == 24


def test_synthetic_sequences_are_padded_and_masked(examples: dict[str, ModuleType]) -> None:
    module = examples["distill_tokens"]
    task = module.SyntheticTranslation(vocab=24, min_len=2, max_len=7, noise=0.5, seed=0)
    source, target, clean = task.batch(32, torch.Generator().manual_seed(0))
    pad = source == module.PAD
    assert pad.any()
    assert (~pad).any()
    assert torch.equal(target == module.PAD, pad)
    assert torch.equal(clean == module.PAD, pad)
    assert torch.equal(pad, pad.cummax(dim=1).values)  # padding is on the right only
    assert (target[~pad] >= 1).all()
    assert (target != clean).any()  # the synonym noise
    logits = module.Translator(24, 8)(source)
    assert logits.shape == (*source.shape, 24)
