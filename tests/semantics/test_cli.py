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
        (["207", "--min-size", "0"], "--min-size must be >= 1, got 0"),
        (["207", "--min-size", "1000"], "--min-size must be <= 999 (the other classes), got 1000"),
        (["207", "--dissimilar-depth", "-1"], "--dissimilar-depth must be >= 0, got -1"),
        (["207", "--sample", "-1"], "--sample must be >= 0, got -1"),
        (["207", "--hierarchy", "/nonexistent/file.tsv"], "--hierarchy /nonexistent/file.tsv: "),
        (["207", "--classes", "/nonexistent/c.txt"], "--classes /nonexistent/c.txt: cannot read"),
        (["-1"], "target index must be in [0, 999], got -1"),
        (["9999"], "target index must be in [0, 999], got 9999"),
        (["²"], "target name '²' matches no class"),
        (["٣"], "target name '٣' matches no class"),  # Arabic-Indic 3: a name, not index 3
        (["207", "golden"], "target name 'golden' matches no class"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
):
    assert run(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("lsdiffusion classes: error: ")
    assert message in captured.err
    assert captured.err.count("\n") == 1
    assert "Traceback" not in captured.err


def test_several_targets(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["207", "208", "--sample", "1"]) == 0
    out = capsys.readouterr().out
    blocks = out.split("=" * 72)
    assert len(blocks) == 2
    assert "207  n02099601  golden retriever  (golden_retriever.n.01)" in blocks[0]
    assert "208  n02099712  Labrador retriever  (labrador_retriever.n.01)" in blocks[1]
    # mixed forms, and a class asked for twice is shown once
    assert run(["n02099601", "Labrador retriever", "207", "--sample", "1"]) == 0
    assert capsys.readouterr().out == out


def test_words_that_name_a_class_only_together_hint_at_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # "golden" is no class, "retriever" alone is no class either: one unquoted name
    assert run(["golden", "retriever", "--sample", "1"]) == 0
    assert capsys.readouterr().out.count("target\n") == 1
    # but 207 resolves on its own, so "207 golden retriever" is three arguments
    assert run(["207", "golden", "retriever"]) == 2
    err = capsys.readouterr().err
    assert "target name 'golden' matches no class" in err


def test_long_input_is_cut_in_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["x" * 100_000]) == 2
    err = capsys.readouterr().err
    assert "(100000 characters)" in err
    assert len(err) < 500


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
    err = capsys.readouterr().err
    assert "line 4: 'submarine' has 2 noun senses" in err
    assert "--first-sense" in err
    assert run([*argv, "--first-sense"]) == 0
    out = capsys.readouterr().out
    assert "1  n02099712  Labrador retriever" in out
    assert "3  n04347754  submarine" in out


def test_class_list_reports_every_bad_line_at_once(
    nltk_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    classes = tmp_path / "classes.txt"
    classes.write_text("apple\n\ngolden retriever\ncrane\ngoldn retrievr\nsubmarine.n.01\n")
    argv = ["1", "--classes", str(classes), "--nltk-data", str(nltk_data)]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"--classes {classes}: 3 lines name no WordNet noun or several" in err
    # line numbers count the blank line; every problem is listed, not just the first
    assert "line 1: 'apple' has 2 noun senses" in err
    assert "line 4: 'crane' has 5 noun senses" in err
    assert "line 5: 'goldn retrievr' is not a WordNet noun" in err
    assert "--first-sense" in err
    assert "on_ambiguous" not in err  # the Python argument is not this command's flag
    assert "line 6" not in err


def test_through_the_main_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    from lsdiffusion.cli import main

    assert main(["classes", "golden", "retriever", "--sample", "1"]) == 0
    assert "Labrador retriever" in capsys.readouterr().out
    assert main(["classes", "goldn retriever"]) == 2


def test_cifar100_dataset(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--dataset", "cifar100", "maple_tree"]) == 0
    out = capsys.readouterr().out
    assert "similar (4): siblings under trees" in out
    for name in ("oak tree", "palm tree", "pine tree", "willow tree"):
        assert name in out
    assert "dissimilar (95): lowest common ancestor at depth <= 0; 10 shown" in out
    assert run(["--dataset", "cifar100", "maple", "tree"]) == 0
    assert "similar (4): siblings under trees" in capsys.readouterr().out
    assert run(["--dataset", "imagenet1k", "207"]) == 0
    assert "retriever.n.01" in capsys.readouterr().out


def test_max_size_caps_a_fallback_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["pillow"]) == 0
    assert "similar (521)" in capsys.readouterr().out
    assert run(["pillow", "--max-size", "20"]) == 0
    out = capsys.readouterr().out
    assert "similar (20): subtree of" in out
    assert run(["pillow", "--max-size", "0"]) == 2
    assert "--max-size must be >= 1, got 0" in capsys.readouterr().err
    assert run(["pillow", "--min-size", "5", "--max-size", "3"]) == 2
    assert "--max-size must be >= --min-size=5, got 3" in capsys.readouterr().err


def test_first_sense_needs_classes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["207", "--first-sense"]) == 2
    assert "--first-sense applies to the lemmas of a --classes FILE" in capsys.readouterr().err


def test_cifar100_unknown_name_suggests_close_names(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--dataset", "cifar100", "mapel_tree"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "close matches: 'maple tree' (47)" in err[0]
    assert "WordNet" not in err[0]
    assert "wnid" not in err[0]
