"""``lsdiffusion classes``: print a class's WordNet similar and dissimilar classes.

Examples::

    lsdiffusion classes "golden retriever"
    lsdiffusion classes 207 --dissimilar-depth 4 --sample 20
    lsdiffusion classes maple_tree --classes cifar100.txt --first-sense

Module-level imports stay light (argparse only) so ``lsdiffusion --help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsdiffusion.semantics.hierarchy import ClassHierarchy, SimilarBasis

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``classes`` sub-command on ``subparsers``."""
    parser = subparsers.add_parser(
        "classes",
        help="show a class's semantically similar and dissimilar classes (WordNet)",
        description=(
            "Print the target class, its similar classes (siblings under the immediate "
            "hypernym, else the smallest ancestor subtree with at least --min-size others) "
            "and a sample of its dissimilar classes (lowest common ancestor at depth <= "
            "--dissimilar-depth, root = 0). Uses the embedded ImageNet-1K hierarchy unless "
            "--classes or --hierarchy is given."
        ),
    )
    parser.add_argument(
        "target",
        nargs="+",
        help='class index, wnid (n02099601) or name ("golden retriever"; words may be unquoted)',
    )
    parser.add_argument(
        "--min-size", type=int, default=None, help="fallback similar-set size (default 1)"
    )
    parser.add_argument(
        "--dissimilar-depth",
        type=int,
        default=None,
        help="max depth of the lowest common ancestor for dissimilar classes (default 3)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=10,
        metavar="N",
        help="dissimilar classes to show, evenly spaced in index order (default 10)",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--classes",
        type=Path,
        metavar="FILE",
        help="your class list, one wnid / synset name / lemma per line (needs nltk WordNet)",
    )
    source.add_argument(
        "--hierarchy",
        type=Path,
        metavar="FILE",
        help="a hierarchy saved with ClassHierarchy.save (no nltk needed)",
    )
    parser.add_argument(
        "--nltk-data", type=Path, metavar="DIR", help="nltk data folder holding corpora/wordnet"
    )
    parser.add_argument(
        "--first-sense",
        action="store_true",
        help="with --classes: resolve ambiguous lemmas to their most frequent sense",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``lsdiffusion classes``; returns the exit code (2 on bad input)."""
    from lsdiffusion.semantics.hierarchy import (
        DEFAULT_DISSIMILAR_DEPTH,
        DEFAULT_MIN_SIZE,
        ClassHierarchy,
        imagenet1k_hierarchy,
    )
    from lsdiffusion.semantics.wordnet import WordNetUnavailableError, wordnet_hierarchy

    text = " ".join(args.target).strip()
    target: int | str = int(text) if text.isdigit() else text
    min_size = DEFAULT_MIN_SIZE if args.min_size is None else args.min_size
    depth = DEFAULT_DISSIMILAR_DEPTH if args.dissimilar_depth is None else args.dissimilar_depth
    try:
        if args.sample < 0:
            raise ValueError(f"--sample must be >= 0, got {args.sample}")
        hierarchy: ClassHierarchy
        if args.classes is not None:
            refs = [ln.strip() for ln in args.classes.read_text().splitlines() if ln.strip()]
            hierarchy = wordnet_hierarchy(
                refs,
                on_ambiguous="first" if args.first_sense else "raise",
                nltk_data=args.nltk_data,
            )
        elif args.hierarchy is not None:
            hierarchy = ClassHierarchy.load(args.hierarchy)
        else:
            hierarchy = imagenet1k_hierarchy()
        i = hierarchy.index(target)
        similar, dissimilar = hierarchy.class_sets(i, min_size=min_size, dissimilar_depth=depth)
        basis = hierarchy.similar_basis(i, min_size=min_size)
    except (ValueError, TypeError, OSError, WordNetUnavailableError) as exc:
        print(f"lsdiffusion classes: error: {exc}", file=sys.stderr)
        return 2

    try:
        _print_sets(hierarchy, i, similar, dissimilar, basis, depth, args.sample)
    except BrokenPipeError:  # e.g. piped into `head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def _print_sets(
    hierarchy: ClassHierarchy,
    i: int,
    similar: tuple[int, ...],
    dissimilar: tuple[int, ...],
    basis: SimilarBasis,
    depth: int,
    sample: int,
) -> None:
    print(f"target\n  {hierarchy.describe(i)}  ({hierarchy.synset_names[i]})")
    under = " and ".join(basis.synsets)
    how = f"siblings under {under}" if basis.kind == "siblings" else f"subtree of {under}"
    print(f"\nsimilar ({len(similar)}): {how}")
    for c in similar:
        print(f"  {hierarchy.describe(c)}")
    n, k = len(dissimilar), min(sample, len(dissimilar))
    shown = [dissimilar[(2 * j + 1) * n // (2 * k)] for j in range(k)]
    note = f"; {k} shown, evenly spaced" if k < n else ""
    print(f"\ndissimilar ({n}): lowest common ancestor at depth <= {depth}{note}")
    for c in shown:
        print(f"  {hierarchy.describe(c)}")
    sys.stdout.flush()
