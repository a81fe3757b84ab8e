"""Write a tiny synthetic ImageFolder with ImageNet wnid class folders, to try the examples.

    python examples/make_data.py --out data/

Layout (torchvision's ImageFolder): ``OUT/train/<wnid>/*.png`` and
``OUT/val/<wnid>/*.png``. The default classes are two retrievers and two
vessels (golden retriever, Labrador retriever, container ship, submarine), so
``analyze.py`` finds WordNet siblings (the retrievers) and distant classes (the
vessels) without any download. Each class has its own colour and stripe
orientation, plus noise: a small CNN learns them in a few epochs on a CPU.

Needs Pillow (installed with matplotlib: ``pip install ".[plot]"``).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# golden retriever, Labrador retriever, container ship, submarine (sorted = class order)
DEFAULT_WNIDS = ("n02099601", "n02099712", "n03095699", "n04347754")
WNID = re.compile(r"^n[0-9]{8}$")


def write_image_folder(
    root: str | Path,
    per_split: dict[str, int],
    *,
    wnids: Sequence[str] = DEFAULT_WNIDS,
    size: int = 32,
    seed: int = 0,
) -> list[Path]:
    """Write ``per_split[split]`` PNGs per class under ``root/<split>/<wnid>/``; return the files.

    Class ``k`` gets colour ``((k & 1) * 180 + 40, (k >> 1 & 1) * 180 + 40, 120 + 40 * (k >> 2))``
    and horizontal (even ``k``) or vertical (odd ``k``) stripes, plus Gaussian
    noise of std 25: learnable, not trivial.
    """
    from PIL import Image

    if size < 4:
        raise ValueError(f"size must be >= 4 pixels, got {size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    step = max(1, size // 8)
    written = []
    for split, count in per_split.items():
        for k, wnid in enumerate(wnids):
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            colour = np.array(
                [(k & 1) * 180 + 40, (k >> 1 & 1) * 180 + 40, 120 + 40 * (k >> 2 & 3)],
                dtype=np.float64,
            )
            stripes = ((xx if k % 2 else yy) // step % 2)[..., None] * 50.0
            for i in range(count):
                pixels = colour + stripes + rng.normal(0, 25, size=(size, size, 3))
                image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
                path = folder / f"{wnid}_{i}.png"
                image.save(path)
                written.append(path)
    return written


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, default=Path("data"), help="root folder (default: data)"
    )
    parser.add_argument(
        "--classes",
        nargs="+",
        default=list(DEFAULT_WNIDS),
        metavar="WNID",
        help="class folders, ImageNet wnids (default: " + " ".join(DEFAULT_WNIDS) + ")",
    )
    parser.add_argument(
        "--train", type=int, default=32, help="training images per class (default: 32)"
    )
    parser.add_argument(
        "--val", type=int, default=16, help="validation images per class (default: 16)"
    )
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default: 32)")
    parser.add_argument("--seed", type=int, default=0, help="(default: 0)")
    args = parser.parse_args(argv)
    bad = [c for c in args.classes if not WNID.match(c)]
    if bad:
        parser.error(f"--classes must be wnids such as n02099601, got {bad[:3]}")
    if len(set(args.classes)) != len(args.classes):
        parser.error(f"--classes must be distinct, got {args.classes}")
    for flag in ("train", "val"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1, got {getattr(args, flag)}")
    if args.size < 4:
        parser.error(f"--size must be >= 4, got {args.size}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    files = write_image_folder(
        args.out,
        {"train": args.train, "val": args.val},
        wnids=sorted(args.classes),
        size=args.size,
        seed=args.seed,
    )
    print(
        f"wrote {len(files)} images of {len(args.classes)} classes "
        f"({args.train} train + {args.val} val each, {args.size}x{args.size}) into {args.out}"
    )
    return {"root": args.out, "files": files}


if __name__ == "__main__":
    main()
