"""Class hierarchies for any class list through nltk's WordNet (imported lazily).

Use this for ImageNet-21k wnids, CIFAR-100 names or your own synsets; the
resulting [`ClassHierarchy`][lsdiffusion.ClassHierarchy] applies exactly the
rules of the embedded ImageNet-1K one, and can be saved for offline use.

nltk and its WordNet corpus are optional. Nothing here ever downloads: when
either is missing,
[`WordNetUnavailableError`][lsdiffusion.semantics.wordnet.WordNetUnavailableError] says how to
install it.
"""

from __future__ import annotations

import difflib
import os
import shutil
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, NamedTuple

from lsdiffusion.semantics.graph import SynsetRecord
from lsdiffusion.semantics.hierarchy import ClassHierarchy
from lsdiffusion.semantics.names import ClassLookupError, echo, is_synset_name, is_wnid

__all__ = [
    "ClassListError",
    "ClassProblem",
    "WordNetUnavailableError",
    "load_wordnet",
    "prepare_wordnet_corpus",
    "wordnet_hierarchy",
]

_INSTALL_HELP = """\
To install WordNet for nltk (lsdiffusion never downloads anything):
  1. the Python package nltk (a dependency of lsdiffusion): pip install nltk
  2. the WordNet 3.0 corpus, one of:
     - on a machine with network access: python -c 'import nltk; nltk.download("wordnet")'
       (copy the resulting nltk_data folder to offline machines);
     - set NLTK_DATA (or pass nltk_data=...) to a folder that holds corpora/wordnet/;
     - on Debian/Ubuntu: apt-get install wordnet-base, then
       python -c 'from lsdiffusion.semantics import prepare_wordnet_corpus as p; p("DIR")'
       and set NLTK_DATA=DIR.
The ImageNet-1K hierarchy ships with lsdiffusion and needs none of this."""


class ClassProblem(NamedTuple):
    """One class of a list that `wordnet_hierarchy` could not resolve.

    Attributes:
        position: its index in the class list.
        ref: the class reference as given.
        reason: why, in words (close matches included).
        senses: for an ambiguous lemma, the synset names of its noun senses,
            most frequent first; empty otherwise.
    """

    position: int
    ref: str
    reason: str
    senses: tuple[str, ...] = ()


class ClassListError(ClassLookupError):
    """Every class of a list that names no WordNet synset, or several, reported at once.

    Attributes:
        problems: one [`ClassProblem`][lsdiffusion.semantics.wordnet.ClassProblem] per such class,
            in list order.
    """

    def __init__(self, problems: Sequence[ClassProblem], advice: str) -> None:
        self.problems = tuple(problems)
        lines = "; ".join(f"[{p.position}] {p.reason}" for p in self.problems)
        what = "class" if len(self.problems) == 1 else "classes"
        super().__init__(f"{len(self.problems)} {what} of the list: {lines}. {advice}")


class WordNetUnavailableError(ImportError):
    """nltk, or its WordNet corpus, is not installed; the message says how to install it."""


def prepare_wordnet_corpus(dest: str | Path, source: str | Path = "/usr/share/wordnet") -> Path:
    """Make an nltk data folder holding WordNet from a system copy (e.g. Debian's).

    Copies the database files of ``source`` (Debian/Ubuntu ``wordnet-base``
    installs them in ``/usr/share/wordnet``) into ``dest/corpora/wordnet/``,
    adding the ``lexnames`` file nltk needs and Debian lacks (a copy ships with
    lsdiffusion). Files are copied, not linked: nltk >= 3.10 refuses symlinked
    or hard-linked corpus files. Existing files in the target are replaced.

    Args:
        dest: folder to use as an nltk data directory.
        source: folder with WordNet's ``data.noun``, ``index.noun``, ...

    Returns:
        ``dest`` as a `Path`; point ``NLTK_DATA`` at it or pass
        it as ``nltk_data=`` to
        [`wordnet_hierarchy`][lsdiffusion.semantics.wordnet.wordnet_hierarchy].

    Raises:
        FileNotFoundError: ``source`` lacks ``data.noun`` or ``index.noun``.

    Examples:
        >>> import os, tempfile
        >>> from lsdiffusion.semantics import prepare_wordnet_corpus
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     if os.path.isfile("/usr/share/wordnet/data.noun"):  # Debian's wordnet-base
        ...         folder = prepare_wordnet_corpus(tmp)
        ...         assert (folder / "corpora" / "wordnet" / "lexnames").is_file()
    """
    src = Path(source)
    missing = [f for f in ("data.noun", "index.noun") if not (src / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"source must be a WordNet database folder holding data.noun and index.noun, "
            f"got {str(src)!r} without {missing} (on Debian/Ubuntu: apt-get install wordnet-base)"
        )
    root = Path(dest)
    target = root / "corpora" / "wordnet"
    target.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.is_file():  # follows symlinks: the copy is a regular file
            _copy(entry, target / entry.name)
    if not (src / "lexnames").is_file():
        bundled = resources.files("lsdiffusion.semantics") / "data" / "lexnames"
        out = target / "lexnames"
        if out.is_symlink() or out.exists():
            out.unlink()
        out.write_bytes(bundled.read_bytes())
    return root


def _copy(src: Path, dst: Path) -> None:
    if dst.is_symlink() or dst.exists():
        dst.unlink()  # never write through a link, never keep a hard link
    shutil.copyfile(src, dst)


def load_wordnet(nltk_data: str | Path | None = None) -> Any:
    """Return nltk's WordNet corpus reader, loaded; never downloads.

    Args:
        nltk_data: an nltk data folder (holding ``corpora/wordnet``) to search
            first; it is added to ``nltk.data.path``. By default nltk searches
            ``NLTK_DATA`` and its usual folders.

    Raises:
        WordNetUnavailableError: nltk or the corpus is missing; the message
            lists the ways to install them.
    """
    try:
        import nltk
    except ImportError as exc:
        raise WordNetUnavailableError(
            f"nltk is not installed; it is needed to build class hierarchies from "
            f"WordNet.\n{_INSTALL_HELP}"
        ) from exc
    if nltk_data is not None:
        folder = Path(nltk_data)
        if not (folder / "corpora" / "wordnet").is_dir():
            raise WordNetUnavailableError(
                f"nltk_data must be a folder holding corpora/wordnet/, got {str(folder)!r}"
                f"\n{_INSTALL_HELP}"
            )
        entry = os.fspath(folder.resolve())
        if entry not in nltk.data.path:
            nltk.data.path.insert(0, entry)
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError as exc:
        searched = "\n".join(f"  - {p}" for p in nltk.data.path)
        raise WordNetUnavailableError(
            f"nltk's WordNet corpus was not found; nltk searched:\n{searched}\n{_INSTALL_HELP}"
        ) from exc
    return wordnet


def wordnet_hierarchy(
    classes: Sequence[str],
    *,
    on_ambiguous: Literal["raise", "first"] = "raise",
    nltk_data: str | Path | None = None,
    embedded: bool = True,
) -> ClassHierarchy:
    """Build a [`ClassHierarchy`][lsdiffusion.ClassHierarchy] for any classes via nltk.

    Each class is one of:

    * a wnid (``"n02099601"``: part of speech + WordNet 3.0 offset, as in
      ImageNet-1K and ImageNet-21k);
    * an nltk synset name (``"apple.n.01"``);
    * a noun lemma (``"maple_tree"``, ``"golden retriever"``, a CIFAR-100
      name). A lemma with several noun senses is an error that lists them
      unless ``on_ambiguous="first"``, which takes WordNet's first (most
      frequent) sense.

    When every class is a wnid of ImageNet-1K (any subset, any order) and
    `embedded` is True, the hierarchy comes from the embedded ImageNet-1K one
    (the same WordNet 3.0 synsets, restricted to these classes and their
    ancestors): no nltk, no corpus, no loading time.

    Parents are the hypernyms and instance hypernyms, and all ancestors over
    every path are kept, so the class sets follow the same rules as the
    embedded ImageNet-1K hierarchy. Save the result with
    [`ClassHierarchy.save`][lsdiffusion.semantics.hierarchy.ClassHierarchy.save] to use it without
    nltk later. Loading the corpus takes a few seconds.

    Args:
        classes: the class references, in class-index order.
        on_ambiguous: what to do with a lemma that has several noun senses.
        nltk_data: optional nltk data folder, see
            [`load_wordnet`][lsdiffusion.semantics.wordnet.load_wordnet].
        embedded: use the embedded ImageNet-1K hierarchy for ImageNet-1K wnids
            (default); `False` always reads WordNet through nltk.

    Raises:
        WordNetUnavailableError: nltk or its WordNet corpus is missing.
        ClassListError: (a [`ClassLookupError`][lsdiffusion.semantics.names.ClassLookupError])
            classes that name no synset (close matches are listed), or ambiguous lemmas with
            ``on_ambiguous="raise"``: every one of them at once, in
            `ClassListError.problems`.
        ValueError: duplicate classes; wnids with a WordNet other than 3.0.
    """
    if on_ambiguous not in ("raise", "first"):
        raise ValueError(f"on_ambiguous must be 'raise' or 'first', got {on_ambiguous!r}")
    if isinstance(classes, str):
        raise TypeError("classes must be a sequence of str, got a single str")
    if not isinstance(embedded, bool):
        raise TypeError(f"embedded must be a bool (True or False), got {embedded!r}")
    if embedded:
        subset = _imagenet_subset(classes)
        if subset is not None:
            return subset
    wn = load_wordnet(nltk_data)
    version = str(wn.get_version())
    synsets = []
    problems: list[ClassProblem] = []
    for position, ref in enumerate(classes):
        found = _resolve(wn, ref, version)
        if isinstance(found, tuple):  # (reason, senses)
            reason, senses = found
            if len(senses) > 1 and on_ambiguous == "first":
                synsets.append(wn.synset(senses[0]))
                continue
            problems.append(ClassProblem(position, ref, reason, senses))
        else:
            synsets.append(found)
    if problems:
        advice = "Pass a lemma, a synset name (e.g. 'apple.n.01') or a wnid for each" + (
            "; for the ambiguous ones, on_ambiguous='first' takes the most frequent sense"
            if any(p.senses for p in problems)
            else ""
        )
        raise ClassListError(problems, advice)
    seen: dict[str, int] = {}
    for i, s in enumerate(synsets):
        if s.name() in seen:
            raise ValueError(
                f"classes must name distinct synsets: {echo(classes[seen[s.name()]])} (index "
                f"{seen[s.name()]}) and {echo(classes[i])} (index {i}) are both {s.name()}"
            )
        seen[s.name()] = i
    records: dict[str, SynsetRecord] = {}
    todo = list(synsets)
    while todo:
        s = todo.pop()
        wnid = _wnid(s)
        if wnid in records:
            continue
        parents = list(s.hypernyms()) + list(s.instance_hypernyms())
        records[wnid] = SynsetRecord(
            wnid, s.name(), tuple(sorted(_wnid(p) for p in parents)), tuple(s.lemma_names())
        )
        todo.extend(parents)
    return ClassHierarchy(
        records.values(), [_wnid(s) for s in synsets], source=f"WordNet {version}"
    )


def _imagenet_subset(classes: Sequence[str]) -> ClassHierarchy | None:
    """The embedded hierarchy restricted to `classes`, when all are distinct ImageNet-1K wnids."""
    from lsdiffusion.semantics.imagenet import imagenet1k_hierarchy, imagenet1k_wnids

    known = set(imagenet1k_wnids())
    refs = [c.strip() if isinstance(c, str) else c for c in classes]
    if not refs or not all(isinstance(c, str) and c in known for c in refs):
        return None
    if len(set(refs)) != len(refs):
        return None  # the nltk path reports the duplicate
    full = imagenet1k_hierarchy()
    by_wnid = {rec.wnid: rec for rec in full.records}
    keep: dict[str, SynsetRecord] = {}
    todo = list(refs)
    while todo:
        wnid = todo.pop()
        if wnid not in keep:
            keep[wnid] = by_wnid[wnid]
            todo.extend(by_wnid[wnid].parents)
    return ClassHierarchy(keep.values(), refs, source=full.source)


def _wnid(synset: Any) -> str:
    pos = synset.pos()
    return f"{'a' if pos == 's' else pos}{synset.offset():08d}"


def _resolve(wn: Any, ref: str, version: str) -> Any:
    """The synset of ``ref``, or ``(reason, senses)`` when it names none or several."""
    if not isinstance(ref, str):
        raise TypeError(f"classes must be str (wnid, synset name or lemma), got {ref!r}")
    from nltk.corpus.reader.wordnet import WordNetError

    text = ref.strip()
    if is_wnid(text):
        if version != "3.0":
            raise ValueError(
                f"wnids are WordNet 3.0 offsets, but nltk loaded WordNet {version}; "
                "install the 3.0 corpus (nltk's 'wordnet')"
            )
        try:
            with warnings.catch_warnings():  # nltk >= 3.9 warns and returns None
                warnings.simplefilter("ignore")
                found = wn.synset_from_pos_and_offset(text[0], int(text[1:]))
        except (WordNetError, ValueError):
            found = None
        if found is None:
            return f"{echo(ref)} is not a WordNet {version} wnid", ()
        return found
    if is_synset_name(text):
        try:
            return wn.synset(text)
        except (WordNetError, ValueError):
            return f"{echo(ref)} is not a WordNet synset name", ()
    lemma = "_".join(text.split())
    found = wn.synsets(lemma, pos="n")
    if not found:
        close = difflib.get_close_matches(lemma.lower(), list(wn.all_lemma_names(pos="n")), n=5)
        hint = f"; close matches: {close}" if close else ""
        words = [w for w in lemma.split("_") if len(lemma.split("_")) > 1 and wn.synsets(w, "n")]
        if words:
            hint += f"; its words that are nouns: {words[:10]}"
        return f"{echo(ref)} is not a WordNet noun{hint}", ()
    if len(found) > 1:
        senses = "; ".join(f"{s.name()} ({s.definition()})" for s in found[:8])
        more = f"; and {len(found) - 8} more" if len(found) > 8 else ""
        return (
            f"{echo(ref)} has {len(found)} noun senses: {senses}{more}",
            tuple(s.name() for s in found),
        )
    return found[0]
