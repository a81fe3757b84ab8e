"""CIFAR-100: its official hierarchy (20 superclasses of 5 classes) and its class sets.

CIFAR-100 (Krizhevsky, 2009) labels each image with one of 100 *fine* classes
and one of 20 *coarse* superclasses, each superclass holding exactly five
fine classes ("trees": maple, oak, palm, pine and willow tree). The table
ships with the package (fine label indices in the dataset's order, which is
alphabetical, as in its `meta` file) and loads on first use, without nltk.

The class sets follow the dataset's own hierarchy rather than WordNet's:

* **similar**: the other four classes of the target's superclass;
* **dissimilar**: the 95 classes of the other superclasses.

[`cifar100_hierarchy`][lsdiffusion.semantics.cifar100_hierarchy] gives it as a
[`ClassHierarchy`][lsdiffusion.semantics.ClassHierarchy] (a root, the 20
superclasses, the 100 classes), so names are looked up as for ImageNet
(`"maple tree"`, `"Maple_Tree"`, `47`), and `lsdiffusion classes --dataset
cifar100 maple_tree` prints the sets.
"""

from __future__ import annotations

import functools
from importlib import resources

from lsdiffusion.semantics.graph import SynsetRecord
from lsdiffusion.semantics.hierarchy import ClassHierarchy, ClassSetMasks, ClassSets

__all__ = [
    "CIFAR100_DISSIMILAR_DEPTH",
    "cifar100_class_masks",
    "cifar100_class_names",
    "cifar100_class_sets",
    "cifar100_hierarchy",
    "cifar100_superclasses",
]

_FILE = "cifar100_classes.tsv"

CIFAR100_DISSIMILAR_DEPTH = 0
"""In [`cifar100_hierarchy`][lsdiffusion.semantics.cifar100_hierarchy] (root 0,
superclasses 1, classes 2), classes of different superclasses meet at the root:
dissimilar means a lowest common ancestor at depth 0."""


@functools.lru_cache(maxsize=1)
def _table() -> tuple[tuple[str, ...], tuple[tuple[str, tuple[int, ...]], ...]]:
    """(fine names by label, ((superclass name, its fine labels), ...) by coarse label)."""
    text = (resources.files("lsdiffusion.semantics") / "data" / _FILE).read_text("utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    if rows[0] != ["fine", "fine_name", "coarse", "coarse_name"]:
        raise ValueError(f"{_FILE}: unexpected header {rows[0]}")
    fine: list[str] = []
    coarse: dict[int, tuple[str, list[int]]] = {}
    for i, (idx, name, c_idx, c_name) in enumerate(rows[1:]):
        if int(idx) != i:
            raise ValueError(f"{_FILE}: fine label {idx} out of order (expected {i})")
        fine.append(name)
        coarse.setdefault(int(c_idx), (c_name, []))[1].append(i)
    supers = tuple((coarse[j][0], tuple(coarse[j][1])) for j in range(len(coarse)))
    return tuple(fine), supers


def cifar100_class_names() -> tuple[str, ...]:
    """The 100 fine label names in the dataset's label order.

    Examples:
        >>> from lsdiffusion.semantics import cifar100_class_names
        >>> names = cifar100_class_names()
        >>> len(names), names[0], names[47], names[99]
        (100, 'apple', 'maple_tree', 'worm')
    """
    return _table()[0]


def cifar100_superclasses() -> dict[str, tuple[int, ...]]:
    """The 20 superclasses (coarse label order) with the fine labels of their classes.

    Examples:
        >>> from lsdiffusion.semantics import cifar100_superclasses
        >>> supers = cifar100_superclasses()
        >>> list(supers)[:2], supers["trees"]
        (['aquatic_mammals', 'fish'], (47, 52, 56, 59, 96))
    """
    return dict(_table()[1])


@functools.lru_cache(maxsize=1)
def cifar100_hierarchy() -> ClassHierarchy:
    """CIFAR-100's hierarchy as a [`ClassHierarchy`][lsdiffusion.semantics.ClassHierarchy].

    A root `cifar100`, the 20 superclasses under it (ids `cifar100.coarse.NN`,
    named after the superclass), the 100 classes under them (ids
    `cifar100.fine.NN`, lemma = the fine label name), in fine label order.
    The ids are not WordNet ids.

    Examples:
        >>> from lsdiffusion.semantics import cifar100_hierarchy
        >>> h = cifar100_hierarchy()
        >>> h.num_classes, h.index("maple tree"), h.similar_basis(47).synsets
        (100, 47, ('trees',))
    """
    fine, supers = _table()
    root = SynsetRecord("cifar100", "cifar100", (), ("cifar100",))
    records = [root]
    classes = [f"cifar100.fine.{i:02d}" for i in range(len(fine))]
    for j, (name, members) in enumerate(supers):
        sid = f"cifar100.coarse.{j:02d}"
        records.append(SynsetRecord(sid, name, ("cifar100",), (name,)))
        records += [SynsetRecord(classes[i], fine[i], (sid,), (fine[i],)) for i in members]
    return ClassHierarchy(records, classes, source="CIFAR-100 coarse labels")


def cifar100_class_sets(target: int | str) -> ClassSets:
    """Similar and dissimilar CIFAR-100 classes of `target`, from the official superclasses.

    Similar: the other four classes of the target's superclass. Dissimilar:
    the 95 classes of the other 19 superclasses.

    Args:
        target: a fine label index (an int, a numpy or one-element torch
            integer) or a fine label name (`"maple_tree"`, `"maple tree"`).

    Returns:
        `ClassSets(similar, dissimilar)` of ascending fine label indices.

    Raises:
        ClassLookupError: an unknown name (close matches are listed) or an
            index outside 0-99.

    Examples:
        >>> from lsdiffusion.semantics import cifar100_class_sets, cifar100_class_names
        >>> similar, dissimilar = cifar100_class_sets("maple_tree")
        >>> [cifar100_class_names()[i] for i in similar], len(dissimilar)
        (['oak_tree', 'palm_tree', 'pine_tree', 'willow_tree'], 95)
    """
    return cifar100_hierarchy().class_sets(target, dissimilar_depth=CIFAR100_DISSIMILAR_DEPTH)


def cifar100_class_masks() -> ClassSetMasks:
    """[`cifar100_class_sets`][lsdiffusion.semantics.cifar100_class_sets] of every class, as masks.

    Examples:
        >>> from lsdiffusion.semantics import cifar100_class_masks
        >>> masks = cifar100_class_masks()
        >>> masks.similar.shape, int(masks.similar.sum()), int(masks.dissimilar[0].sum())
        ((100, 100), 400, 95)
    """
    return cifar100_hierarchy().class_masks(dissimilar_depth=CIFAR100_DISSIMILAR_DEPTH)
