r"""`lsdiffusion analyze`: measure systematic diffusion on your own checkpoints.

    lsdiffusion analyze --model torchvision:resnet18 --data imagenet/ \\
        --teacher teacher_ls.pt --students student_T1.pt student_T4.pt --temperatures 1 4

Every model (the teacher, each student, the reference) is built from `--model`
(`timm:NAME`, `torchvision:NAME` or `package.module:factory`, imported only when
used), its state-dict file loaded (`module.`, `_orig_mod.` and `model.` prefixes
removed), and the evaluation data (an image folder or a tensor file) streamed once
through it: class centroids and cluster geometry
([`ClassScatter`][lsdiffusion.ClassScatter]), accuracy, the features of the three
projected classes, and the teacher's target entropy.

Class sets (`--sets`): `wordnet` (ImageNet wnid folders: the embedded hierarchy),
`cifar100` (the 100 CIFAR-100 classes, matched by fine label name: the other four
classes of the superclass are similar, the other superclasses' classes dissimilar),
`feature` (distances between the centroids of a *reference* model: `--reference`,
by default the teacher), or a hand-picked group (`--similar ... --dissimilar ...`).
Feature sets never come from the students being measured: sets chosen as the
closest classes of the T0 student's own centroids are biased by regression to the
mean (a pair that looks close at T0 because of noise looks farther at T1, so
α_sim moves up and α_dissim down with no change in the model).

It prints Table 3 (the diffusion index of every class from T0 to each other
temperature) with its significance, the cluster geometry (R², NC1, mean CDNV over
the similar and the dissimilar classes) of every model and the teacher's target
entropy; it writes the tables, the figures and `report.md` into `--out`
atomically (an interrupted run leaves the previous set). Argument errors are one
line with exit status 2, before any model runs.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch and numpy load when the command runs, not to build the parser
    import numpy as np
    import numpy.typing as npt
    import torch

__all__ = ["SET_CHOICES", "SetChoice", "add_parser", "analyze", "feature_sets", "main"]

SET_CHOICES: tuple[str, ...] = ("auto", "wordnet", "cifar100", "feature")
"""The values of `--sets` (shared with `examples/analyze.py`)."""

_WNID = re.compile(r"^n\d{8}$")
_STAGING = ".lsdiffusion-analyze-"


@dataclass
class SetChoice:
    """Targets and their similar / dissimilar classes (bool masks, one row per target)."""

    targets: list[int]
    similar: npt.NDArray[np.bool_]
    dissimilar: npt.NDArray[np.bool_]
    source: str


@dataclass
class _Measured:
    centroids: torch.Tensor
    geometry: Any
    features: torch.Tensor
    labels: torch.Tensor
    accuracy: float
    layer: Any = field(repr=False, default=None)


def feature_sets(
    reference_centroids: torch.Tensor, similar_frac: float, dissimilar_frac: float, source: str
) -> SetChoice:
    """Feature-distance class sets from a reference model's centroids.

    The fractions are clipped so that both sets fit among the other K - 1
    classes (at least one class each). Take `reference_centroids` from a model
    that is not measured (the teacher, or an independent one): see the module
    documentation for the bias otherwise.

    Args:
        reference_centroids: (K, D) centroids of the reference model.
        similar_frac: fraction of K taken as similar (paper: 0.01).
        dissimilar_frac: fraction of K taken as dissimilar (paper: 0.9).
        source: who the reference is, for the description.

    Returns:
        A [`SetChoice`][lsdiffusion.analyze.SetChoice] over every class.

    Raises:
        ValueError: fewer than 3 classes.
    """
    from lsdiffusion.semantics import feature_class_masks

    k = int(reference_centroids.shape[0])
    n_sim = max(1, int(similar_frac * k + 0.5))
    n_dis = min(max(1, int(dissimilar_frac * k + 0.5)), k - 1 - n_sim)
    if n_dis < 1:
        raise ValueError(f"feature class sets need at least 3 classes, got {k}")
    masks = feature_class_masks(reference_centroids, n_sim / k, n_dis / k)
    text = f"feature distance of the {source}'s centroids: {n_sim} closest / {n_dis} farthest"
    return SetChoice(list(range(k)), masks.similar, masks.dissimilar, f"{text} of {k} classes")


# ----------------------------------------------------------------------------- arguments


def add_parser(subparsers: Any) -> None:
    """Register `lsdiffusion analyze`."""
    p = subparsers.add_parser(
        "analyze",
        help="diffusion index, cluster geometry and projections of your checkpoints",
        description=(__doc__ or "").split("\n\n")[0],
    )
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `lsdiffusion analyze` (also used by `examples/analyze.py`)."""
    p.add_argument("--model", required=True, help="timm:NAME, torchvision:NAME or pkg.mod:factory")
    p.add_argument("--teacher-model", default=None, help="the teacher's (default: --model)")
    p.add_argument("--data", type=Path, required=True, help="image folder or tensor file")
    p.add_argument("--split", default="val", help="sub-folder of --data used when present")
    p.add_argument("--teacher", type=Path, required=True, help="teacher state-dict file")
    p.add_argument("--students", type=Path, nargs="+", required=True, help="one per T")
    p.add_argument("--temperatures", type=float, nargs="+", required=True, metavar="T")
    p.add_argument("--reference", type=Path, default=None, help="feature sets from (def: teacher)")
    p.add_argument("--reference-model", default=None, help="its model (default: --model)")
    p.add_argument("--sets", choices=SET_CHOICES, default="auto")
    p.add_argument(
        "--layer", default=None, help="the classifier layer, when two could be (e.g. head)"
    )
    p.add_argument(
        "--relative-to",
        choices=("union", "all"),
        default="union",
        help="the distances' normalising set R of the diffusion index",
    )
    p.add_argument("--similar-frac", type=float, default=0.01)
    p.add_argument("--dissimilar-frac", type=float, default=0.9)
    p.add_argument("--similar", nargs="+", default=None, help="a hand-picked group")
    p.add_argument("--dissimilar", nargs="+", default=None, help="its dissimilar classes")
    p.add_argument("--classes", nargs=3, default=None, help="the three projected classes")
    p.add_argument("--entropy-temperatures", type=float, nargs="+", default=None)
    p.add_argument("--out", type=Path, default=Path("analysis"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")


def check_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no model run; raises `ValueError` with one line."""
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    temps = list(args.temperatures)
    if len(args.students) != len(temps):
        raise ValueError(
            f"--students has {len(args.students)} files but --temperatures has {len(temps)} "
            "values; give one temperature per student"
        )
    if not all(math.isfinite(t) and t > 0 for t in temps + list(args.entropy_temperatures or [])):
        raise ValueError(f"temperatures must be finite and > 0, got {temps}")
    if any(b <= a for a, b in itertools.pairwise(temps)):
        raise ValueError(
            f"--temperatures must increase (the first is T0 of the diffusion index), got {temps}"
        )
    for name in ("similar_frac", "dissimilar_frac"):
        v = getattr(args, name)
        if not 0 < v <= 1:
            raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1], got {v}")
    for name in ("image_size", "batch_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if (args.similar is None) != (args.dissimilar is None):
        raise ValueError("--similar and --dissimilar go together")
    if not args.data.exists():
        raise ValueError(f"--data {args.data} does not exist")
    for flag, path in [("--teacher", args.teacher), ("--reference", args.reference)] + [
        ("--students", s) for s in args.students
    ]:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"{flag} {path} is not a file")
    try:
        torch.empty(0, device=args.device)
    except (RuntimeError, ValueError, AssertionError) as exc:  # torch without CUDA: assert
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"--device {args.device!r} is not usable here: {first[:160]}") from None
    _check_out(args.out)


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_STAGING + "probe-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"--out {out}: cannot write into it ({exc.strerror or exc})") from None


def run(args: argparse.Namespace) -> int:
    """Run the command; argument and input errors are one line with status 2."""
    try:
        analyze(args)
    except ValueError as exc:
        print(f"lsdiffusion analyze: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nlsdiffusion analyze: interrupted; --out keeps its previous files", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse `argv` like the command line and return the results (for scripts and tests)."""
    parser = argparse.ArgumentParser(prog="lsdiffusion analyze")
    add_arguments(parser)
    return analyze(parser.parse_args(argv))


# ----------------------------------------------------------------------------- measuring


def _measure(
    args: argparse.Namespace,
    spec: str,
    flag: str,
    path: Path,
    data: Any,
    k: int,
    keep: list[int],
    on: Any,
) -> _Measured:
    import torch

    from lsdiffusion._loading import load_model, load_state_dict
    from lsdiffusion.features import FeatureCapture, iter_features
    from lsdiffusion.scatter import ClassScatter

    device = torch.device(args.device)
    model = load_model(spec, k)
    load_state_dict(path, model, flag=flag)
    model.to(device)
    scatter = ClassScatter(k, device=device, on_empty="raise")
    keep_t = torch.tensor(keep, device=device)
    kept_f: list[torch.Tensor] = []
    kept_l: list[torch.Tensor] = []
    correct, seen = 0, 0
    for feats, labels, logits in iter_features(
        model, data, layer=args.layer, progress=sys.stderr.isatty(), desc=path.name
    ):
        scatter.update(feats, labels)
        sel = torch.isin(labels, keep_t)
        kept_f.append(feats[sel].float().cpu())
        kept_l.append(labels[sel].cpu())
        correct += int((logits.argmax(dim=-1) == labels).sum())
        seen += labels.numel()
        if on is not None:
            on(logits)
    geometry = scatter.compute()
    layer = FeatureCapture(model, args.layer).layer  # the one iter_features checked
    return _Measured(
        geometry.means, geometry, torch.cat(kept_f), torch.cat(kept_l), correct / seen, layer
    )


def _resolve(token: str, classes: list[str], names: Sequence[str]) -> int:
    if token.isdigit() and int(token) < len(classes):
        return int(token)
    for pool in (classes, names):
        lowered = [p.casefold() for p in pool]
        if token.casefold() in lowered:
            return lowered.index(token.casefold())
    shown = ", ".join(list(names[:8]) + (["..."] if len(names) > 8 else []))
    raise ValueError(f"unknown class {token!r}; give an index, a folder name or a name ({shown})")


def _hierarchy(classes: list[str], required: bool) -> Any:
    from lsdiffusion.semantics import ClassHierarchy, imagenet1k_hierarchy

    if all(_WNID.match(c) for c in classes):
        imagenet = imagenet1k_hierarchy()
        if tuple(classes) == imagenet.wnids:
            return imagenet
        if set(classes) <= set(imagenet.wnids):
            return ClassHierarchy(imagenet.records, classes, source=imagenet.source)
    if not required:
        return None
    return _wordnet(classes)


def _wordnet(classes: list[str]) -> Any:
    """`--sets wordnet` on classes that are not ImageNet-1K wnids: WordNet through nltk."""
    from lsdiffusion.semantics import wordnet_hierarchy
    from lsdiffusion.semantics.wordnet import ClassListError, WordNetUnavailableError

    shown = ", ".join(repr(c) for c in classes[:3]) + (", ..." if len(classes) > 3 else "")
    try:
        return wordnet_hierarchy(classes, on_ambiguous="first")
    except WordNetUnavailableError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        first = first.split("; nltk searched")[0].rstrip(":")
        raise ValueError(
            f"--sets wordnet: the classes ({shown}) are not ImageNet-1K wnids, and reading "
            f"them through WordNet needs nltk and its corpus: {first} "
            "(see lsdiffusion.semantics.load_wordnet); or use --sets feature"
        ) from None
    except ClassListError as exc:
        bad = [p.ref for p in exc.problems]
        named = ", ".join(repr(b) for b in bad[:3]) + (", ..." if len(bad) > 3 else "")
        raise ValueError(
            f"--sets wordnet: {len(bad)} of the {len(classes)} classes name no WordNet synset "
            f"({named}); name the class folders by wnid (n01440764), synset name "
            "(apple.n.01) or lemma, or use --sets feature"
        ) from None


def _cifar100_sets(classes: list[str]) -> SetChoice:
    """CIFAR-100's superclass sets, mapped onto the dataset's classes by name."""
    from lsdiffusion.semantics import cifar100_class_masks, cifar100_hierarchy

    if len(classes) != 100:
        raise ValueError(f"--sets cifar100 needs the 100 CIFAR-100 classes, got {len(classes)}")
    hierarchy = cifar100_hierarchy()
    order = []
    for c in classes:
        try:
            order.append(hierarchy.index(c))
        except (KeyError, ValueError, LookupError):
            raise ValueError(
                f"--sets cifar100: class {c!r} is not a CIFAR-100 fine label name"
            ) from None
    if len(set(order)) != 100:
        raise ValueError("--sets cifar100: the dataset's class names repeat a CIFAR-100 class")
    masks = cifar100_class_masks()
    similar = masks.similar[order][:, order]
    dissimilar = masks.dissimilar[order][:, order]
    return SetChoice(list(range(100)), similar, dissimilar, "CIFAR-100 superclasses")


def _hand_picked(args: argparse.Namespace, classes: list[str], names: Sequence[str]) -> SetChoice:
    import numpy as np

    group = [_resolve(c, classes, names) for c in args.similar]
    far = [_resolve(c, classes, names) for c in args.dissimilar]
    if len(set(group)) < 2 or set(group) & set(far):
        raise ValueError("--similar needs 2+ distinct classes, none of them in --dissimilar")
    similar = np.zeros((len(group), len(classes)), dtype=bool)
    dissimilar = np.zeros_like(similar)
    for i, t in enumerate(group):
        similar[i, [c for c in group if c != t]] = True
        dissimilar[i, far] = True
    return SetChoice(group, similar, dissimilar, "hand-picked (--similar / --dissimilar)")


def _usable(choice: SetChoice, names: Sequence[str]) -> SetChoice:
    import numpy as np

    ok: npt.NDArray[np.bool_] = np.asarray(
        choice.similar.any(axis=1) & choice.dissimilar.any(axis=1), dtype=bool
    )
    if not ok.any():
        raise ValueError("no class has both a similar and a dissimilar set; try --sets feature")
    if not ok.all():
        out = [names[t] for t, good in zip(choice.targets, ok.tolist(), strict=True) if not good]
        print(f"left out (empty similar or dissimilar set): {', '.join(out)}")
    targets = [t for t, good in zip(choice.targets, ok.tolist(), strict=True) if good]
    return SetChoice(targets, choice.similar[ok], choice.dissimilar[ok], choice.source)


def analyze(args: argparse.Namespace) -> dict[str, Any]:
    """Run the whole analysis described in the module documentation; return its results.

    Raises:
        ValueError: bad arguments or inputs (one line each), before any model runs
            where the check needs none.
    """
    import torch

    from lsdiffusion._loading import load_data
    from lsdiffusion.entropy import TargetEntropy

    check_arguments(args)
    dataset, classes = load_data(args.data, image_size=args.image_size, split=args.split)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.workers
    )
    hierarchy = _hierarchy(classes, required=args.sets == "wordnet")
    names = list(hierarchy.names) if hierarchy is not None else classes
    picked = [_resolve(c, classes, names) for c in (args.classes or ["0", "1", "2"])]
    if len(set(picked)) != 3:
        raise ValueError(f"--classes must name 3 distinct classes, got {args.classes}")
    k = len(classes)
    # Every class set that needs no model is chosen and checked before any model runs.
    sets: SetChoice | None = None
    if args.similar is not None:
        sets = _hand_picked(args, classes, names)
    elif args.sets == "cifar100":
        sets = _cifar100_sets(classes)
    elif hierarchy is not None and args.sets != "feature":
        masks = hierarchy.class_masks()
        source = f"WordNet ({hierarchy.source or 'nltk'}): siblings / LCA depth <= 3"
        sets = SetChoice(list(range(k)), masks.similar, masks.dissimilar, source)
    if sets is not None:
        sets = _usable(sets, names)
    entropy = TargetEntropy(args.entropy_temperatures or args.temperatures)
    teacher_spec = args.teacher_model or args.model
    measured: dict[str, _Measured] = {
        "teacher": _measure(
            args, teacher_spec, "--teacher", args.teacher, loader, k, picked, entropy.update
        )
    }
    for path, t in zip(args.students, args.temperatures, strict=True):
        measured[f"student T={t:g}"] = _measure(
            args, args.model, "--students", path, loader, k, picked, None
        )
    if sets is None:  # feature sets: the centroids of a reference model
        if args.reference is not None:
            spec = args.reference_model or args.model
            ref = _measure(
                args, spec, "--reference", args.reference, loader, k, picked, None
            ).centroids
            who = f"reference model {args.reference.name}"
        else:
            ref, who = measured["teacher"].centroids, f"teacher {args.teacher.name}"
        sets = _usable(feature_sets(ref, args.similar_frac, args.dissimilar_frac, who), names)
    from lsdiffusion._report import write_report

    return write_report(args, measured, sets, names, entropy.compute())
