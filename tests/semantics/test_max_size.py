"""``max_size``: a cap on the fallback similar sets, closest classes first."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lsdiffusion.semantics import (
    PAPER_CLASS_SETS,
    imagenet1k_hierarchy,
    paper_class_set,
    wordnet_class_masks,
    wordnet_class_sets,
)
from lsdiffusion.semantics import hierarchy as hierarchy_module


@pytest.fixture(scope="module")
def h():
    return imagenet1k_hierarchy()


@pytest.fixture(scope="module")
def lca_reference(h):
    """LCA depth of two classes from the records alone (plain Python, longest-path depth)."""
    parents = {rec.wnid: rec.parents for rec in h.records}

    @functools.cache
    def depth(wnid: str) -> int:
        return max((depth(p) + 1 for p in parents[wnid]), default=0)

    @functools.cache
    def ancestors(wnid: str) -> frozenset[str]:
        out = {wnid}
        for p in parents[wnid]:
            out |= ancestors(p)
        return frozenset(out)

    def lca(a: int, b: int) -> int:
        common = ancestors(h.wnids[a]) & ancestors(h.wnids[b])
        return max((depth(w) for w in common), default=-1)

    return lca


def _fallback_classes(h) -> list[int]:
    return [i for i in range(h.num_classes) if h.similar_basis(i).kind == "subtree"]


def test_large_fallback_sets_exist_without_a_cap(h):
    sizes = wordnet_class_masks().similar.sum(axis=1)
    big = np.flatnonzero(sizes > 100).tolist()
    assert len(big) == 14
    assert {721, 819} <= set(big)  # pillow and stage: all 521 artifacts
    assert sizes[721] == sizes[819] == 521
    assert all(h.similar_basis(i).kind == "subtree" for i in big)


@pytest.mark.parametrize("cap", [1, 5, 20, 100])
def test_max_size_caps_fallback_sets_and_leaves_siblings(h, cap):
    plain = wordnet_class_masks()
    capped = wordnet_class_masks(max_size=cap)
    sizes = capped.similar.sum(axis=1)
    fallback = np.zeros(h.num_classes, dtype=bool)
    fallback[_fallback_classes(h)] = True
    assert (sizes[fallback] <= cap).all()
    np.testing.assert_array_equal(
        sizes[fallback], np.minimum(plain.similar.sum(axis=1)[fallback], cap)
    )
    # siblings are never cut, even when there are more than the cap
    np.testing.assert_array_equal(capped.similar[~fallback], plain.similar[~fallback])
    # a capped set is part of the uncapped one, and the sets never overlap
    assert not (capped.similar & ~plain.similar).any()
    assert not (capped.similar & capped.dissimilar).any()
    assert not capped.similar.diagonal().any()


@pytest.mark.parametrize("cap", [1, 3, 20])
def test_retriever_snake_and_paper_sets_unchanged(cap):
    for target in (205, 206, 207, 208, 209):
        assert wordnet_class_sets(target, max_size=cap) == wordnet_class_sets(target)
    assert wordnet_class_sets(207, max_size=cap).similar == (205, 206, 208, 209)
    for target in PAPER_CLASS_SETS["snakes"]:
        assert wordnet_class_sets(target, max_size=cap) == wordnet_class_sets(target)
    assert paper_class_set("retrievers") == (205, 206, 207, 208, 209)
    assert paper_class_set("snakes") == (52, 53, 54, 56, 58)
    assert paper_class_set("figure1") == (266, 267, 833)


@pytest.mark.parametrize("target", [721, 819, 101, 488, 262])
@pytest.mark.parametrize("cap", [4, 30])
def test_kept_classes_are_the_closest_by_lca_depth(h, lca_reference, target, cap):
    full = wordnet_class_sets(target).similar
    kept = wordnet_class_sets(target, max_size=cap).similar
    order = sorted(full, key=lambda c: (-lca_reference(target, c), c))
    assert kept == tuple(sorted(order[:cap]))
    # against the library's own (C, C) LCA matrix, too
    lca = h.lca_depths()[target]
    assert min(lca[list(kept)]) >= max(lca[[c for c in full if c not in kept]])


def test_row_path_equals_mask_path(h, monkeypatch):
    rows = {t: h.class_sets(t, max_size=7) for t in (721, 819, 917, 52, 207)}
    masks = h.class_masks(max_size=7)
    for t, sets in rows.items():
        assert sets.similar == tuple(np.flatnonzero(masks.similar[t]).tolist())
        assert sets.dissimilar == tuple(np.flatnonzero(masks.dissimilar[t]).tolist())
    monkeypatch.setattr(hierarchy_module, "_MASK_LIMIT", 0)  # force the one-row path
    for t, sets in rows.items():
        assert h.class_sets(t, max_size=7) == sets


def test_max_size_errors(h):
    with pytest.raises(ValueError, match="max_size must be an int >= 1, got 0"):
        wordnet_class_sets(721, max_size=0)
    with pytest.raises(TypeError, match="max_size must be an int >= 1, got bool"):
        wordnet_class_sets(721, max_size=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_size must be >= min_size=5"):
        h.class_masks(min_size=5, max_size=3)
