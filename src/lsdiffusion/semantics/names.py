"""Class references and their lookup: wnids, synset names, lemma names, close matches.

The rules every class hierarchy shares for reading what a user types: a wnid
(`"n02099601"`), an nltk synset name (`"golden_retriever.n.01"`), an index
given as ASCII digits (`"207"`) or a lemma name, matched ignoring case and
treating `_`, `-` and spaces alike ([`normalize_name`][lsdiffusion.semantics.names.normalize_name]).
[`NameIndex`][lsdiffusion.semantics.names.NameIndex] maps normalised lemmas to
classes and proposes close matches for a name that matches none.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

__all__ = [
    "ECHO_LIMIT",
    "ClassLookupError",
    "NameIndex",
    "echo",
    "is_index_text",
    "is_synset_name",
    "is_wnid",
    "normalize_name",
]

ECHO_LIMIT = 60
"""Longest user input an error message echoes in full."""

_WNID_RE = re.compile(r"^[nvasr][0-9]{8}$")
_INDEX_RE = re.compile(r"^[+-]?[0-9]+$")  # ASCII digits only: int("²") raises, int("٣") is 3
_SYNSET_NAME_RE = re.compile(r"^\S+\.[nvasr]\.\d+$")


class ClassLookupError(ValueError, LookupError):
    """A class reference (index, wnid or name) that names no class, or several."""


def is_wnid(text: str) -> bool:
    """Whether `text` is a WordNet id: part of speech + 8 digits (`"n02099601"`)."""
    return _WNID_RE.match(text) is not None


def is_synset_name(text: str) -> bool:
    """Whether `text` has the form of an nltk synset name (`"apple.n.01"`)."""
    return _SYNSET_NAME_RE.match(text) is not None


def is_index_text(text: str) -> bool:
    """Whether `text` is an integer written in ASCII digits (`"207"`, `"-1"`; not `"²"`)."""
    return _INDEX_RE.match(text) is not None


def echo(text: str) -> str:
    """`repr(text)`, cut to [`ECHO_LIMIT`][lsdiffusion.semantics.names.ECHO_LIMIT] characters.

    Examples:
        >>> echo("a" * 100)
        "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' (100 characters)"
    """
    if len(text) <= ECHO_LIMIT:
        return repr(text)
    return f"{text[:ECHO_LIMIT]!r}"[:-1] + f"…' ({len(text)} characters)"


def normalize_name(name: str) -> str:
    """Casefold, treat `_` and `-` as spaces and collapse whitespace.

    Examples:
        >>> normalize_name("  Golden_Retriever ")
        'golden retriever'
    """
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


class NameIndex:
    """Classes by every lemma name, normalised; close matches for unknown names.

    Args:
        lemmas: per class (in class-index order), its lemma names.

    Examples:
        >>> idx = NameIndex([("golden_retriever",), ("Labrador_retriever", "Labrador")])
        >>> idx.classes("labrador"), idx.classes("retriever")
        ([1], [])
        >>> idx.close_matches("retriever")
        ['golden retriever', 'Labrador retriever']
    """

    def __init__(self, lemmas: Iterable[Iterable[str]]) -> None:
        by_name: dict[str, list[int]] = {}
        spelled: dict[str, str] = {}
        for i, names in enumerate(lemmas):
            for lemma in names:
                key = normalize_name(lemma)
                spelled.setdefault(key, lemma.replace("_", " "))
                if i not in by_name.setdefault(key, []):
                    by_name[key].append(i)
        self._by_name = by_name
        self._spelled = spelled

    def classes(self, name: str) -> list[int]:
        """The classes that `name` names (normalised): none, one or several."""
        return list(self._by_name.get(normalize_name(name), []))

    def close_matches(self, name: str, n: int = 5) -> list[str]:
        """Up to `n` known names, as spelled, holding `name` as a word, then similar ones."""
        key = normalize_name(name)
        # (a name far longer than any class name has no close match: skip the work)
        word = re.compile(rf"\b{re.escape(key)}\b") if 0 < len(key) <= 200 else None
        close = [k for k in self._by_name if word is not None and word.search(k)][:n]
        close += [
            k
            for k in difflib.get_close_matches(key[:200], list(self._by_name), n=n, cutoff=0.6)
            if k not in close
        ]
        return [self._spelled[k] for k in close]
