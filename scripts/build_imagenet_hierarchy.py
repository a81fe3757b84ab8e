"""Regenerate lsdiffusion's embedded ImageNet-1K hierarchy from WordNet 3.0.

Reads the ImageNet-1K wnids in class-index order (one per line, first
whitespace-separated field; default: the list shipped in the package, or e.g.
timm's ``timm/data/_info/imagenet_synsets.txt``), looks every class and all its
hypernym ancestors up in WordNet through nltk, and writes

* ``imagenet1k_wnids.txt``: the wnids, one per line;
* ``imagenet1k_hierarchy.tsv.gz``: classes + ancestors (see
  ``ClassHierarchy.to_text``), gzip'd without time stamp, so reruns are
  byte-identical.

WordNet comes from nltk's usual search path, ``--nltk-data DIR``, or a system
copy (``--wordnet-source /usr/share/wordnet``, Debian's ``wordnet-base``),
which is first copied into a temporary nltk data folder. Never downloads.

    python scripts/build_imagenet_hierarchy.py --wordnet-source /usr/share/wordnet
    python scripts/build_imagenet_hierarchy.py --wordnet-source /usr/share/wordnet --check
"""

from __future__ import annotations

import argparse
import gzip
import sys
import tempfile
from pathlib import Path

from lsdiffusion.semantics import ClassHierarchy, prepare_wordnet_corpus, wordnet_hierarchy

DATA_DIR = Path(__file__).resolve().parents[1] / "src" / "lsdiffusion" / "semantics" / "data"
WNIDS = "imagenet1k_wnids.txt"
HIERARCHY = "imagenet1k_hierarchy.tsv.gz"


def read_wnids(path: Path) -> list[str]:
    wnids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if len(wnids) != 1000:
        raise SystemExit(f"{path}: expected the 1000 ImageNet-1K wnids, got {len(wnids)} lines")
    return wnids


def build(wnids: list[str], nltk_data: Path | None) -> ClassHierarchy:
    return wordnet_hierarchy(wnids, nltk_data=nltk_data, embedded=False)  # from WordNet itself


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wnids", type=Path, default=DATA_DIR / WNIDS, help="wnid list")
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR, help="where to write")
    parser.add_argument("--nltk-data", type=Path, help="nltk data folder with corpora/wordnet")
    parser.add_argument(
        "--wordnet-source", type=Path, help="system WordNet folder, e.g. /usr/share/wordnet"
    )
    parser.add_argument(
        "--check", action="store_true", help="compare with the files in --out-dir, write nothing"
    )
    args = parser.parse_args(argv)

    wnids = read_wnids(args.wnids)
    with tempfile.TemporaryDirectory() as tmp:
        nltk_data = args.nltk_data
        if args.wordnet_source is not None:
            nltk_data = prepare_wordnet_corpus(tmp, args.wordnet_source)
        hierarchy = build(wnids, nltk_data)
    wnid_text = "".join(w + "\n" for w in wnids)
    out_wnids, out_hier = args.out_dir / WNIDS, args.out_dir / HIERARCHY
    if args.check:
        ok = out_wnids.is_file() and out_wnids.read_text() == wnid_text
        ok = (
            ok
            and out_hier.is_file()
            and (gzip.decompress(out_hier.read_bytes()).decode("utf-8") == hierarchy.to_text())
        )
        print(f"{'up to date' if ok else 'OUT OF DATE'}: {out_wnids}, {out_hier}")
        return 0 if ok else 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_wnids.write_text(wnid_text)
    hierarchy.save(out_hier)
    print(
        f"wrote {out_wnids} ({len(wnids)} wnids) and {out_hier} "
        f"({len(hierarchy.records)} synsets, {out_hier.stat().st_size} bytes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
