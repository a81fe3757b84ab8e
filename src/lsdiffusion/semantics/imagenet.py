"""ImageNet-1K: the embedded hierarchy, the paper's class sets, and one-call class sets.

ImageNet-1K's 1000 classes are WordNet 3.0 noun synsets. Their hierarchy (the
classes plus their 860 hypernym ancestors) ships with the package and loads on
first use ([`imagenet1k_hierarchy`][lsdiffusion.semantics.imagenet.imagenet1k_hierarchy]), without
nltk or a network. The functions [`find_class`][lsdiffusion.semantics.imagenet.find_class],
[`wordnet_class_sets`][lsdiffusion.semantics.imagenet.wordnet_class_sets] and
[`wordnet_class_masks`][lsdiffusion.semantics.imagenet.wordnet_class_masks] apply a
[`ClassHierarchy`][lsdiffusion.semantics.hierarchy.ClassHierarchy]'s rules to it by default (pass
``hierarchy=`` for another class list), and
[`paper_class_set`][lsdiffusion.semantics.imagenet.paper_class_set] names the paper's hand-picked
sets.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from importlib import resources
from types import MappingProxyType

from lsdiffusion.semantics.hierarchy import (
    DEFAULT_DISSIMILAR_DEPTH,
    DEFAULT_MIN_SIZE,
    ClassHierarchy,
    ClassSetMasks,
    ClassSets,
)
from lsdiffusion.semantics.hierarchy_file import decode_hierarchy_bytes
from lsdiffusion.semantics.names import ClassLookupError, echo, normalize_name

__all__ = [
    "PAPER_CLASS_SETS",
    "find_class",
    "imagenet1k_hierarchy",
    "imagenet1k_wnids",
    "paper_class_set",
    "wordnet_class_masks",
    "wordnet_class_sets",
]

_HIERARCHY_FILE = "imagenet1k_hierarchy.tsv.gz"
_WNIDS_FILE = "imagenet1k_wnids.txt"

_PAPER_SETS: dict[str, tuple[int, ...]] = {
    # Golden retriever and its siblings: flat-coated, curly-coated, golden,
    # Labrador, Chesapeake Bay.
    "retrievers": (205, 206, 207, 208, 209),
    # Thunder, ringneck, hognose, king and water snake.
    "snakes": (52, 53, 54, 56, 58),
    # Figure 1: miniature poodle, standard poodle, submarine.
    "figure1": (266, 267, 833),
}
PAPER_CLASS_SETS: Mapping[str, tuple[int, ...]] = MappingProxyType(_PAPER_SETS)
"""The paper's hand-picked ImageNet-1K class sets, by name (indices, ascending)."""


@functools.lru_cache(maxsize=1)
def imagenet1k_hierarchy() -> ClassHierarchy:
    """The embedded ImageNet-1K hierarchy (WordNet 3.0), loaded once on first use.

    1000 classes in the standard index order plus their 860 hypernym ancestors.
    Needs neither nltk nor a network.

    Examples:
        >>> from lsdiffusion.semantics import imagenet1k_hierarchy
        >>> imagenet1k_hierarchy()
        ClassHierarchy(num_classes=1000, synsets=1860, source='WordNet 3.0')
    """
    raw = (resources.files("lsdiffusion.semantics") / "data" / _HIERARCHY_FILE).read_bytes()
    return ClassHierarchy.from_text(decode_hierarchy_bytes(raw))


@functools.lru_cache(maxsize=1)
def imagenet1k_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1K wnids in class-index order (the shipped list).

    Examples:
        >>> from lsdiffusion.semantics import imagenet1k_wnids
        >>> wnids = imagenet1k_wnids()
        >>> len(wnids), wnids[0], wnids[207]
        (1000, 'n01440764', 'n02099601')
    """
    text = (resources.files("lsdiffusion.semantics") / "data" / _WNIDS_FILE).read_text(
        encoding="utf-8"
    )
    return tuple(line.split()[0] for line in text.splitlines() if line.strip())


def find_class(target: int | str, *, hierarchy: ClassHierarchy | None = None) -> int:
    """Class index of ``target`` (index, wnid, synset name or lemma name).

    Args:
        target: e.g. ``207``, ``"n02099601"``, ``"golden retriever"``.
        hierarchy: defaults to the embedded ImageNet-1K hierarchy.

    Raises:
        ClassLookupError: unknown (with close matches) or ambiguous names.

    Examples:
        >>> from lsdiffusion.semantics import find_class
        >>> find_class("Golden Retriever"), find_class("n01440764")
        (207, 0)
        >>> find_class("golden retriver")
        Traceback (most recent call last):
        ...
        lsdiffusion.semantics.names.ClassLookupError: target name 'golden retriver' matches
        no class; close matches: 'golden retriever' (207)...
    """
    h = imagenet1k_hierarchy() if hierarchy is None else hierarchy
    return h.index(target)


def wordnet_class_sets(
    target: int | str,
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    dissimilar_depth: int = DEFAULT_DISSIMILAR_DEPTH,
    hierarchy: ClassHierarchy | None = None,
    max_size: int | None = None,
) -> ClassSets:
    """WordNet similar / dissimilar classes of ``target`` (paper's method 1).

    Similar: the target's siblings under its immediate hypernym(s); a class
    with none gets the smallest ancestor subtree holding at least ``min_size``
    other classes, cut to its ``max_size`` closest classes when ``max_size``
    is given. Dissimilar: the other classes whose lowest common ancestor
    with the target has depth ``<= dissimilar_depth`` (root = 0, longest path). Full
    definitions, and how several parents are handled, are in
    [`lsdiffusion.semantics.hierarchy`][lsdiffusion.semantics.hierarchy].

    Args:
        target: class index, wnid, synset name or lemma name.
        min_size: fallback size of the similar set (default 1).
        dissimilar_depth: depth threshold of the dissimilar set (default 3).
        hierarchy: defaults to the embedded ImageNet-1K hierarchy (no nltk,
            no network); pass [`wordnet_hierarchy`][lsdiffusion.wordnet_hierarchy]
            for other class lists.
        max_size: cap on a fallback similar set (default ``None``, no cap): its
            ``max_size`` classes with the deepest lowest common ancestor with
            the target are kept, ties broken by the smaller class index.
            Sibling sets, such as the retrievers and the snakes, are never cut.

    Returns:
        ``ClassSets(similar, dissimilar)`` of ascending class indices.

    Examples:
        >>> from lsdiffusion.semantics import wordnet_class_sets
        >>> similar, dissimilar = wordnet_class_sets(207)
        >>> similar, len(dissimilar)
        ((205, 206, 208, 209), 590)
        >>> len(wordnet_class_sets("pillow").similar)  # falls back to every artifact
        521
        >>> len(wordnet_class_sets("pillow", max_size=20).similar)
        20
    """
    h = imagenet1k_hierarchy() if hierarchy is None else hierarchy
    return h.class_sets(
        target, min_size=min_size, dissimilar_depth=dissimilar_depth, max_size=max_size
    )


def wordnet_class_masks(
    *,
    min_size: int = DEFAULT_MIN_SIZE,
    dissimilar_depth: int = DEFAULT_DISSIMILAR_DEPTH,
    hierarchy: ClassHierarchy | None = None,
    max_size: int | None = None,
) -> ClassSetMasks:
    """`wordnet_class_sets` of every class at once, as ``(C, C)`` bool masks.

    Examples:
        >>> from lsdiffusion.semantics import wordnet_class_masks
        >>> masks = wordnet_class_masks()
        >>> masks.dissimilar.shape, bool(masks.dissimilar[207, 833])
        ((1000, 1000), True)
    """
    h = imagenet1k_hierarchy() if hierarchy is None else hierarchy
    return h.class_masks(min_size=min_size, dissimilar_depth=dissimilar_depth, max_size=max_size)


def paper_class_set(name: str) -> tuple[int, ...]:
    """One of the paper's hand-picked ImageNet-1K class sets, by name.

    ``"retrievers"`` (205-209), ``"snakes"`` (thunder 52, ringneck 53, hognose
    54, king 56, water 58) and ``"figure1"`` (miniature poodle 266, standard
    poodle 267, submarine 833). Case, ``_``, ``-`` and spaces are ignored.

    Examples:
        >>> from lsdiffusion.semantics import paper_class_set
        >>> paper_class_set("Figure 1")
        (266, 267, 833)
    """
    key = normalize_name(name).replace(" ", "")
    if key not in _PAPER_SETS:
        raise ClassLookupError(f"name must be one of {sorted(_PAPER_SETS)}, got {echo(name)}")
    return _PAPER_SETS[key]
