"""Class hierarchies from WordNet: class lookup and semantic class sets (method 1).

A [`ClassHierarchy`][lsdiffusion.semantics.hierarchy.ClassHierarchy] holds the classes of a dataset
(ImageNet-1K, or any list of WordNet synsets) together with every hypernym ancestor they need, as a
directed acyclic graph (a synset may have several parents). From it come the
paper's WordNet class sets for a target class π:

* **Similar**, $S_{sim}(π)$: the *siblings* of π, i.e. the other classes
  that have one of π's immediate hypernyms as an immediate hypernym. When π has
  several immediate hypernyms the siblings under each of them are united. When
  π has no sibling, fall back to the *smallest ancestor subtree* that holds at
  least ``min_size`` classes besides π: among the ancestors ``v`` of π (over
  all hypernym paths, π itself included) with ``|classes under v| - 1 >=
  min_size``, take the one with the fewest classes (ties: the deepest, then the
  smallest wnid); $S_{sim}(π)$ is every class under it except π.
  With ``max_size`` set, a fallback set larger than ``max_size`` keeps only
  its ``max_size`` *closest* classes: deepest lowest common ancestor with π
  first, ties broken by the smaller class index. Sibling sets are never cut
  (they are the paper's definition: the retrievers, the snakes); without a
  cap, 14 of ImageNet's classes fall back to subtrees of over 100 classes
  (pillow and stage: all 521 artifacts).
* **Dissimilar**, $S_{dissim}(π)$: the classes ``c != π`` whose lowest
  common ancestor with π sits at depth ``<= dissimilar_depth``, except those
  already in $S_{sim}(π)$: the two sets never overlap. (An overlap needs
  a similar set taken under a synset at most ``dissimilar_depth`` deep; with
  the defaults this happens to 6 of ImageNet's 1000 classes, e.g. "cliff",
  whose similar set is the other classes under ``geological_formation.n.01``.)

**Several parents.** 75 of the 1860 synsets of ImageNet-1K's hierarchy (38
of the classes themselves, e.g. ``accordion.n.01``: a free-reed *and* a
keyboard instrument) have more than one immediate hypernym. No path is
preferred: siblings are united over all parents, ancestors are collected over
all paths (for the fallback subtree and for common ancestors), and depth uses
the longest path, as follows.

**Depth** of a synset is the length of its *longest* hypernym path to the root
(``entity.n.01`` has depth 0), as nltk's ``Synset.max_depth()``. With several
parents this is the one convention under which every ancestor is strictly
shallower than its descendants, so "the lowest common ancestor" is well
defined: the common ancestors of ``a`` and ``b`` are those reached through any
hypernym path of either, and the depth of their lowest common ancestor is the
largest depth among them (nltk's ``lowest_common_hypernyms``). Pairs with no
common ancestor (separate roots) get depth -1. With the minimum-path
convention ``dog.n.01`` (depth 13 here, 8 by its shortest path through
``domestic_animal.n.01``) would sit above some of its own ancestors.

ImageNet-1K's hierarchy ships with the package
([`lsdiffusion.semantics.imagenet`][lsdiffusion.semantics.imagenet], loaded on first use);
[`lsdiffusion.semantics.wordnet_hierarchy`][lsdiffusion.wordnet_hierarchy] builds one for any class
list through nltk.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import gzip
import io
import operator
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_DISSIMILAR_DEPTH",
    "DEFAULT_MIN_SIZE",
    "ClassHierarchy",
    "ClassLookupError",
    "ClassSetMasks",
    "ClassSets",
    "SimilarBasis",
    "SynsetRecord",
]

DEFAULT_MIN_SIZE = 1
"""Fallback size of the similar set: the nearest relatives, however few.

A class without siblings (323 of ImageNet-1K's 1000) gets the smallest
ancestor subtree holding any other class: the three sharks share
``shark.n.01``; the kite, bald eagle and vulture ``bird_of_prey.n.01``; the
daisy gets the yellow lady's slipper (``flower.n.01``). The median fallback
set has 4 classes, close to the siblings' median of 2. Larger values climb
fast: with 2 the daisy's smallest qualifying subtree is ``organism.n.01``
(409 classes, animals included).
"""

DEFAULT_DISSIMILAR_DEPTH = 3
"""Dissimilar = lowest common ancestor at depth <= 3 (``whole.n.02`` and above).

Living things and artifacts meet at ``whole.n.02`` (depth 3), so a dog's
dissimilar set is every ImageNet class that is not an organism, and a
submarine's is every class that is not an artifact.
"""

_HEADER = ("wnid", "synset", "class", "parents", "lemmas")
_WNID_RE = re.compile(r"^[nvasr][0-9]{8}$")
_INDEX_RE = re.compile(r"^[+-]?[0-9]+$")  # ASCII digits only: int("²") raises, int("٣") is 3
_ECHO_LIMIT = 60  # longest user input echoed in full by an error message
_SYNSET_NAME_RE = re.compile(r"^\S+\.[nvasr]\.\d+$")
_MASK_LIMIT = 4096  # above this many classes, class_sets works row by row


class ClassLookupError(ValueError, LookupError):
    """A class reference (index, wnid or name) that names no class, or several."""


class SynsetRecord(NamedTuple):
    """One synset of a [`ClassHierarchy`][lsdiffusion.semantics.hierarchy.ClassHierarchy].

    Attributes:
        wnid: WordNet id, part of speech + 8-digit offset (``"n02099601"``).
        name: nltk synset name (``"golden_retriever.n.01"``).
        parents: wnids of the immediate hypernyms (and instance hypernyms).
        lemmas: WordNet lemma names, the first one used for display
            (``("golden_retriever",)``).
    """

    wnid: str
    name: str
    parents: tuple[str, ...]
    lemmas: tuple[str, ...]


class ClassSets(NamedTuple):
    """Similar and dissimilar classes of one target, as ascending class indices."""

    similar: tuple[int, ...]
    dissimilar: tuple[int, ...]


class ClassSetMasks(NamedTuple):
    """Class sets of every target at once.

    Attributes:
        similar: ``(C, C)`` bool array, ``similar[t, c]`` is True when class
            ``c`` is in the similar set of target ``t``. The diagonal is False.
        dissimilar: ``(C, C)`` bool array, likewise.
    """

    similar: npt.NDArray[np.bool_]
    dissimilar: npt.NDArray[np.bool_]


class SimilarBasis(NamedTuple):
    """Where a similar set comes from.

    Attributes:
        kind: ``"siblings"`` (classes under an immediate hypernym) or
            ``"subtree"`` (the fallback ancestor subtree).
        synsets: synset names of the immediate hypernyms whose children were
            taken (``"siblings"``) or of the subtree's root (``"subtree"``).
    """

    kind: Literal["siblings", "subtree"]
    synsets: tuple[str, ...]


def _echo(text: str) -> str:
    """``repr(text)``, cut to `_ECHO_LIMIT` characters for error messages.

    Examples:
        >>> _echo("a" * 100)
        "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa…' (100 characters)"
    """
    if len(text) <= _ECHO_LIMIT:
        return repr(text)
    return f"{text[:_ECHO_LIMIT]!r}"[:-1] + f"…' ({len(text)} characters)"


def _normalize_name(name: str) -> str:
    """Casefold, treat ``_`` and ``-`` as spaces and collapse whitespace."""
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


class ClassHierarchy:
    """Classes placed in a hypernym DAG, with lookup and WordNet class sets.

    Args:
        records: every synset the classes need: the classes themselves and all
            their ancestors (each parent named in ``parents`` must have a
            record). Order does not matter.
        classes: the wnids of the classes, in class-index order.
        source: free text recorded in saved files (e.g. ``"WordNet 3.0"``).

    Raises:
        ValueError: on duplicate wnids or classes, a parent without a record, a
            class without a record, or a cycle.

    Examples:
        >>> from lsdiffusion.semantics import imagenet1k_hierarchy
        >>> h = imagenet1k_hierarchy()
        >>> h.num_classes, h.index("Golden_Retriever"), h.names[207]
        (1000, 207, 'golden retriever')
        >>> h.class_sets(207).similar
        (205, 206, 208, 209)
    """

    def __init__(
        self, records: Iterable[SynsetRecord], classes: Sequence[str], *, source: str = ""
    ) -> None:
        recs = list(records)
        self.source = source
        self._node_of: dict[str, int] = {}
        for i, rec in enumerate(recs):
            if rec.wnid in self._node_of:
                raise ValueError(f"records must have unique wnids, got {rec.wnid!r} twice")
            self._node_of[rec.wnid] = i
        self._records = tuple(recs)
        n = len(recs)
        parents: list[tuple[int, ...]] = []
        for rec in recs:
            missing = [p for p in rec.parents if p not in self._node_of]
            if missing:
                raise ValueError(
                    f"records must include every parent: {rec.wnid} ({rec.name}) has parents "
                    f"{missing} without a record"
                )
            parents.append(tuple(sorted({self._node_of[p] for p in rec.parents})))
        self._parents = tuple(parents)

        # Topological order (parents first) and longest-path depth from a root.
        n_parents = [len(p) for p in parents]
        children: list[list[int]] = [[] for _ in range(n)]
        for v, ps in enumerate(parents):
            for p in ps:
                children[p].append(v)
        order = [v for v in range(n) if n_parents[v] == 0]
        depth = np.zeros(n, dtype=np.int64)
        for v in order:  # `order` grows while iterating
            for ch in children[v]:
                depth[ch] = max(depth[ch], depth[v] + 1)
                n_parents[ch] -= 1
                if n_parents[ch] == 0:
                    order.append(ch)
        if len(order) != n:
            stuck = sorted(recs[v].wnid for v in range(n) if n_parents[v] > 0)
            raise ValueError(f"records must form an acyclic hierarchy; cycle among {stuck[:10]}")
        self._depth = depth
        depth.flags.writeable = False

        # Inclusive ancestor sets.
        ancestors: list[frozenset[int]] = [frozenset()] * n
        for v in order:
            acc = {v}
            for p in parents[v]:
                acc |= ancestors[p]
            ancestors[v] = frozenset(acc)

        if len(set(classes)) != len(classes):
            dup = sorted({c for c in classes if list(classes).count(c) > 1})
            raise ValueError(f"classes must be unique, got duplicates {dup[:10]}")
        unknown = [c for c in classes if c not in self._node_of]
        if unknown:
            raise ValueError(f"classes must all have a record, got unknown wnids {unknown[:10]}")
        self._class_node = np.array([self._node_of[c] for c in classes], dtype=np.int64)
        self._class_of_node = {int(v): i for i, v in enumerate(self._class_node)}
        c = len(classes)
        self._class_anc: tuple[npt.NDArray[np.int64], ...] = tuple(
            np.array(sorted(ancestors[v]), dtype=np.int64) for v in self._class_node
        )
        members: list[list[int]] = [[] for _ in range(n)]
        child_classes: list[list[int]] = [[] for _ in range(n)]
        for i, v in enumerate(self._class_node):
            for a in ancestors[v]:
                members[a].append(i)
            for p in parents[v]:
                child_classes[p].append(i)
        self._members = tuple(np.array(m, dtype=np.int64) for m in members)
        self._child_classes = tuple(np.array(m, dtype=np.int64) for m in child_classes)
        self._has_siblings = np.array(
            [any(len(child_classes[p]) > 1 for p in parents[v]) for v in self._class_node],
            dtype=bool,
        )
        self._num_classes = c

        # Name index: every lemma of every class, normalised.
        by_name: dict[str, list[int]] = {}
        spelled: dict[str, str] = {}
        for i, v in enumerate(self._class_node):
            for lemma in recs[v].lemmas:
                key = _normalize_name(lemma)
                spelled.setdefault(key, lemma.replace("_", " "))
                if i not in by_name.setdefault(key, []):
                    by_name[key].append(i)
        self._by_name = by_name
        self._spelled = spelled
        self._by_synset = {recs[v].name.casefold(): i for i, v in enumerate(self._class_node)}
        self._mask_cache: dict[
            tuple[int, int, int | None], tuple[ClassSetMasks, npt.NDArray[np.bool_]]
        ] = {}
        self._lca: npt.NDArray[np.int64] | None = None

    # ------------------------------------------------------------------ basics
    @property
    def num_classes(self) -> int:
        """Number of classes ``C``."""
        return self._num_classes

    @property
    def wnids(self) -> tuple[str, ...]:
        """Class wnids in class-index order."""
        return tuple(self._records[v].wnid for v in self._class_node)

    @property
    def synset_names(self) -> tuple[str, ...]:
        """Class synset names (``"golden_retriever.n.01"``) in class-index order."""
        return tuple(self._records[v].name for v in self._class_node)

    @property
    def names(self) -> tuple[str, ...]:
        """Display names: each class's first lemma with ``_`` as spaces."""
        return tuple(self._records[v].lemmas[0].replace("_", " ") for v in self._class_node)

    @property
    def records(self) -> tuple[SynsetRecord, ...]:
        """Every synset of the hierarchy (classes and ancestors)."""
        return self._records

    def lemmas(self, target: int | str) -> tuple[str, ...]:
        """All WordNet lemma names of a class (``_`` kept)."""
        return self._records[int(self._class_node[self.index(target)])].lemmas

    def depth(self, target: int | str) -> int:
        """Depth of a class: its longest hypernym path to the root (root = 0)."""
        return int(self._depth[self._class_node[self.index(target)]])

    def ancestors(self, target: int | str) -> tuple[str, ...]:
        """Synset names of every ancestor of a class over all paths, root first.

        Ordered by depth, then wnid; the class itself is not included.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> imagenet1k_hierarchy().ancestors(207)[-3:]
            ('hunting_dog.n.01', 'sporting_dog.n.01', 'retriever.n.01')
        """
        v = int(self._class_node[self.index(target)])
        anc = [int(a) for a in self._class_anc[self.index(target)] if a != v]
        anc.sort(key=lambda a: (int(self._depth[a]), self._records[a].wnid))
        return tuple(self._records[a].name for a in anc)

    def describe(self, target: int | str) -> str:
        """One line: ``"207  n02099601  golden retriever"``."""
        i = self.index(target)
        return f"{i:>5}  {self._records[self._class_node[i]].wnid}  {self.names[i]}"

    # ------------------------------------------------------------------ lookup
    def index(self, target: int | str) -> int:
        """Class index of ``target``: an index, a wnid, a synset name or a lemma name.

        An index may also be given as a string of ASCII digits (``"207"``, or
        ``"-1"``, which is out of range); other digits (``"²"``) are names.

        Names match any WordNet lemma of a class, ignoring case and treating
        ``_``, ``-`` and spaces alike (``"golden retriever"``,
        ``"Golden_Retriever"``). A name shared by several classes (ImageNet's
        two "crane"s) is an error that lists them.

        Raises:
            ClassLookupError: unknown or ambiguous ``target``, or index out of
                range; unknown names come with close matches.
            TypeError: ``target`` is neither an int nor a str.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> h = imagenet1k_hierarchy()
            >>> h.index(207), h.index("n02099601"), h.index("golden_retriever.n.01")
            (207, 207, 207)
            >>> h.index("-1")  # doctest: +IGNORE_EXCEPTION_DETAIL
            Traceback (most recent call last):
            ...
            ClassLookupError: target index must be in [0, 999], got -1
        """
        c = self._num_classes
        if isinstance(target, str):
            text = target.strip()
            if _INDEX_RE.match(text):
                return self.index(int(text))
            if _WNID_RE.match(text):
                return self._index_of_wnid(text)
            if _SYNSET_NAME_RE.match(text) and text.casefold() in self._by_synset:
                return self._by_synset[text.casefold()]
            return self._index_of_name(text)
        if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
            raise TypeError(
                "target must be a class index (int), a wnid or a class name (str), "
                f"got {type(target).__name__}"
            )
        i = operator.index(target)
        if not 0 <= i < c:
            raise ClassLookupError(f"target index must be in [0, {c - 1}], got {i}")
        return i

    def _index_of_wnid(self, wnid: str) -> int:
        node = self._node_of.get(wnid)
        if node is None:
            raise ClassLookupError(
                f"target wnid {_echo(wnid)} is not one of the {self._num_classes} classes "
                "nor one of their ancestors"
            )
        i = self._class_of_node.get(node)
        if i is None:
            rec = self._records[node]
            under = self._members[node]
            raise ClassLookupError(
                f"target wnid {_echo(wnid)} is {rec.name}, an ancestor of {len(under)} classes, "
                f"not a class itself; its classes include: {self._list(under[:5])}"
            )
        return i

    def _index_of_name(self, name: str) -> int:
        key = _normalize_name(name)
        hits = self._by_name.get(key, [])
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ClassLookupError(
                f"target name {_echo(name)} is ambiguous, it names {len(hits)} classes: "
                f"{self._list(hits, detailed=True)}; pass the index or the wnid instead"
            )
        # (a name far longer than any class name has no close match: skip the work)
        word = re.compile(rf"\b{re.escape(key)}\b") if 0 < len(key) <= 200 else None
        close = [k for k in self._by_name if word is not None and word.search(k)][:5]
        close += [
            k
            for k in difflib.get_close_matches(key[:200], list(self._by_name), n=5, cutoff=0.6)
            if k not in close
        ]
        if close:
            hint = "; close matches: " + ", ".join(
                f"{self._spelled[k]!r} ({', '.join(str(i) for i in self._by_name[k])})"
                for k in close
            )
        else:
            hint = ""
        raise ClassLookupError(
            f"target name {_echo(name)} matches no class{hint}. Look classes up by index "
            f"(0-{self._num_classes - 1}), wnid (e.g. {self.wnids[0]!r}) or a WordNet lemma name"
        )

    def _list(self, classes: Iterable[int], *, detailed: bool = False) -> str:
        parts = []
        for i in classes:
            v = int(self._class_node[int(i)])
            rec = self._records[v]
            text = f"{int(i)} {rec.wnid} {self.names[int(i)]!r}"
            if detailed:
                parent = ", ".join(self._records[p].name for p in self._parents[v])
                text += f" ({rec.name}, a kind of {parent})"
            parts.append(text)
        return "; ".join(parts)

    # ------------------------------------------------------------- class sets
    def _check_params(self, min_size: int, dissimilar_depth: int) -> tuple[int, int]:
        m = _check_int("min_size", min_size, 1)
        if m > self._num_classes - 1:
            raise ValueError(
                f"min_size must be <= C - 1 = {self._num_classes - 1} (the other classes), got {m}"
            )
        return m, _check_int("dissimilar_depth", dissimilar_depth, 0)

    @staticmethod
    def _check_max_size(max_size: int | None, min_size: int) -> int | None:
        if max_size is None:
            return None
        cap = _check_int("max_size", max_size, 1)
        if cap < min_size:
            raise ValueError(
                f"max_size must be >= min_size={min_size} (a fallback set holds at least "
                f"min_size classes), got {cap}"
            )
        return cap

    def _lca_row(self, i: int) -> npt.NDArray[np.int64]:
        """``(C,)`` depth of the lowest common ancestor of class ``i`` with every class."""
        row = np.full(self._num_classes, -1, dtype=np.int64)
        anc = self._class_anc[i]
        for a in anc[np.argsort(self._depth[anc], kind="stable")].tolist():
            row[self._members[a]] = self._depth[a]  # deeper ancestors write last
        return row

    def _fallback_members(self, i: int, node: int, cap: int | None) -> npt.NDArray[np.int64]:
        """Classes under ``node`` except ``i``; the ``cap`` closest to ``i`` when capped."""
        members = self._members[node]
        out: npt.NDArray[np.int64] = members[members != i]
        if cap is None or out.size <= cap:
            return out
        depth = self._lca_row(i)[out]
        keep = np.lexsort((out, -depth))[:cap]  # deepest LCA first, then class index
        capped: npt.NDArray[np.int64] = np.sort(out[keep])
        return capped

    def _fallback_root(self, i: int, min_size: int) -> int:
        """Node of the smallest ancestor subtree of class ``i`` with >= min_size others."""
        node = self._fallback_root_or_none(i, min_size)
        if node is None:
            raise ValueError(
                f"no ancestor of class {i} ({self._records[self._class_node[i]].name}) holds "
                f"min_size={min_size} other classes; lower min_size"
            )
        return node

    def _fallback_root_or_none(self, i: int, min_size: int) -> int | None:
        best: tuple[int, int, str] | None = None
        best_node = None
        for a in self._class_anc[i].tolist():
            size = len(self._members[a])
            if size - 1 < min_size:
                continue
            key = (size, -int(self._depth[a]), self._records[a].wnid)
            if best is None or key < best:
                best, best_node = key, a
        return best_node

    def _siblings(self, i: int) -> npt.NDArray[np.int64]:
        if not self._has_siblings[i]:
            return np.empty(0, dtype=np.int64)
        v = self._class_node[i]
        sib: npt.NDArray[np.int64] = np.unique(
            np.concatenate([self._child_classes[p] for p in self._parents[v]])
        )
        out: npt.NDArray[np.int64] = sib[sib != i]
        return out

    def similar_basis(self, target: int | str, *, min_size: int = DEFAULT_MIN_SIZE) -> SimilarBasis:
        """Say which synset(s) the similar set of ``target`` was taken under.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> imagenet1k_hierarchy().similar_basis(207)
            SimilarBasis(kind='siblings', synsets=('retriever.n.01',))
        """
        i = self.index(target)
        m, _ = self._check_params(min_size, 0)
        v = self._class_node[i]
        if self._has_siblings[i]:
            names = tuple(
                self._records[p].name for p in self._parents[v] if len(self._child_classes[p]) > 1
            )
            return SimilarBasis("siblings", names)
        return SimilarBasis("subtree", (self._records[self._fallback_root(i, m)].name,))

    def class_sets(
        self,
        target: int | str,
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        dissimilar_depth: int = DEFAULT_DISSIMILAR_DEPTH,
        max_size: int | None = None,
    ) -> ClassSets:
        """Similar and dissimilar classes of ``target`` (definitions in the module doc).

        Args:
            target: class index, wnid, synset name or lemma name.
            min_size: fallback size: a class without siblings gets the smallest
                ancestor subtree holding at least this many other classes.
            dissimilar_depth: a class is dissimilar when its lowest common
                ancestor with the target has depth ``<=`` this (and it is not
                similar).
            max_size: cap on a *fallback* similar set: keep its ``max_size``
                classes with the deepest lowest common ancestor with the target
                (ties: smaller class index). ``None`` (default): no cap.
                Sibling sets are never cut. Must be ``>= min_size``.

        Returns:
            ``ClassSets(similar, dissimilar)``, ascending class indices, disjoint;
            the target is in neither.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> h = imagenet1k_hierarchy()
            >>> sim, dis = h.class_sets("golden retriever")
            >>> [h.names[i] for i in sim]
            ['flat-coated retriever', 'curly-coated retriever', 'Labrador retriever',
             'Chesapeake Bay retriever']
            >>> 833 in dis, 266 in dis  # submarine yes, miniature poodle no
            (True, False)
        """
        i = self.index(target)
        m, k = self._check_params(min_size, dissimilar_depth)
        cap = self._check_max_size(max_size, m)
        if self._num_classes > _MASK_LIMIT:  # masks would be too large: one row only
            return self._class_sets_direct(i, m, k, cap)
        masks, failed = self._masks(m, k, cap)
        if failed[i]:
            self._fallback_root(i, m)  # raises the explanation
        return ClassSets(
            tuple(np.flatnonzero(masks.similar[i]).tolist()),
            tuple(np.flatnonzero(masks.dissimilar[i]).tolist()),
        )

    def _class_sets_direct(self, i: int, m: int, k: int, cap: int | None = None) -> ClassSets:
        """`class_sets` of one class without building the ``(C, C)`` masks."""
        sim = self._siblings(i)
        if sim.size == 0:
            sim = self._fallback_members(i, self._fallback_root(i, m), cap)
        anc = self._class_anc[i]
        keep = np.ones(self._num_classes, dtype=bool)
        for a in anc[self._depth[anc] == k + 1]:
            keep[self._members[a]] = False
        keep[i] = False
        keep[sim] = False
        return ClassSets(tuple(sim.tolist()), tuple(np.flatnonzero(keep).tolist()))

    def class_masks(
        self,
        *,
        min_size: int = DEFAULT_MIN_SIZE,
        dissimilar_depth: int = DEFAULT_DISSIMILAR_DEPTH,
        max_size: int | None = None,
    ) -> ClassSetMasks:
        """Class sets of every class at once, as ``(C, C)`` bool masks.

        Row ``t`` equals [`class_sets`][lsdiffusion.semantics.hierarchy.ClassHierarchy.class_sets]
        of target ``t`` (same arguments). Results are cached per set of arguments and returned
        read-only (copy before editing). Memory is ``2 C²`` bytes.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> masks = imagenet1k_hierarchy().class_masks()
            >>> masks.similar.shape, int(masks.similar[207].sum())
            ((1000, 1000), 4)
        """
        m, k = self._check_params(min_size, dissimilar_depth)
        masks, failed = self._masks(m, k, self._check_max_size(max_size, m))
        if failed.any():
            self._fallback_root(int(np.flatnonzero(failed)[0]), m)  # raises the explanation
        return masks

    def _masks(
        self, m: int, k: int, cap: int | None
    ) -> tuple[ClassSetMasks, npt.NDArray[np.bool_]]:
        """Masks for every class and which classes have no fallback subtree (cached)."""
        cached = self._mask_cache.get((m, k, cap))
        if cached is not None:
            return cached
        c = self._num_classes
        # Similar: a block per synset over the classes directly under it ...
        sim = np.zeros((c, c), dtype=bool)
        for kids in self._child_classes:
            if len(kids) > 1:
                sim[np.ix_(kids, kids)] = True
        np.fill_diagonal(sim, False)
        # ... and the fallback subtree for the classes without siblings.
        failed = np.zeros(c, dtype=bool)
        for i in np.flatnonzero(~self._has_siblings).tolist():
            node = self._fallback_root_or_none(i, m)
            if node is None:
                failed[i] = True
                continue
            sim[i, self._fallback_members(i, node, cap)] = True
        # Dissimilar: no common ancestor at depth k + 1 (so none deeper either).
        dis = np.ones((c, c), dtype=bool)
        for node in np.flatnonzero(self._depth == k + 1).tolist():
            members = self._members[node]
            if len(members):
                dis[np.ix_(members, members)] = False
        np.fill_diagonal(dis, False)
        dis &= ~sim
        sim.flags.writeable = False
        dis.flags.writeable = False
        failed.flags.writeable = False
        result = (ClassSetMasks(sim, dis), failed)
        if len(self._mask_cache) >= 8:
            self._mask_cache.pop(next(iter(self._mask_cache)))
        self._mask_cache[(m, k, cap)] = result
        return result

    def lca_depths(self) -> npt.NDArray[np.int64]:
        """``(C, C)`` depth of the lowest common ancestor of every pair of classes.

        Entry ``[a, b]`` is the largest depth among the common ancestors of
        ``a`` and ``b`` (a class counts as its own ancestor, so the diagonal is
        the class's depth), or -1 when they share none. Cached, read-only.

        Examples:
            >>> from lsdiffusion.semantics import imagenet1k_hierarchy
            >>> d = imagenet1k_hierarchy().lca_depths()
            >>> int(d[207, 208]), int(d[207, 833])  # retriever.n.01; whole.n.02
            (16, 3)
        """
        if self._lca is None:
            c = self._num_classes
            lca = np.full((c, c), -1, dtype=np.int64)
            # shallow to deep, so the deepest common ancestor writes last
            for node in np.argsort(self._depth, kind="stable").tolist():
                members = self._members[node]
                if len(members) == c:
                    lca[:] = self._depth[node]
                elif len(members):
                    lca[np.ix_(members, members)] = self._depth[node]
            lca.flags.writeable = False
            self._lca = lca
        return self._lca

    # --------------------------------------------------------------- file I/O
    def to_text(self) -> str:
        """Serialise as TSV: the classes in index order, then the other synsets by wnid.

        Columns: ``wnid``, ``synset`` (nltk name), ``class`` (index, empty for
        ancestors), ``parents`` (space-separated wnids, sorted), ``lemmas``
        (space-separated, WordNet order). Lines starting with ``#`` are comments.
        """
        out = io.StringIO()
        out.write("# lsdiffusion class hierarchy v1: classes and all their hypernym ancestors\n")
        if self.source:
            out.write(f"# source: {self.source}\n")
        out.write("\t".join(_HEADER) + "\n")
        rest = sorted(
            (v for v in range(len(self._records)) if v not in self._class_of_node),
            key=lambda v: self._records[v].wnid,
        )
        for v in [*map(int, self._class_node), *rest]:
            rec = self._records[v]
            cls = self._class_of_node.get(v)
            parents = sorted(self._records[p].wnid for p in self._parents[v])
            out.write(
                f"{rec.wnid}\t{rec.name}\t{'' if cls is None else cls}\t"
                f"{' '.join(parents)}\t{' '.join(rec.lemmas)}\n"
            )
        return out.getvalue()

    @classmethod
    def from_text(cls, text: str) -> ClassHierarchy:
        """Parse the format written by `to_text`."""
        with _gc_paused():
            return cls._from_text(text)

    @classmethod
    def _from_text(cls, text: str) -> ClassHierarchy:
        lines = iter(enumerate(text.splitlines(), start=1))
        source = ""
        header: list[str] | None = None
        records: list[SynsetRecord] = []
        classes: dict[int, str] = {}
        for lineno, line in lines:
            if not line.strip():
                continue
            if line.startswith("#"):
                if line.startswith("# source: "):
                    source = line[len("# source: ") :]
                continue
            fields = line.split("\t")
            if header is None:
                header = fields
                if tuple(header) != _HEADER:
                    raise ValueError(
                        f"hierarchy file must start with the header {_HEADER}, got {tuple(fields)}"
                    )
                continue
            if len(fields) != len(_HEADER):
                raise ValueError(
                    f"hierarchy line {lineno} must have {len(_HEADER)} tab-separated fields, "
                    f"got {len(fields)}: {line!r}"
                )
            wnid, name, cls_field, parents, lemmas = fields
            if not lemmas.split():
                raise ValueError(f"hierarchy line {lineno} must list at least one lemma: {line!r}")
            records.append(SynsetRecord(wnid, name, tuple(parents.split()), tuple(lemmas.split())))
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
        return cls(records, [classes[i] for i in range(len(classes))], source=source)

    def save(self, path: str | Path) -> None:
        """Write `to_text` to ``path``, gzip'd when it ends in ``.gz``.

        The gzip header carries no time stamp or file name, so identical
        hierarchies give identical files.
        """
        data = self.to_text().encode("utf-8")
        target = Path(path)
        if target.suffix == ".gz":
            with (
                target.open("wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            ):
                gz.write(data)
        else:
            target.write_bytes(data)

    @classmethod
    def load(cls, path: str | Path) -> ClassHierarchy:
        """Read a file written by [`save`][lsdiffusion.semantics.hierarchy.ClassHierarchy.save]."""
        raw = Path(path).read_bytes()
        return cls.from_text(_decode(raw))

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"ClassHierarchy(num_classes={self._num_classes}, synsets={len(self._records)}{src})"


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


def _decode(raw: bytes) -> str:
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


_MOVED_TO_IMAGENET = frozenset(
    {
        "PAPER_CLASS_SETS",
        "find_class",
        "imagenet1k_hierarchy",
        "imagenet1k_wnids",
        "paper_class_set",
        "wordnet_class_masks",
        "wordnet_class_sets",
    }
)


def __getattr__(name: str) -> object:
    """Keep ``from lsdiffusion.semantics.hierarchy import imagenet1k_hierarchy`` working.

    The ImageNet-1K data and the functions that default to it live in
    [`lsdiffusion.semantics.imagenet`][lsdiffusion.semantics.imagenet]; import them from
    [`lsdiffusion.semantics`][lsdiffusion.semantics].
    """
    if name in _MOVED_TO_IMAGENET:
        from lsdiffusion.semantics import imagenet

        return getattr(imagenet, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
