r"""Measure systematic diffusion: diffusion-index tables, Müller projections, target entropy.

    python examples/analyze.py --data data/ --teacher teacher_ls.pt \
        --students student_T1.pt student_T3.pt --temperatures 1 3 --out analysis/

For every model the penultimate features (the input of the final ``nn.Linear``)
of the evaluation split (``DATA/val``, else ``DATA``) are streamed with
``lsdiffusion.features.iter_features`` into ``ClassCentroids``; only the
features of the three projected classes are kept in memory.

* **Diffusion index** (paper Eq. 1) of every class from T0 (the first
  temperature) to each other temperature, one row per class, written as
  Markdown and CSV, plus a chart. The similar / dissimilar class sets come from:

  - ``--sets wordnet`` (the default when every class folder is an ImageNet-1K
    wnid such as ``n02099601``): WordNet siblings and distant classes, from the
    hierarchy embedded in lsdiffusion restricted to the dataset's classes (other
    WordNet classes go through nltk);
  - ``--sets feature`` (the default otherwise): the classes whose T0-student
    centroids are closest (``--similar-frac``, paper: 1%) and farthest
    (``--dissimilar-frac``, paper: 90%) from the target's. With few classes the
    fractions are clipped so that both sets fit (at least one class each; with
    4 classes: 1 similar and 2 dissimilar);
  - ``--similar A B C --dissimilar X Y``: a hand-picked group (the paper's
    retrievers): each of A, B, C is a target, the rest of the group its similar
    set, X and Y its dissimilar set. Classes are given as indices, folder names
    or (WordNet) class names.

  Classes whose similar or dissimilar set is empty are left out of the table.
* **Müller projection** of three classes (``--classes``, default the first
  three) for the teacher and every student, on the plane through their
  templates (rows of the final layer, biases appended): ``projection.png``.
* **Target entropy** of the teacher's softened outputs at each temperature
  (paper Appendix H), against its maximum ln K.

Everything is also collected in ``report.md``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    add_common_args,
    check_classes,
    dataset_classes,
    finish_args,
    image_folder,
    load_checkpoint,
    make_loader,
    seed_everything,
)
from torch import nn

from lsdiffusion.entropy import EntropyReport, TargetEntropy
from lsdiffusion.features import iter_features
from lsdiffusion.geometry import (
    ClassCentroids,
    DiffusionIndexTable,
    diffusion_indices,
    muller_projection,
    templates_from_linear,
)
from lsdiffusion.plotting import plot_diffusion_index, plot_projections
from lsdiffusion.semantics import (
    ClassHierarchy,
    feature_class_masks,
    imagenet1k_hierarchy,
    wordnet_hierarchy,
)

WNID = re.compile(r"^n\d{8}$")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.set_defaults(image_size=None)  # default: the teacher's
    parser.add_argument("--teacher", required=True)
    parser.add_argument("--students", nargs="+", required=True, help="one checkpoint per T")
    parser.add_argument(
        "--temperatures", nargs="+", type=float, required=True, help="T of each student; first: T0"
    )
    parser.add_argument("--out", type=Path, default=Path("analysis"))
    parser.add_argument("--split", default="val", help="evaluation split folder (default: val)")
    parser.add_argument("--classes", nargs=3, default=None, help="the three projected classes")
    parser.add_argument(
        "--sets",
        choices=("auto", "wordnet", "feature"),
        default="auto",
        help="class sets (auto: wordnet for ImageNet wnid folders, else feature)",
    )
    parser.add_argument("--similar-frac", type=float, default=0.01, help="feature sets")
    parser.add_argument("--dissimilar-frac", type=float, default=0.9, help="feature sets")
    parser.add_argument("--similar", nargs="+", default=None, help="hand-picked group")
    parser.add_argument("--dissimilar", nargs="+", default=None, help="its dissimilar classes")
    parser.add_argument("--reference", choices=("union", "all"), default="union")
    parser.add_argument(
        "--entropy-temperatures",
        nargs="+",
        type=float,
        default=None,
        help="temperatures of the entropy table (default: --temperatures)",
    )
    args = finish_args(parser.parse_args(argv), keep_unset=("image_size",))
    if len(args.students) != len(args.temperatures):
        parser.error(
            f"--students has {len(args.students)} checkpoints but --temperatures has "
            f"{len(args.temperatures)} values; give one temperature per student"
        )
    if len(set(args.temperatures)) != len(args.temperatures):
        parser.error(f"--temperatures must be distinct, got {args.temperatures}")
    if (args.similar is None) != (args.dissimilar is None):
        parser.error("--similar and --dissimilar go together")
    return args


# ----------------------------------------------------------------------------- measuring


@dataclass
class Measurement:
    centroids: torch.Tensor  # (C, D) float64
    features: torch.Tensor  # (n, D) features of the projected classes only
    labels: torch.Tensor  # (n,)
    accuracy: float


def measure(
    model: nn.Module,
    loader: Any,
    num_classes: int,
    keep_classes: Sequence[int],
    device: torch.device,
    on_logits: Callable[[torch.Tensor], None] | None = None,
) -> Measurement:
    """Stream the features of ``loader`` into class centroids, in one pass."""
    centroids = ClassCentroids(num_classes, device=device, on_empty="raise")
    keep = torch.tensor(list(keep_classes), device=device)
    kept_features: list[torch.Tensor] = []
    kept_labels: list[torch.Tensor] = []
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for feats, labels, logits in iter_features(model, loader, progress=sys.stderr.isatty()):
        centroids.update(feats, labels)
        sel = torch.isin(labels, keep)
        kept_features.append(feats[sel].float().cpu())
        kept_labels.append(labels[sel].cpu())
        correct += (logits.argmax(dim=1) == labels).sum()
        seen += labels.numel()
        if on_logits is not None:
            on_logits(logits)
    return Measurement(
        centroids.compute(), torch.cat(kept_features), torch.cat(kept_labels), correct.item() / seen
    )


# ----------------------------------------------------------------------------- class sets


def wordnet_for(classes: list[str], required: bool) -> ClassHierarchy | None:
    """A WordNet hierarchy over the dataset's classes, in their order (None if not applicable)."""
    if all(WNID.match(c) for c in classes):
        imagenet = imagenet1k_hierarchy()
        if tuple(classes) == imagenet.wnids:
            return imagenet
        if set(classes) <= set(imagenet.wnids):
            # A subset of ImageNet-1K: the embedded synsets, with the dataset's class indices.
            return ClassHierarchy(imagenet.records, classes, source=imagenet.source)
    if not required:
        return None
    # Other wnids (ImageNet-21k) or lemma names (CIFAR-100): nltk's WordNet corpus.
    return wordnet_hierarchy(classes, on_ambiguous="first")


def resolve_class(token: str, classes: list[str], names: Sequence[str]) -> int:
    if token.isdigit() and int(token) < len(classes):
        return int(token)
    for pool in (classes, names):
        lowered = [p.casefold() for p in pool]
        if token.casefold() in lowered:
            return lowered.index(token.casefold())
    shown = ", ".join(list(names[:8]) + (["..."] if len(names) > 8 else []))
    raise SystemExit(f"unknown class {token!r}; give an index, a folder name or a name ({shown})")


def clipped_fractions(num_classes: int, similar: float, dissimilar: float) -> tuple[float, float]:
    """Fractions giving the requested set sizes, shrunk so both fit in the other C - 1 classes."""
    n_sim = max(1, int(similar * num_classes + 0.5))
    n_dis = min(max(1, int(dissimilar * num_classes + 0.5)), num_classes - 1 - n_sim)
    if n_dis < 1:
        raise SystemExit(f"feature class sets need at least 3 classes, got {num_classes}")
    return n_sim / num_classes, n_dis / num_classes


@dataclass
class SetChoice:
    targets: list[int]
    similar: Any  # (T, C) bool masks aligned with targets
    dissimilar: Any
    source: str


def choose_sets(
    args: argparse.Namespace,
    classes: list[str],
    names: Sequence[str],
    hierarchy: ClassHierarchy | None,
    centroids_t0: torch.Tensor,
) -> SetChoice:
    num_classes = len(classes)
    if args.similar is not None:
        group = [resolve_class(c, classes, names) for c in args.similar]
        far = [resolve_class(c, classes, names) for c in args.dissimilar]
        if len(set(group)) < 2 or set(group) & set(far):
            raise SystemExit("--similar needs 2+ distinct classes, none of them in --dissimilar")
        similar = np.zeros((len(group), num_classes), dtype=bool)
        dissimilar = np.zeros_like(similar)
        for i, t in enumerate(group):
            similar[i, [c for c in group if c != t]] = True
            dissimilar[i, far] = True
        return SetChoice(group, similar, dissimilar, "hand-picked (--similar / --dissimilar)")
    if hierarchy is not None:
        masks = hierarchy.class_masks()
        source = f"WordNet ({hierarchy.source or 'nltk'}): siblings / LCA depth <= 3"
    else:
        sim_frac, dis_frac = clipped_fractions(num_classes, args.similar_frac, args.dissimilar_frac)
        masks = feature_class_masks(centroids_t0, sim_frac, dis_frac)
        n_sim, n_dis = round(sim_frac * num_classes), round(dis_frac * num_classes)
        source = (
            f"feature distance of the T0 student's centroids: {n_sim} closest / "
            f"{n_dis} farthest of {num_classes} classes"
        )
    usable = masks.similar.any(axis=1) & masks.dissimilar.any(axis=1)
    targets = np.flatnonzero(usable).tolist()
    if len(targets) < num_classes:
        left_out = [names[i] for i in np.flatnonzero(~usable).tolist()]
        print(f"left out (empty similar or dissimilar set): {', '.join(left_out)}")
    if not targets:
        raise SystemExit("no class has both a similar and a dissimilar set; try --sets feature")
    return SetChoice(targets, masks.similar[targets], masks.dissimilar[targets], source)


# ----------------------------------------------------------------------------- output


def entropy_markdown(report: EntropyReport) -> str:
    lines = ["| T | entropy (nats) | / ln K |", "|---:|---:|---:|"]
    for t, h, r in zip(report.temperatures, report.entropy, report.normalized, strict=True):
        lines.append(f"| {t:g} | {h:.4f} | {r:.3f} |")
    lines.append(f"| ln K | {report.max_entropy:.4f} | K = {report.num_classes} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    seed_everything(args.seed)
    device = torch.device(args.device)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    teacher, teacher_ckpt = load_checkpoint(args.teacher, device)
    if args.image_size is None:
        args.image_size = int(teacher_ckpt["meta"].get("image_size", 224))
    dataset = image_folder(args, args.split, train=False)
    classes = dataset_classes(dataset)
    loader = make_loader(dataset, args, train=False)
    check_classes(teacher_ckpt, classes, f"teacher {args.teacher}")

    # WordNet class names (and sets) when the class folders are ImageNet wnids.
    hierarchy = wordnet_for(classes, required=args.sets == "wordnet")
    names = list(hierarchy.names) if hierarchy is not None else classes
    picked = [resolve_class(c, classes, names) for c in (args.classes or ["0", "1", "2"])]
    if len(set(picked)) != 3:
        raise SystemExit(f"--classes must name 3 distinct classes, got {args.classes}")

    # One pass per model: centroids, accuracy and the features of the three classes, which
    # are projected on the plane of that model's templates (final-layer rows, with biases).
    entropy = TargetEntropy(args.entropy_temperatures or args.temperatures)
    measured: dict[str, Measurement] = {}
    panels = {}

    def analyse(key: str, model: nn.Module, on_logits: Any = None) -> None:
        m = measure(model, loader, len(classes), picked, device, on_logits)
        measured[key] = m
        panels[key] = (
            muller_projection(m.features, templates_from_linear(model, picked)),
            m.labels,
        )

    analyse("teacher", teacher, on_logits=entropy.update)  # its logits give the target entropy
    for path, t in zip(args.students, args.temperatures, strict=True):
        student, ckpt = load_checkpoint(path, device)
        check_classes(ckpt, classes, f"student {path}")
        analyse(f"student T={t:g}", student)

    lines = [f"# Analysis of {args.data}", "", "| model | accuracy |", "|---|---:|"]
    lines += [f"| {k} | {m.accuracy:.2%} |" for k, m in measured.items()]
    print("\n".join(lines[2:]))

    # Diffusion index from T0 to every other temperature.
    t0 = args.temperatures[0]
    c0 = measured[f"student T={t0:g}"].centroids
    tables: dict[float, DiffusionIndexTable] = {}
    if len(args.temperatures) > 1:
        wordnet = hierarchy if args.sets != "feature" else None
        sets = choose_sets(args, classes, names, wordnet, c0)
        lines += ["", "## Diffusion index", "", f"Class sets: {sets.source}."]
        print(f"\nclass sets: {sets.source}")
        for t1 in args.temperatures[1:]:
            c1 = measured[f"student T={t1:g}"].centroids
            table = diffusion_indices(
                c0, c1, sets.targets, sets.similar, sets.dissimilar, reference=args.reference
            )
            tables[t1] = table
            stem = f"diffusion_T{t0:g}_to_T{t1:g}"
            table.to_csv(out / f"{stem}.csv", names=names)
            markdown = table.to_markdown(names=names)
            (out / f"{stem}.md").write_text(markdown + "\n", encoding="utf-8")
            title = f"T0 = {t0:g} → T1 = {t1:g}"
            share = f"systematic diffusion in {table.fraction_systematic:.0%} of the classes"
            lines += ["", f"### {title}", "", markdown, "", share + "."]
            print(f"\ndiffusion index {title} (%)\n{table.to_text(names=names)}\n{share}")
        chart = plot_diffusion_index(tables, out / "diffusion_index.png", t0=t0)
        lines += ["", f"![diffusion index]({chart.name})"]
    else:
        print("one student only: no diffusion index (give two or more temperatures)")

    # Müller projection of the three classes, one panel per model.
    figure = plot_projections(
        panels, out / "projection.png", class_names=names, title="penultimate-layer features"
    )
    lines += ["", "## Müller projection", "", f"![projection]({figure.name})"]

    report = entropy.compute()
    entropy_md = entropy_markdown(report)
    (out / "target_entropy.md").write_text(entropy_md + "\n", encoding="utf-8")
    csv_rows = ["temperature,entropy_nats,normalized"]
    csv_rows += [
        f"{t:g},{h!r},{r!r}"
        for t, h, r in zip(report.temperatures, report.entropy, report.normalized, strict=True)
    ]
    (out / "target_entropy.csv").write_text("\n".join(csv_rows) + "\n", encoding="utf-8")
    lines += ["", "## Teacher target entropy", "", entropy_md]
    print(f"\nteacher target entropy\n{report}")

    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"\nwrote {out}/: report.md, projection.png" + (", diffusion_*" if tables else ""))
    return {
        "accuracy": {k: m.accuracy for k, m in measured.items()},
        "tables": tables,
        "entropy": report,
        "names": names,
        "out": str(out),
    }


if __name__ == "__main__":
    main()
