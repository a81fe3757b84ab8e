"""The TSV file format of a class hierarchy: write, parse, gzip.

One line per synset, tab-separated: `wnid`, `synset` (nltk name), `class`
(index, empty for ancestors), `parents` (space-separated wnids, sorted),
`lemmas` (space-separated, WordNet order). The classes come first in index
order, then the other synsets by wnid; lines starting with `#` are comments.
A space or `%` inside a lemma is written `%20` / `%25` so that every name
comes back as it was saved (`'big cat'` stays one lemma); a tab, newline or
carriage return in any field cannot be written and raises.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

from lsdiffusion.semantics.graph import SynsetRecord

__all__ = [
    "HEADER",
    "decode_hierarchy_bytes",
    "format_hierarchy",
    "parse_hierarchy",
    "read_hierarchy_file",
    "write_hierarchy_file",
]

HEADER = ("wnid", "synset", "class", "parents", "lemmas")
"""The column names, the first non-comment line of a file."""

_FORBIDDEN = ("\t", "\n", "\r")


def _check_field(what: str, value: str) -> None:
    bad = [repr(ch) for ch in _FORBIDDEN if ch in value]
    if bad:
        raise ValueError(
            f"{what} must not contain {' or '.join(bad)} to be saved as TSV, got {value!r}"
        )


def _check_token(what: str, value: str) -> None:
    """A wnid: one whitespace-free token (it is written space-separated among parents)."""
    if not value or value.split() != [value]:
        raise ValueError(f"{what} must be a non-empty wnid without whitespace, got {value!r}")


def _encode_lemma(lemma: str) -> str:
    return lemma.replace("%", "%25").replace(" ", "%20")


def _decode_lemma(text: str) -> str:
    return text.replace("%20", " ").replace("%25", "%")


def format_hierarchy(
    records: Sequence[SynsetRecord], classes: Sequence[str], source: str = ""
) -> str:
    """The TSV text of a hierarchy (format in the module doc).

    Args:
        records: every synset (classes and ancestors), any order.
        classes: the class wnids in class-index order.
        source: free text written as a `# source:` comment.

    Raises:
        ValueError: a field holding a tab, newline or carriage return, a wnid
            holding whitespace, or a synset without a lemma.
    """
    _check_field("source", source)
    out = io.StringIO()
    out.write("# lsdiffusion class hierarchy v1: classes and all their hypernym ancestors\n")
    if source:
        out.write(f"# source: {source}\n")
    out.write("\t".join(HEADER) + "\n")
    index = {wnid: i for i, wnid in enumerate(classes)}
    by_wnid = {rec.wnid: rec for rec in records}
    rest = sorted(rec.wnid for rec in records if rec.wnid not in index)
    for wnid in [*classes, *rest]:
        rec = by_wnid[wnid]
        _check_token("wnid", rec.wnid)
        _check_field(f"synset name of {rec.wnid}", rec.name)
        for p in rec.parents:
            _check_token(f"parent of {rec.wnid}", p)
        if not rec.lemmas:
            raise ValueError(f"synset {rec.wnid} ({rec.name}) must have at least one lemma")
        for lemma in rec.lemmas:
            _check_field(f"lemma of {rec.wnid}", lemma)
        cls = index.get(wnid)
        out.write(
            f"{rec.wnid}\t{rec.name}\t{'' if cls is None else cls}\t"
            f"{' '.join(sorted(set(rec.parents)))}\t"
            f"{' '.join(_encode_lemma(lemma) for lemma in rec.lemmas)}\n"
        )
    return out.getvalue()


def parse_hierarchy(text: str) -> tuple[list[SynsetRecord], list[str], str]:
    """Parse [`format_hierarchy`][lsdiffusion.semantics.hierarchy_file.format_hierarchy]'s text.

    Returns:
        `(records, classes, source)`: the synsets, the class wnids in index
        order and the source comment.

    Raises:
        ValueError: no header, a wrong header, a line with the wrong number of
            fields or without a lemma, or class indices with gaps or repeats.
    """
    with _gc_paused():
        return _parse(text)


def _parse(text: str) -> tuple[list[SynsetRecord], list[str], str]:
    source = ""
    header: list[str] | None = None
    records: list[SynsetRecord] = []
    classes: dict[int, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if line.startswith("#"):
            if line.startswith("# source: "):
                source = line[len("# source: ") :]
            continue
        fields = line.split("\t")
        if header is None:
            header = fields
            if tuple(header) != HEADER:
                raise ValueError(
                    f"hierarchy file must start with the header {HEADER}, got {tuple(fields)}"
                )
            continue
        if len(fields) != len(HEADER):
            raise ValueError(
                f"hierarchy line {lineno} must have {len(HEADER)} tab-separated fields, "
                f"got {len(fields)}: {line!r}"
            )
        wnid, name, cls_field, parents, lemmas = fields
        if not lemmas.split():
            raise ValueError(f"hierarchy line {lineno} must list at least one lemma: {line!r}")
        records.append(
            SynsetRecord(
                wnid, name, tuple(parents.split()), tuple(map(_decode_lemma, lemmas.split()))
            )
        )
        if cls_field:
            idx = int(cls_field)
            if idx in classes:
                raise ValueError(f"hierarchy line {lineno}: class index {idx} appears twice")
            classes[idx] = wnid
    if header is None:
        raise ValueError("hierarchy file is empty: no header line")
    if sorted(classes) != list(range(len(classes))):
        raise ValueError(
            f"hierarchy class indices must be 0..{len(classes) - 1} without gaps, got "
            f"{sorted(set(range(len(classes))) ^ set(classes))[:10]} wrong"
        )
    return records, [classes[i] for i in range(len(classes))], source


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building many small acyclic objects.

    Loading creates ~20k tuples and strings; in a process that already holds
    torch's objects, the full collections this triggers cost more than the
    loading itself.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def decode_hierarchy_bytes(raw: bytes) -> str:
    """The text of a hierarchy file's bytes, gunzipped when they are gzip."""
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def write_hierarchy_file(path: str | Path, text: str) -> None:
    """Write `text` to `path`, gzip'd when it ends in `.gz`.

    The gzip header carries no time stamp or file name, so identical
    hierarchies give identical files.
    """
    data = text.encode("utf-8")
    target = Path(path)
    if target.suffix == ".gz":
        with (
            target.open("wb") as raw,
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        ):
            gz.write(data)
    else:
        target.write_bytes(data)


def read_hierarchy_file(path: str | Path) -> str:
    """The text of a file written by `write_hierarchy_file` (gzip'd or not)."""
    return decode_hierarchy_bytes(Path(path).read_bytes())
