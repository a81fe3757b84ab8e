"""CIFAR-100's embedded hierarchy: the dataset's fine and coarse labels, and its class sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lsdiffusion
from lsdiffusion.semantics import (
    ClassLookupError,
    cifar100_class_masks,
    cifar100_class_names,
    cifar100_class_sets,
    cifar100_hierarchy,
    cifar100_superclasses,
)

# The dataset's published coarse label of each fine label (the `coarse_labels`
# that go with `fine_labels` in the python version's train/test files), typed
# independently of the embedded table.
PUBLISHED_COARSE = [
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
]  # fmt: skip

COARSE_NAMES = [
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes",
    "large_omnivores_and_herbivores", "medium_mammals", "non-insect_invertebrates", "people",
    "reptiles", "small_mammals", "trees", "vehicles_1", "vehicles_2",
]  # fmt: skip


def test_fine_labels_are_the_datasets_alphabetical_order() -> None:
    names = cifar100_class_names()
    assert len(names) == 100
    assert len(set(names)) == 100
    assert list(names) == sorted(names)
    assert (names[0], names[1], names[19], names[47], names[83], names[99]) == (
        "apple", "aquarium_fish", "cattle", "maple_tree", "sweet_pepper", "worm",
    )  # fmt: skip


def test_superclasses_match_the_published_coarse_labels() -> None:
    supers = cifar100_superclasses()
    assert list(supers) == COARSE_NAMES
    assert all(len(members) == 5 for members in supers.values())
    coarse = [-1] * 100
    for j, members in enumerate(supers.values()):
        for i in members:
            assert coarse[i] == -1
            coarse[i] = j
    assert coarse == PUBLISHED_COARSE
    names = cifar100_class_names()
    known = {
        "apple": "fruit_and_vegetables",
        "maple_tree": "trees",
        "whale": "aquatic_mammals",
        "ray": "fish",
        "mushroom": "fruit_and_vegetables",
        "chimpanzee": "large_omnivores_and_herbivores",
        "lawn_mower": "vehicles_2",
        "pickup_truck": "vehicles_1",
        "spider": "non-insect_invertebrates",
        "keyboard": "household_electrical_devices",
    }
    for fine, sup in known.items():
        assert names.index(fine) in supers[sup]


def test_class_sets_follow_the_superclasses() -> None:
    names = cifar100_class_names()
    sim, dis = cifar100_class_sets("maple_tree")
    assert [names[i] for i in sim] == ["oak_tree", "palm_tree", "pine_tree", "willow_tree"]
    assert len(dis) == 95
    assert not set(dis) & {47, *sim}
    supers = list(cifar100_superclasses().values())
    masks = cifar100_class_masks()
    for t in range(100):
        group = next(g for g in supers if t in g)
        s, d = cifar100_class_sets(t)
        assert s == tuple(sorted(set(group) - {t}))
        assert d == tuple(sorted(set(range(100)) - set(group)))
        assert np.flatnonzero(masks.similar[t]).tolist() == list(s)
        assert np.flatnonzero(masks.dissimilar[t]).tolist() == list(d)


def test_lookup_forms() -> None:
    want = cifar100_class_sets(47)
    for ref in ("maple tree", "Maple_Tree", "47", np.int64(47), torch.tensor(47)):
        assert cifar100_class_sets(ref) == want  # type: ignore[arg-type]
    assert cifar100_hierarchy().similar_basis(47).synsets == ("trees",)
    with pytest.raises(ClassLookupError, match="close matches: 'maple tree'"):
        cifar100_class_sets("maple tre")
    with pytest.raises(ClassLookupError, match=r"\[0, 99\], got 100"):
        cifar100_class_sets(100)


def test_exported_from_the_package() -> None:
    assert lsdiffusion.cifar100_class_sets is cifar100_class_sets
    assert lsdiffusion.cifar100_hierarchy is cifar100_hierarchy
    assert lsdiffusion.cifar100_class_masks is cifar100_class_masks


def test_unknown_name_hint_speaks_cifar100() -> None:
    """The hint names CIFAR-100's own ids and names (no 'wnid', no 'WordNet lemma')."""
    with pytest.raises(ClassLookupError) as info:
        cifar100_class_sets("mapel_tree")
    msg = str(info.value)
    assert "close matches: 'maple tree' (47)" in msg
    assert "wnid" not in msg
    assert "WordNet" not in msg
    assert "id (e.g. 'cifar100.fine.00') or a class name (e.g. 'apple')" in msg


def test_the_ids_the_hint_gives_are_looked_up() -> None:
    h = cifar100_hierarchy()
    assert h.index("cifar100.fine.47") == 47
    with pytest.raises(ClassLookupError, match=r"'cifar100.coarse.17' is trees, an ancestor of 5"):
        h.index("cifar100.coarse.17")


def test_a_superclass_name_is_named_as_one() -> None:
    """'trees' is CIFAR-100's superclass of five classes, not a misspelt 'oak tree'."""
    with pytest.raises(ClassLookupError) as info:
        cifar100_class_sets("trees")
    msg = str(info.value)
    assert "target name 'trees' is trees, an ancestor of 5 classes, not a class itself" in msg
    assert "maple tree" in msg
