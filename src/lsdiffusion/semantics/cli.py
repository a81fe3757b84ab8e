"""``lsdiffusion classes``: print a class's WordNet similar and dissimilar classes.

Examples:
    ```bash
    lsdiffusion classes "golden retriever"
    lsdiffusion classes 207 208 --dissimilar-depth 4 --sample 20
    lsdiffusion classes pillow --max-size 20
    lsdiffusion classes --dataset cifar100 maple_tree
    lsdiffusion classes maple_tree --classes my_classes.txt --first-sense
    ```

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
            "--dataset, --classes or --hierarchy is given. With --dataset cifar100 the sets "
            "come from CIFAR-100's 20 official superclasses: similar = the other four classes "
            "of the superclass, dissimilar = the classes of the other superclasses."
        ),
    )
    parser.add_argument(
        "target",
        nargs="+",
        help=(
            'one or more classes: index (207), wnid (n02099601) or name ("golden retriever"; '
            "a single name may also be typed without quotes)"
        ),
    )
    parser.add_argument(
        "--min-size", type=int, default=None, help="fallback similar-set size (default 1)"
    )
    parser.add_argument(
        "--dissimilar-depth",
        type=int,
        default=None,
        help=(
            "max depth of the lowest common ancestor for dissimilar classes (default 3; "
            "0 with --dataset cifar100)"
        ),
    )
    parser.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="N",
        help=(
            "keep at most N classes of a fallback similar set, the closest ones "
            "(default: no cap; sibling sets are never cut)"
        ),
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
        "--dataset",
        choices=("imagenet1k", "cifar100"),
        default=None,
        help="an embedded hierarchy: imagenet1k (WordNet, the default) or cifar100 (superclasses)",
    )
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
    from lsdiffusion.semantics.cifar100 import CIFAR100_DISSIMILAR_DEPTH, cifar100_hierarchy
    from lsdiffusion.semantics.hierarchy import DEFAULT_DISSIMILAR_DEPTH, DEFAULT_MIN_SIZE
    from lsdiffusion.semantics.imagenet import imagenet1k_hierarchy
    from lsdiffusion.semantics.wordnet import WordNetUnavailableError

    cifar = args.dataset == "cifar100"
    default_depth = CIFAR100_DISSIMILAR_DEPTH if cifar else DEFAULT_DISSIMILAR_DEPTH
    min_size = DEFAULT_MIN_SIZE if args.min_size is None else args.min_size
    depth = default_depth if args.dissimilar_depth is None else args.dissimilar_depth
    try:
        for flag, value, minimum in (
            ("--min-size", min_size, 1),
            ("--dissimilar-depth", depth, 0),
            ("--sample", args.sample, 0),
            ("--max-size", 1 if args.max_size is None else args.max_size, 1),
        ):
            if value < minimum:
                raise ValueError(f"{flag} must be >= {minimum}, got {value}")
        if args.max_size is not None and args.max_size < min_size:
            raise ValueError(f"--max-size must be >= --min-size={min_size}, got {args.max_size}")
        if args.first_sense and args.classes is None:
            raise ValueError(
                "--first-sense applies to the lemmas of a --classes FILE; without --classes "
                "there is no lemma to resolve"
            )
        if args.nltk_data is not None and args.classes is None:
            raise ValueError(
                "--nltk-data is read only to resolve a --classes FILE through WordNet; "
                "pass --classes too, or drop --nltk-data"
            )
        hierarchy: ClassHierarchy
        if args.classes is not None:
            hierarchy = _hierarchy_from_list(args.classes, args.first_sense, args.nltk_data)
        elif args.hierarchy is not None:
            hierarchy = _load_hierarchy(args.hierarchy)
        elif cifar:
            hierarchy = cifar100_hierarchy()
        else:
            hierarchy = imagenet1k_hierarchy()
        if min_size > hierarchy.num_classes - 1:
            others = hierarchy.num_classes - 1
            raise ValueError(f"--min-size must be <= {others} (the other classes), got {min_size}")
        targets = _targets(hierarchy, args.target)
        found = [
            (
                i,
                *hierarchy.class_sets(
                    i, min_size=min_size, dissimilar_depth=depth, max_size=args.max_size
                ),
                hierarchy.similar_basis(i, min_size=min_size),
            )
            for i in targets
        ]
    except (ValueError, TypeError, OSError, WordNetUnavailableError) as exc:
        print(f"lsdiffusion classes: error: {exc}", file=sys.stderr)
        return 2

    try:
        for n, (i, similar, dissimilar, basis) in enumerate(found):
            if n:
                print("\n" + "=" * 72 + "\n")
            _print_sets(hierarchy, i, similar, dissimilar, basis, depth, args.sample)
    except BrokenPipeError:  # e.g. piped into `head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return 0


def _targets(hierarchy: ClassHierarchy, words: list[str]) -> list[int]:
    """Each argument is one class; a name typed without quotes is taken whole.

    ``classes 207 208`` gives two targets. ``classes golden retriever`` gives one:
    when no argument names a class on its own but all of them together do.
    """
    from lsdiffusion.semantics.names import ClassLookupError

    found: list[int] = []
    failed: list[ClassLookupError] = []
    for word in words:
        try:
            found.append(hierarchy.index(word))
        except ClassLookupError as exc:
            failed.append(exc)
    if not failed:
        return list(dict.fromkeys(found))  # a class asked for twice is shown once
    if len(words) > 1:
        try:
            whole = hierarchy.index(" ".join(words))
        except ClassLookupError:
            pass
        else:
            if not found:
                return [whole]
            raise ValueError(
                f"{failed[0]}. Together the arguments name class {whole} "
                f"({hierarchy.names[whole]}): quote a name that has spaces"
            ) from None
    raise failed[0]


def _load_hierarchy(path: Path) -> ClassHierarchy:
    from lsdiffusion.semantics.hierarchy import ClassHierarchy

    try:
        return ClassHierarchy.load(path)
    except OSError as exc:
        raise OSError(f"--hierarchy {path}: cannot read it: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise ValueError(f"--hierarchy {path}: {exc}") from None


def _hierarchy_from_list(path: Path, first_sense: bool, nltk_data: Path | None) -> ClassHierarchy:
    """The hierarchy of a class-list file; errors name the file's lines and this command's flags."""
    from lsdiffusion.semantics.wordnet import ClassListError, wordnet_hierarchy

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise OSError(f"--classes {path}: cannot read it: {reason}") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"--classes {path}: the file lists no class (one per line)")
    try:
        return wordnet_hierarchy(
            [ref for _, ref in lines],
            on_ambiguous="first" if first_sense else "raise",
            nltk_data=nltk_data,
        )
    except ClassListError as exc:
        problems = "; ".join(f"line {lines[p.position][0]}: {p.reason}" for p in exc.problems)
        ambiguous = [p for p in exc.problems if p.senses]
        advice = "write a lemma, a synset name (e.g. maple.n.02) or a wnid on each"
        if ambiguous:
            advice += (
                f"; for the ambiguous line{'s' if len(ambiguous) > 1 else ''}, a synset name "
                f"(e.g. {ambiguous[0].senses[0]}), or pass --first-sense for the most "
                "frequent sense"
            )
        what = "line names" if len(exc.problems) == 1 else "lines name"
        raise ValueError(
            f"--classes {path}: {len(exc.problems)} {what} no WordNet noun or several: "
            f"{problems}. {advice[0].upper()}{advice[1:]}"
        ) from None
    except ValueError as exc:  # duplicates, a WordNet other than 3.0
        raise ValueError(f"--classes {path}: {exc}") from None


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
