"""Feature-distance class sets (method 2) and set consistency (Table G.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import special_ortho_group

from lsdiffusion.semantics import (
    ClassSetMasks,
    ClassSets,
    feature_class_masks,
    feature_class_sets,
    feature_set_sizes,
    set_consistency,
    wordnet_class_masks,
)

N_SUPER, N_GROUPS, N_MEMBERS, DIM = 4, 5, 5, 16  # 4 superclusters x 5 groups x 5 classes


def planted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids with a planted two-level hierarchy; returns (centroids, group, super)."""
    rng = np.random.default_rng(seed)
    supers = rng.normal(scale=100.0, size=(N_SUPER, DIM))
    groups = supers.repeat(N_GROUPS, 0) + rng.normal(scale=10.0, size=(N_SUPER * N_GROUPS, DIM))
    centroids = groups.repeat(N_MEMBERS, 0) + rng.normal(scale=0.5, size=(100, DIM))
    group = np.arange(100) // N_MEMBERS
    sup = np.arange(100) // (N_MEMBERS * N_GROUPS)
    return centroids, group, sup


def test_planted_groups_are_recovered() -> None:
    centroids, group, sup = planted()
    # 4% of 100 = the 4 other members of the group; 75% = the 3 other superclusters
    masks = feature_class_masks(centroids, similar_frac=0.04, dissimilar_frac=0.75)
    same_group = group[:, None] == group[None, :]
    np.fill_diagonal(same_group, False)
    assert (masks.similar == same_group).all()
    assert (masks.dissimilar == (sup[:, None] != sup[None, :])).all()
    for t in range(100):
        sim, dis = feature_class_sets(centroids, t, similar_frac=0.04, dissimilar_frac=0.75)
        assert set(sim) == set(np.flatnonzero(group == group[t])) - {t}
        assert set(dis) == set(np.flatnonzero(sup != sup[t]))


def test_default_sizes_for_imagenet() -> None:
    assert feature_set_sizes(1000) == (10, 900)
    assert feature_set_sizes(1000, 0.001, 0.998) == (1, 998)
    assert feature_set_sizes(200) == (2, 180)  # CUB-200
    assert feature_set_sizes(100) == (1, 90)  # 1% of 100 = 1
    assert feature_set_sizes(3, 0.01, 0.01) == (1, 1)  # at least one each
    assert feature_set_sizes(1000, 0.0125, 0.5) == (13, 500)  # 12.5 rounds half up


def test_thousand_random_classes_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(1000, 32)).astype(np.float32)
    masks = feature_class_masks(centroids)
    assert isinstance(masks, ClassSetMasks)
    assert (masks.similar.sum(1) == 10).all()
    assert (masks.dissimilar.sum(1) == 900).all()
    assert not (masks.similar & masks.dissimilar).any()
    assert not masks.similar.diagonal().any()
    assert not masks.dissimilar.diagonal().any()
    d = cdist(centroids.astype(np.float64), centroids.astype(np.float64))
    for t in range(0, 1000, 37):
        sets = feature_class_sets(centroids, t)
        assert isinstance(sets, ClassSets)
        assert tuple(np.flatnonzero(masks.similar[t])) == sets.similar
        assert tuple(np.flatnonzero(masks.dissimilar[t])) == sets.dissimilar
        order = [c for c in np.argsort(d[t], kind="stable") if c != t]
        assert set(sets.similar) == set(order[:10])
        assert set(sets.dissimilar) == set(order[-900:])
        # every similar class is closer than every dissimilar one
        assert d[t, list(sets.similar)].max() <= d[t, list(sets.dissimilar)].min()


def test_ties_break_by_class_index() -> None:
    centroids = np.array([[0.0], [1.0], [-1.0], [2.0], [-2.0], [3.0]])
    sim, dis = feature_class_sets(centroids, 0, similar_frac=0.2, dissimilar_frac=0.2)
    assert sim == (1,)  # 1 and 2 tie at distance 1: the lower index is closer
    assert dis == (5,)
    sim, dis = feature_class_sets(centroids, 0, similar_frac=0.2, dissimilar_frac=0.4)
    assert dis == (4, 5)
    masks = feature_class_masks(centroids, similar_frac=0.2, dissimilar_frac=0.4)
    assert tuple(np.flatnonzero(masks.similar[0])) == (1,)
    assert tuple(np.flatnonzero(masks.dissimilar[0])) == (4, 5)


def test_invariant_to_translation_rotation_and_scale() -> None:
    centroids, _, _ = planted(3)
    rot = special_ortho_group.rvs(DIM, random_state=0)
    moved = 3.7 * centroids @ rot + 1e3
    a = feature_class_masks(centroids, 0.05, 0.5)
    b = feature_class_masks(moved, 0.05, 0.5)
    assert (a.similar == b.similar).all()
    assert (a.dissimilar == b.dissimilar).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_torch_tensors(dtype: torch.dtype) -> None:
    centroids, _, _ = planted()
    t = torch.tensor(centroids, dtype=dtype, requires_grad=dtype != torch.bfloat16)
    a = feature_class_masks(t, 0.04, 0.75)
    b = feature_class_masks(t.detach().double().numpy(), 0.04, 0.75)
    assert isinstance(a.similar, np.ndarray)
    assert (a.similar == b.similar).all()
    assert (a.dissimilar == b.dissimilar).all()
    assert feature_class_sets(t, 7, 0.04, 0.75) == feature_class_sets(centroids, 7, 0.04, 0.75)


def test_input_not_modified() -> None:
    centroids, _, _ = planted()
    copy = centroids.copy()
    feature_class_masks(centroids)
    feature_class_sets(centroids, 3)
    assert (centroids == copy).all()


def test_bad_centroids() -> None:
    with pytest.raises(ValueError, match=r"2-D \(C, D\), got shape \(10,\)"):
        feature_class_sets(np.zeros(10), 0)
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4\)"):
        feature_class_masks(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="D >= 1"):
        feature_class_masks(np.zeros((10, 0)))
    bad = np.ones((20, 3))
    bad[4, 1] = np.nan
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"finite; rows \[4, 7\]"):
        feature_class_masks(bad, 0.1, 0.5)
    with pytest.raises(ValueError, match="finite"):
        feature_class_sets(torch.tensor(bad), 0, 0.1, 0.5)
    with pytest.raises(TypeError, match="real numeric"):
        feature_class_masks(np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(TypeError, match="real"):
        feature_class_masks(torch.zeros(5, 2, dtype=torch.complex64))


def test_bad_fractions_and_target() -> None:
    centroids = np.random.default_rng(0).normal(size=(50, 4))
    for frac in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"similar_frac must be in \(0, 1\]"):
            feature_class_sets(centroids, 0, similar_frac=frac)
        with pytest.raises(ValueError, match=r"dissimilar_frac must be in \(0, 1\]"):
            feature_class_masks(centroids, dissimilar_frac=frac)
    with pytest.raises(TypeError, match="similar_frac must be a float"):
        feature_class_masks(centroids, similar_frac="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"leave no room.*C=50.*1 \+ 50 = 51 of the C - 1 = 49"):
        feature_class_masks(centroids, dissimilar_frac=1.0)
    with pytest.raises(ValueError, match="leave no room"):
        feature_class_masks(centroids, similar_frac=0.5, dissimilar_frac=0.5)
    with pytest.raises(ValueError, match=r"leave no room.*C=2"):
        feature_class_masks(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"target must be in \[0, 49\] for C=50 centroids, got 50"):
        feature_class_sets(centroids, 50)
    with pytest.raises(ValueError, match="got -1"):
        feature_class_sets(centroids, -1)
    with pytest.raises(TypeError, match="target must be a class index"):
        feature_class_sets(centroids, "golden retriever")  # type: ignore[arg-type]


# -------------------------------------------------------------- set_consistency
def test_consistency_of_index_collections() -> None:
    assert set_consistency([1, 2, 3, 4], [2, 4, 9]) == 0.5
    assert set_consistency((1, 2), []) == 0.0
    assert set_consistency(np.array([5]), torch.tensor([5, 6])) == 1.0
    # not symmetric: |A ∩ B| / |A|
    assert set_consistency([1], [1, 2, 3, 4]) == 1.0
    assert set_consistency([1, 2, 3, 4], [1]) == 0.25


def test_consistency_of_masks_is_vectorised() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((50, 50)) < 0.3
    b = rng.random((50, 50)) < 0.3
    a[7] = False
    out = set_consistency(a, b)
    assert isinstance(out, np.ndarray)
    assert out.shape == (50,)
    assert np.isnan(out[7])
    for t in range(50):
        if t != 7:
            expected = set_consistency(np.flatnonzero(a[t]), np.flatnonzero(b[t]))
            assert out[t] == pytest.approx(expected)
    assert set_consistency(a[0], b[0]) == pytest.approx(out[0])
    assert (set_consistency(torch.from_numpy(a), torch.from_numpy(b)) == out)[~np.isnan(out)].all()


def test_consistency_between_wordnet_and_feature_sets() -> None:
    # Table G.1-style: WordNet similar sets vs feature similar sets over all classes
    wn = wordnet_class_masks()
    rng = np.random.default_rng(0)
    feat = feature_class_masks(rng.normal(size=(1000, 8)))
    per_class = set_consistency(wn.similar, feat.similar)
    assert per_class.shape == (1000,)
    assert 0.0 <= np.nanmean(per_class) < 0.1  # random features agree by chance only
    assert (set_consistency(wn.similar, wn.similar) == 1.0).all()


def test_consistency_errors() -> None:
    with pytest.raises(ValueError, match="a must hold at least one class"):
        set_consistency([], [1])
    with pytest.raises(ValueError, match="a must not repeat"):
        set_consistency([1, 1], [1])
    with pytest.raises(ValueError, match="b must not repeat"):
        set_consistency([1], [2, 2])
    with pytest.raises(TypeError, match="both be bool masks"):
        set_consistency(np.array([True, False]), [0])
    with pytest.raises(ValueError, match=r"same shape.*\(3,\) and \(4,\)"):
        set_consistency(np.zeros(3, bool), np.zeros(4, bool))
    with pytest.raises(ValueError, match="all-False"):
        set_consistency(np.zeros(3, bool), np.ones(3, bool))
    with pytest.raises(TypeError, match="int class indices"):
        set_consistency([0.5, 1.5], [1])
    with pytest.raises(TypeError, match="1-D"):
        set_consistency([[1, 2]], [1])


def test_masks_agree_with_sets_for_nearly_coincident_centroids():
    rng = np.random.default_rng(0)
    far = rng.normal(size=(20, 16)) * 1e3
    base = rng.normal(size=16) * 1e3
    near = base + 1e-8 * np.linalg.norm(base) * rng.normal(size=(10, 16))
    centroids = np.concatenate([near, far])
    masks = feature_class_masks(centroids, similar_frac=0.1, dissimilar_frac=0.5)
    for t in range(30):
        sim, dis = feature_class_sets(centroids, t, similar_frac=0.1, dissimilar_frac=0.5)
        assert np.flatnonzero(masks.similar[t]).tolist() == list(sim), t
        assert np.flatnonzero(masks.dissimilar[t]).tolist() == list(dis), t
