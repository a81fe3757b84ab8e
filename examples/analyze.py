r"""Measure systematic diffusion of the example checkpoints with ``lsdiffusion analyze``.

    python examples/analyze.py --data data/ --teacher teacher_ls.pt \
        --students student_T1.pt student_T3.pt --temperatures 1 3 --out analysis/

This script only fills in what the example checkpoints know (their architecture,
``--model common:TinyCNN`` or ``torchvision:resnet18``, and the teacher's image
size) and runs ``lsdiffusion analyze`` (see ``lsdiffusion analyze --help`` and
docs/examples.md): Table 3 with its significance, the cluster geometry of every
model, the Müller projection of three classes and the teacher's target entropy,
written to ``--out`` with ``report.md``. For your own checkpoints call
``lsdiffusion analyze`` directly.

Class sets: ``--sets wordnet`` (ImageNet wnid folders; the default for them),
``--sets cifar100`` (the 100 CIFAR-100 classes, matched by fine label name),
``--sets feature`` (distances between the centroids of ``--reference``, by
default the teacher: never the students being measured), or ``--similar A B
--dissimilar X Y`` (a hand-picked group).
"""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from common import add_common_args, check_common, finish_args

from lsdiffusion.analyze import SET_CHOICES, analyze, check_arguments

ARCH_MODELS = {"tiny": "common:TinyCNN", "resnet18": "torchvision:resnet18"}


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_args(parser)
    parser.set_defaults(image_size=None)  # default: the teacher's
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--students", type=Path, nargs="+", required=True, help="one per T")
    parser.add_argument(
        "--temperatures", nargs="+", type=float, required=True, help="T of each student; first: T0"
    )
    parser.add_argument("--out", type=Path, default=Path("analysis"))
    parser.add_argument("--split", default="val", help="evaluation split folder (default: val)")
    parser.add_argument("--classes", nargs=3, default=None, help="the three projected classes")
    parser.add_argument("--sets", choices=SET_CHOICES, default="auto")
    parser.add_argument("--reference", type=Path, default=None, help="feature sets' model")
    parser.add_argument("--relative-to", choices=("union", "all"), default="union")
    parser.add_argument("--similar-frac", type=float, default=0.01, help="feature sets")
    parser.add_argument("--dissimilar-frac", type=float, default=0.9, help="feature sets")
    parser.add_argument("--similar", nargs="+", default=None, help="hand-picked group")
    parser.add_argument("--dissimilar", nargs="+", default=None, help="its dissimilar classes")
    parser.add_argument("--entropy-temperatures", nargs="+", type=float, default=None)
    args = finish_args(parser.parse_args(argv), keep_unset=("image_size",))
    return args, parser


def _architecture(path: Path, flag: str) -> tuple[str, int]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise ValueError(f"{flag} {path}: empty or cut short; not a torch file") from None
    except (pickle.UnpicklingError, OSError, RuntimeError):
        raise ValueError(
            f"{flag} {path}: not a checkpoint of the examples (a torch file written by "
            "examples/train_teacher.py or distill.py)"
        ) from None
    arch = ckpt.get("arch") if isinstance(ckpt, dict) else None
    if arch not in ARCH_MODELS:
        raise ValueError(f"{flag} {path} is not a checkpoint of the examples (arch {arch!r})")
    return ARCH_MODELS[arch], int(ckpt.get("meta", {}).get("image_size", 224))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args, parser = parse_args(argv)
    check_common(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # `common:TinyCNN` importable
    ns = argparse.Namespace(
        **{k: v for k, v in vars(args).items() if k not in ("quick", "threads", "loader", "seed")},
        model=None,
        layer=None,
        teacher_model=None,
        reference_model=None,
    )
    try:
        ns.image_size = ns.image_size or 224
        check_arguments(ns)  # everything checked before a checkpoint is read
        spec, image_size = _architecture(args.teacher, "--teacher")
        ns.teacher_model = spec
        ns.model = _architecture(args.students[0], "--students")[0]
        if args.reference is not None:
            ns.reference_model = _architecture(args.reference, "--reference")[0]
        ns.image_size = args.image_size or image_size
        torch.manual_seed(args.seed)
        return analyze(ns)
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


if __name__ == "__main__":
    main()
