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

# Over 600 lines for a reason: about 200 are the definitions of the class-set rules
# (module doc) and the doctests of every method; the graph, the names and the file
# format already live in graph.py, names.py and hierarchy_file.py.

# Over 600 lines with a reason: about 210 are docstrings (the set rules' definitions and
# runnable examples); the code is ~460 lines of one class, ClassHierarchy (names, graph
# and file I/O already live in names.py, graph.py and hierarchy_file.py).

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from lsdiffusion._validation import check_int
from lsdiffusion.semantics.graph import SynsetRecord, build_graph
from lsdiffusion.semantics.hierarchy_file import (
    format_hierarchy,
    parse_hierarchy,
    read_hierarchy_file,
    write_hierarchy_file,
)
from lsdiffusion.semantics.names import (
    ClassLookupError,
    NameIndex,
    echo,
    is_index_text,
    is_synset_name,
    is_wnid,
    normalize_name,
)

__all__ = [
    "DEFAULT_DISSIMILAR_DEPTH",
    "DEFAULT_MIN_SIZE",
    "ClassHierarchy",
    "ClassSetMasks",
    "ClassSets",
    "SimilarBasis",
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

_MASK_LIMIT = 4096  # above this many classes, class_sets works row by row


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


def _describe(value: object) -> str:
    """The type of `value`, with the dtype and shape of an array or tensor."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        return type(value).__name__
    return f"{type(value).__name__} of dtype {dtype} and shape {tuple(shape)}"


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
        g = build_graph(recs, classes)
        self._records = g.records
        self._node_of = g.node_of
        self._parents = g.parents
        self._depth = g.depth
        self._class_node = g.class_node
        self._class_of_node = g.class_of_node
        self._class_anc = g.class_ancestors
        self._members = g.members
        self._child_classes = g.child_classes
        self._has_siblings = g.has_siblings
        self._num_classes = len(classes)
        self._by_synset = {recs[v].name.casefold(): i for i, v in enumerate(self._class_node)}
        self._names = NameIndex(recs[v].lemmas for v in self._class_node)
        self._mask_cache: dict[
            tuple[int, int, int | None], tuple[ClassSetMasks, npt.NDArray[np.bool_]]
        ] = {}
        self._lca: npt.NDArray[np.int64] | None = None
        self._group_names: dict[str, list[int]] | None = None  # ancestors by lemma, lazily

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
            if is_index_text(text):
                return self.index(int(text))
            if is_wnid(text):
                return self._index_of_wnid(text)
            if is_synset_name(text) and text.casefold() in self._by_synset:
                return self._by_synset[text.casefold()]
            return self._index_of_name(text)
        # an int, a numpy integer or a one-element integer tensor (all have __index__)
        boolean = isinstance(target, (bool, np.bool_)) or str(getattr(target, "dtype", "")) in (
            "bool",
            "torch.bool",
        )
        try:
            i = None if boolean else operator.index(target)
        except TypeError:
            i = None
        if i is None:
            raise TypeError(
                "target must be a class index (an int, or a one-element integer tensor or "
                f"array), a wnid or a class name (str), got {_describe(target)}"
            )
        if not 0 <= i < c:
            raise ClassLookupError(f"target index must be in [0, {c - 1}], got {i}")
        return i

    def _index_of_wnid(self, wnid: str, what: str = "wnid") -> int:
        node = self._node_of.get(wnid)
        if node is None:
            raise ClassLookupError(
                f"target {what} {echo(wnid)} is not one of the {self._num_classes} classes "
                "nor one of their ancestors"
            )
        i = self._class_of_node.get(node)
        if i is None:
            raise self._not_a_class(f"{what} {echo(wnid)}", node)
        return i

    def _not_a_class(self, target: str, node: int) -> ClassLookupError:
        rec = self._records[node]
        under = self._members[node]
        return ClassLookupError(
            f"target {target} is {rec.name}, an ancestor of {len(under)} classes, "
            f"not a class itself; its classes include: {self._list(under[:5])}"
        )

    def _group_named(self, name: str) -> int | None:
        """The ancestor (not a class) with lemma `name`, the largest if several; else None."""
        if self._group_names is None:
            groups: dict[str, list[int]] = {}
            for node, rec in enumerate(self._records):
                if node not in self._class_of_node:
                    for lemma in rec.lemmas:
                        groups.setdefault(normalize_name(lemma), []).append(node)
            self._group_names = groups
        nodes = self._group_names.get(normalize_name(name), [])
        return max(nodes, key=lambda v: len(self._members[v])) if nodes else None

    def _index_of_name(self, name: str) -> int:
        hits = self._names.classes(name)
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:
            raise ClassLookupError(
                f"target name {echo(name)} is ambiguous, it names {len(hits)} classes: "
                f"{self._list(hits, detailed=True)}; pass the index or the wnid instead"
            )
        if name in self._node_of:  # an id that is not a wnid (CIFAR-100's 'cifar100.fine.47')
            return self._index_of_wnid(name, "id")
        group = self._group_named(name)
        if group is not None:
            raise self._not_a_class(f"name {echo(name)}", group)
        close = self._names.close_matches(name)
        hint = (
            "; close matches: "
            + ", ".join(
                f"{k!r} ({', '.join(str(i) for i in self._names.classes(k))})" for k in close
            )
            if close
            else ""
        )
        forms = (
            f"wnid (e.g. {self.wnids[0]!r}) or a WordNet lemma name"
            if is_wnid(self.wnids[0])
            else f"id (e.g. {self.wnids[0]!r}) or a class name (e.g. {self.names[0]!r})"
        )
        raise ClassLookupError(
            f"target name {echo(name)} matches no class{hint}. Look classes up by index "
            f"(0-{self._num_classes - 1}), {forms}"
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
        m = check_int("min_size", min_size, minimum=1)
        if m > self._num_classes - 1:
            raise ValueError(
                f"min_size must be <= C - 1 = {self._num_classes - 1} (the other classes), got {m}"
            )
        return m, check_int("dissimilar_depth", dissimilar_depth, minimum=0)

    @staticmethod
    def _check_max_size(max_size: int | None, min_size: int) -> int | None:
        if max_size is None:
            return None
        cap = check_int("max_size", max_size, minimum=1)
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

        The format is described in
        [`lsdiffusion.semantics.hierarchy_file`][lsdiffusion.semantics.hierarchy_file].

        Raises:
            ValueError: a name holding a tab, newline or carriage return.
        """
        return format_hierarchy(self._records, self.wnids, self.source)

    @classmethod
    def from_text(cls, text: str) -> ClassHierarchy:
        """Parse the format written by [`to_text`][lsdiffusion.semantics.ClassHierarchy.to_text]."""
        records, classes, source = parse_hierarchy(text)
        return cls(records, classes, source=source)

    def save(self, path: str | Path) -> None:
        """Write the `to_text` TSV to `path`, gzip'd when it ends in `.gz`.

        The gzip header carries no time stamp or file name, so identical
        hierarchies give identical files; every name comes back from
        [`load`][lsdiffusion.semantics.ClassHierarchy.load] as saved.
        """
        write_hierarchy_file(path, self.to_text())

    @classmethod
    def load(cls, path: str | Path) -> ClassHierarchy:
        """Read a file written by [`save`][lsdiffusion.semantics.ClassHierarchy.save]."""
        return cls.from_text(read_hierarchy_file(path))

    def __repr__(self) -> str:
        src = f", source={self.source!r}" if self.source else ""
        return f"ClassHierarchy(num_classes={self._num_classes}, synsets={len(self._records)}{src})"
