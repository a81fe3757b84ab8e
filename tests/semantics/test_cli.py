"""``lsdiffusion classes``."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from lsdiffusion.semantics import imagenet1k_hierarchy
from lsdiffusion.semantics.cli import add_parser


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lsdiffusion")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["classes", *argv])
    return int(args.func(args))


def test_golden_retriever(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["golden retriever"]) == 0
    out = capsys.readouterr().out
    assert "207  n02099601  golden retriever" in out
    assert "similar (4): siblings under retriever.n.01" in out
    for line in (
        "205  n02099267  flat-coated retriever",
        "206  n02099429  curly-coated retriever",
        "208  n02099712  Labrador retriever",
        "209  n02099849  Chesapeake Bay retriever",
    ):
        assert line in out
    assert "dissimilar (590): lowest common ancestor at depth <= 3; 10 shown" in out
    dissimilar_lines = out.split("dissimilar (590)")[1].strip().splitlines()[1:]
    assert len(dissimilar_lines) == 10


def test_unquoted_words_index_and_wnid_give_the_same_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outs = []
    for argv in (["golden", "retriever"], ["207"], ["n02099601"], ["Golden_Retriever"]):
        assert run(argv) == 0
        outs.append(capsys.readouterr().out)
    assert all(o == outs[0] for o in outs)


def test_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["2", "--min-size", "4", "--dissimilar-depth", "5", "--sample", "3"]) == 0
    out = capsys.readouterr().out
    assert "similar (4): subtree of elasmobranch.n.01" in out
    assert "lowest common ancestor at depth <= 5; 3 shown" in out
    assert run(["207", "--sample", "0"]) == 0
    assert "0 shown" in capsys.readouterr().out
    assert run(["207", "--sample", "5000"]) == 0
    out = capsys.readouterr().out
    assert "shown" not in out
    assert len(out.split("dissimilar (590)")[1].strip().splitlines()) == 591


def test_misspelled_name_exits_nonzero_with_suggestions(capsys: pytest.CaptureFixture[str]):
    assert run(["golden retriver"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "lsdiffusion classes: error:" in captured.err
    assert "'golden retriever' (207)" in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["crane"], "ambiguous"),
        (["1000"], "[0, 999]"),
        (["207", "--min-size", "0"], "min_size must be an int >= 1"),
        (["207", "--dissimilar-depth", "-1"], "dissimilar_depth must be an int >= 0"),
        (["207", "--sample", "-1"], "--sample must be >= 0"),
        (["207", "--hierarchy", "/nonexistent/file.tsv"], "No such file"),
    ],
)
def test_bad_input_exits_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    assert run(argv) == 2
    assert message in capsys.readouterr().err


def test_saved_hierarchy_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "h.tsv.gz"
    imagenet1k_hierarchy().save(path)
    assert run(["207", "--hierarchy", str(path)]) == 0
    assert "similar (4)" in capsys.readouterr().out


def test_class_list_through_nltk(
    nltk_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("golden retriever\nLabrador retriever\ndog.n.01\nsubmarine\n\n")
    argv = ["golden_retriever", "--classes", str(classes), "--nltk-data", str(nltk_data)]
    assert run(argv) == 2  # "submarine" is also a sandwich
    assert "'submarine' has 2 noun senses" in capsys.readouterr().err
    assert run([*argv, "--first-sense"]) == 0
    out = capsys.readouterr().out
    assert "1  n02099712  Labrador retriever" in out
    assert "3  n04347754  submarine" in out


def test_through_the_main_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from lsdiffusion.cli import main

    assert main(["classes", "golden", "retriever", "--sample", "1"]) == 0
    assert "Labrador retriever" in capsys.readouterr().out
    assert main(["classes", "goldn retriever"]) == 2
