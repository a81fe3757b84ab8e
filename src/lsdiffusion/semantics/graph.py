"""The hypernym graph of a class hierarchy: synset records in, index arrays out.

[`build_graph`][lsdiffusion.semantics.graph.build_graph] checks the records (unique
wnids, every parent present, no cycle) and computes what the class-set rules of
[`ClassHierarchy`][lsdiffusion.semantics.ClassHierarchy] read: a topological
order, longest-path depths, ancestor sets over every path, the classes under
each synset and directly under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["HierarchyGraph", "SynsetRecord", "build_graph"]


class SynsetRecord(NamedTuple):
    """One synset of a [`ClassHierarchy`][lsdiffusion.semantics.ClassHierarchy].

    Attributes:
        wnid: WordNet id, part of speech + 8-digit offset (`"n02099601"`).
        name: nltk synset name (`"golden_retriever.n.01"`).
        parents: wnids of the immediate hypernyms (and instance hypernyms).
        lemmas: WordNet lemma names, the first one used for display
            (`("golden_retriever",)`).
    """

    wnid: str
    name: str
    parents: tuple[str, ...]
    lemmas: tuple[str, ...]


class HierarchyGraph(NamedTuple):
    """The arrays of a hierarchy; nodes are record positions, classes are class indices.

    Attributes:
        records: the synset records, node `v` is `records[v]`.
        node_of: wnid -> node.
        parents: per node, its parents' nodes (sorted).
        depth: (nodes,) longest hypernym path to a root (roots are 0), read-only.
        class_node: (C,) the node of each class.
        class_of_node: node -> class index, for the nodes that are classes.
        class_ancestors: per class, the nodes of its ancestors over all paths,
            itself included (sorted).
        members: per node, the classes under it (itself included when a class).
        child_classes: per node, the classes directly under it.
        has_siblings: (C,) whether a class shares a parent with another class.
    """

    records: tuple[SynsetRecord, ...]
    node_of: dict[str, int]
    parents: tuple[tuple[int, ...], ...]
    depth: npt.NDArray[np.int64]
    class_node: npt.NDArray[np.int64]
    class_of_node: dict[int, int]
    class_ancestors: tuple[npt.NDArray[np.int64], ...]
    members: tuple[npt.NDArray[np.int64], ...]
    child_classes: tuple[npt.NDArray[np.int64], ...]
    has_siblings: npt.NDArray[np.bool_]


def _check_classes(classes: Sequence[str], node_of: dict[str, int]) -> None:
    if len(set(classes)) != len(classes):
        dup = sorted({c for c in classes if list(classes).count(c) > 1})
        raise ValueError(f"classes must be unique, got duplicates {dup[:10]}")
    unknown = [c for c in classes if c not in node_of]
    if unknown:
        raise ValueError(f"classes must all have a record, got unknown wnids {unknown[:10]}")


def _order_and_depth(
    recs: Sequence[SynsetRecord], parents: Sequence[tuple[int, ...]]
) -> tuple[list[int], npt.NDArray[np.int64]]:
    """Topological order (parents first) and longest-path depth from a root."""
    n = len(recs)
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
    depth.flags.writeable = False
    return order, depth


def build_graph(records: Sequence[SynsetRecord], classes: Sequence[str]) -> HierarchyGraph:
    """Check the records and build the graph arrays of a hierarchy.

    Args:
        records: every synset the classes need (classes and all their ancestors).
        classes: the wnids of the classes, in class-index order.

    Raises:
        ValueError: on duplicate wnids or classes, a parent without a record, a
            class without a record, or a cycle.

    Examples:
        >>> recs = [SynsetRecord("n1", "a.n.01", (), ("a",)),
        ...         SynsetRecord("n2", "b.n.01", ("n1",), ("b",)),
        ...         SynsetRecord("n3", "c.n.01", ("n1",), ("c",))]
        >>> g = build_graph(recs, ["n2", "n3"])
        >>> g.depth.tolist(), g.members[0].tolist(), g.has_siblings.tolist()
        ([0, 1, 1], [0, 1], [True, True])
    """
    recs = tuple(records)
    node_of: dict[str, int] = {}
    for i, rec in enumerate(recs):
        if rec.wnid in node_of:
            raise ValueError(f"records must have unique wnids, got {rec.wnid!r} twice")
        node_of[rec.wnid] = i
    parents: list[tuple[int, ...]] = []
    for rec in recs:
        missing = [p for p in rec.parents if p not in node_of]
        if missing:
            raise ValueError(
                f"records must include every parent: {rec.wnid} ({rec.name}) has parents "
                f"{missing} without a record"
            )
        parents.append(tuple(sorted({node_of[p] for p in rec.parents})))
    order, depth = _order_and_depth(recs, parents)
    ancestors: list[frozenset[int]] = [frozenset()] * len(recs)  # inclusive
    for v in order:
        acc = {v}
        for p in parents[v]:
            acc |= ancestors[p]
        ancestors[v] = frozenset(acc)
    _check_classes(classes, node_of)
    class_node = np.array([node_of[c] for c in classes], dtype=np.int64)
    members: list[list[int]] = [[] for _ in recs]
    child_classes: list[list[int]] = [[] for _ in recs]
    for i, v in enumerate(class_node):
        for a in ancestors[v]:
            members[a].append(i)
        for p in parents[v]:
            child_classes[p].append(i)
    return HierarchyGraph(
        records=recs,
        node_of=node_of,
        parents=tuple(parents),
        depth=depth,
        class_node=class_node,
        class_of_node={int(v): i for i, v in enumerate(class_node)},
        class_ancestors=tuple(np.array(sorted(ancestors[v]), dtype=np.int64) for v in class_node),
        members=tuple(np.array(m, dtype=np.int64) for m in members),
        child_classes=tuple(np.array(m, dtype=np.int64) for m in child_classes),
        has_siblings=np.array(
            [any(len(child_classes[p]) > 1 for p in parents[v]) for v in class_node],
            dtype=bool,
        ),
    )
