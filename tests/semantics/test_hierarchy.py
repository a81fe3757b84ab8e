"""Embedded ImageNet-1K hierarchy, lookup and WordNet class sets (no nltk needed)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest

from lsdiffusion.semantics import (
    DEFAULT_DISSIMILAR_DEPTH,
    DEFAULT_MIN_SIZE,
    PAPER_CLASS_SETS,
    ClassHierarchy,
    ClassLookupError,
    ClassSets,
    SimilarBasis,
    SynsetRecord,
    find_class,
    imagenet1k_hierarchy,
    imagenet1k_wnids,
    paper_class_set,
    wordnet_class_masks,
    wordnet_class_sets,
)


@pytest.fixture(scope="module")
def h() -> ClassHierarchy:
    return imagenet1k_hierarchy()


def classes_under(h: ClassHierarchy, synset: str) -> set[int]:
    return {i for i in range(h.num_classes) if synset in h.ancestors(i)}


# ----------------------------------------------------------------- shipped data
def test_embedded_data_shape(h: ClassHierarchy) -> None:
    assert h.num_classes == 1000
    assert len(h.records) == 1860
    assert h.source == "WordNet 3.0"
    assert h.wnids == imagenet1k_wnids()
    assert len(set(h.wnids)) == 1000
    assert h.wnids[207] == "n02099601"
    assert h.names[207] == "golden retriever"
    assert h.synset_names[207] == "golden_retriever.n.01"
    # every synset descends from entity.n.01, the only root
    roots = [r for r in h.records if not r.parents]
    assert [r.name for r in roots] == ["entity.n.01"]
    # the figures: 75 synsets with several parents, 323 classes without siblings
    assert sum(len(r.parents) > 1 for r in h.records) == 75
    assert sum(len(h._siblings(i)) == 0 for i in range(1000)) == 323


def test_shipped_files_are_package_data() -> None:
    data = resources.files("lsdiffusion.semantics") / "data"
    for name in ("imagenet1k_hierarchy.tsv.gz", "imagenet1k_wnids.txt", "lexnames"):
        assert (data / name).is_file(), name
    assert (data / "WORDNET_LICENSE").is_file()
    raw = (data / "imagenet1k_hierarchy.tsv.gz").read_bytes()
    assert len(raw) < 60_000
    text = gzip.decompress(raw).decode()
    assert ClassHierarchy.from_text(text).to_text() == text  # canonical form


def test_import_is_lazy_and_needs_no_nltk() -> None:
    code = (
        "import sys\n"
        "import lsdiffusion, lsdiffusion.semantics as s\n"
        "assert s.imagenet1k_hierarchy.cache_info().currsize == 0\n"
        "assert s.wordnet_class_sets('golden retriever').similar == (205, 206, 208, 209)\n"
        "assert 'nltk' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------- lookup
@pytest.mark.parametrize(
    "ref",
    [
        207,
        np.int64(207),
        "n02099601",
        "golden retriever",
        "golden_retriever",
        "GOLDEN RETRIEVER",
        "  Golden-Retriever ",
        "golden_retriever.n.01",
    ],
)
def test_lookup_forms(h: ClassHierarchy, ref: object) -> None:
    assert h.index(ref) == 207  # type: ignore[arg-type]
    assert find_class(ref) == 207  # type: ignore[arg-type]


def test_lookup_other_lemmas(h: ClassHierarchy) -> None:
    assert h.index("Tinca tinca") == 0
    assert h.index("flat coated retriever") == 205
    assert h.index("Labrador retriever") == 208


def test_partial_name_suggests_classes_containing_it(h: ClassHierarchy) -> None:
    with pytest.raises(ClassLookupError, match="'Labrador retriever' \\(208\\)"):
        h.index("labrador")


def test_misspelled_name_lists_close_matches(h: ClassHierarchy) -> None:
    with pytest.raises(ClassLookupError, match="close matches") as info:
        h.index("golden retriver")
    msg = str(info.value)
    assert "'golden retriever' (207)" in msg
    assert "golden retriver" in msg


def test_unknown_name_without_close_match(h: ClassHierarchy) -> None:
    with pytest.raises(ClassLookupError, match="matches no class") as info:
        h.index("qqqqqqqqqqqqqqq")
    assert "close matches" not in str(info.value)


@pytest.mark.parametrize(("name", "indices"), [("crane", (134, 517)), ("maillot", (638, 639))])
def test_ambiguous_name_lists_candidates(h: ClassHierarchy, name: str, indices: tuple[int, ...]):
    with pytest.raises(ClassLookupError, match="ambiguous") as info:
        h.index(name)
    for i in indices:
        assert f"{i} {h.wnids[i]}" in str(info.value)


def test_lookup_errors(h: ClassHierarchy) -> None:
    with pytest.raises(ClassLookupError, match=r"\[0, 999\], got 1000"):
        h.index(1000)
    with pytest.raises(ClassLookupError, match=r"got -1"):
        h.index(-1)
    with pytest.raises(ClassLookupError, match="not one of the 1000 classes"):
        h.index("n99999999")
    with pytest.raises(ClassLookupError, match=r"dog\.n\.01, an ancestor of 118 classes"):
        h.index("n02084071")
    with pytest.raises(TypeError, match="got float"):
        h.index(2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="got bool"):
        h.index(True)
    # a lookup error is both a ValueError and a LookupError
    assert issubclass(ClassLookupError, ValueError)
    assert issubclass(ClassLookupError, LookupError)


# ------------------------------------------------------------------- class sets
def test_golden_retriever(h: ClassHierarchy) -> None:
    sets = wordnet_class_sets(207)
    assert isinstance(sets, ClassSets)
    assert sets.similar == (205, 206, 208, 209)
    assert wordnet_class_sets("golden retriever") == sets
    assert h.similar_basis(207) == SimilarBasis("siblings", ("retriever.n.01",))
    assert 833 in sets.dissimilar  # submarine
    assert 207 not in sets.similar
    assert 207 not in sets.dissimilar


def test_colubrid_similar_sets_stay_within_colubrids(h: ClassHierarchy) -> None:
    colubrids = classes_under(h, "colubrid_snake.n.01")
    assert colubrids == set(range(52, 61))
    for min_size in (1, 2, 4, 8):
        for i in colubrids:
            similar = set(wordnet_class_sets(i, min_size=min_size).similar)
            assert similar
            assert similar <= colubrids - {i}


def test_snakes_paper_set_is_within_each_others_similar_sets() -> None:
    snakes = paper_class_set("snakes")
    for i in snakes:
        assert set(snakes) - {i} <= set(wordnet_class_sets(i).similar)


@pytest.mark.parametrize("depth", [*range(0, 13)])
def test_no_dog_is_dissimilar_to_a_dog(h: ClassHierarchy, depth: int) -> None:
    dogs = np.array(sorted(classes_under(h, "dog.n.01")))
    assert len(dogs) == 118
    dis = wordnet_class_masks(dissimilar_depth=depth).dissimilar
    assert not dis[np.ix_(dogs, dogs)].any()


def test_default_dissimilar_sets_of_dogs_hold_no_organisms_and_are_large(h: ClassHierarchy):
    organisms = classes_under(h, "organism.n.01")
    for i in sorted(classes_under(h, "dog.n.01")):
        dis = set(wordnet_class_sets(i).dissimilar)
        assert not dis & organisms
        assert len(dis) >= 580
    # a submarine is dissimilar to every dog, and a dog to every artifact
    assert classes_under(h, "artifact.n.01") <= set(wordnet_class_sets(207).dissimilar)


def test_figure1_trio(h: ClassHierarchy) -> None:
    mini, standard, submarine = paper_class_set("figure1")
    assert standard in wordnet_class_sets(mini).similar
    assert submarine in wordnet_class_sets(mini).dissimilar
    assert h.names[submarine] == "submarine"


def test_paper_class_sets() -> None:
    assert paper_class_set("retrievers") == (205, 206, 207, 208, 209)
    assert paper_class_set("Snakes") == (52, 53, 54, 56, 58)
    assert paper_class_set("figure_1") == (266, 267, 833)
    assert dict(PAPER_CLASS_SETS) == {
        "retrievers": (205, 206, 207, 208, 209),
        "snakes": (52, 53, 54, 56, 58),
        "figure1": (266, 267, 833),
    }
    h = imagenet1k_hierarchy()
    names = [h.names[i] for i in paper_class_set("snakes")]
    assert names == [
        "thunder snake",
        "ringneck snake",
        "hognose snake",
        "king snake",
        "water snake",
    ]
    with pytest.raises(ClassLookupError, match="retrievers"):
        paper_class_set("dogs")


def test_fallback_for_classes_without_siblings(h: ClassHierarchy) -> None:
    # the three sharks have different immediate hypernyms: fallback to shark.n.01
    assert h.similar_basis(2) == SimilarBasis("subtree", ("shark.n.01",))
    assert wordnet_class_sets(2).similar == (3, 4)
    # the daisy's nearest relative is the yellow lady's slipper (flower.n.01)
    assert wordnet_class_sets("daisy").similar == (h.index("yellow lady's slipper"),)
    assert h.similar_basis("daisy") == SimilarBasis("subtree", ("flower.n.01",))
    # a larger min_size climbs to the smallest subtree that is big enough
    assert h.similar_basis(2, min_size=4).synsets == ("elasmobranch.n.01",)
    assert len(wordnet_class_sets(2, min_size=4).similar) == 4
    for i in range(1000):
        sim = wordnet_class_sets(i).similar
        if h.similar_basis(i).kind == "subtree":
            assert len(sim) >= DEFAULT_MIN_SIZE
        else:
            assert sim


def test_multi_parent_class_unions_its_siblings(h: ClassHierarchy) -> None:
    # accordion.n.01 is both a free-reed and a keyboard instrument
    i = h.index("accordion")
    basis = h.similar_basis(i)
    assert basis.kind == "siblings"
    assert set(basis.synsets) == {"free-reed_instrument.n.01", "keyboard_instrument.n.01"}
    recs = {r.name: r for r in h.records}
    children = {
        c
        for parent in basis.synsets
        for c in range(1000)
        if recs[parent].wnid in recs[h.synset_names[c]].parents
    }
    sim = set(wordnet_class_sets(i).similar)
    assert sim == children - {i}
    # harmonica (a free-reed instrument) and organ (a keyboard instrument)
    assert sim == {h.index("harmonica"), h.index("organ")}


def test_masks_match_single_target_sets(h: ClassHierarchy) -> None:
    for min_size, depth in [(DEFAULT_MIN_SIZE, DEFAULT_DISSIMILAR_DEPTH), (2, 0), (5, 6)]:
        masks = h.class_masks(min_size=min_size, dissimilar_depth=depth)
        assert masks.similar.shape == masks.dissimilar.shape == (1000, 1000)
        assert not masks.similar.diagonal().any()
        assert not masks.dissimilar.diagonal().any()
        assert not (masks.similar & masks.dissimilar).any()
        for i in range(1000):
            sim, dis = h.class_sets(i, min_size=min_size, dissimilar_depth=depth)
            assert tuple(np.flatnonzero(masks.similar[i])) == sim
            assert tuple(np.flatnonzero(masks.dissimilar[i])) == dis
            # the row-by-row path used for more than 4096 classes gives the same sets
            assert h._class_sets_direct(i, min_size, depth) == (sim, dis)


def test_masks_are_cached_and_read_only(h: ClassHierarchy) -> None:
    a = wordnet_class_masks()
    assert wordnet_class_masks() is a
    with pytest.raises(ValueError, match="read-only"):
        a.similar[0, 1] = True


def test_dissimilar_matches_lca_depths(h: ClassHierarchy) -> None:
    lca = h.lca_depths()
    assert lca.shape == (1000, 1000)
    assert (lca == lca.T).all()
    assert (np.diagonal(lca) == [h.depth(i) for i in range(1000)]).all()
    assert lca[207, 208] == h.depth(207) - 1  # retriever.n.01
    assert lca[207, 833] == 3  # whole.n.02
    for depth in (0, 3, 5, 8):
        masks = h.class_masks(dissimilar_depth=depth)
        expected = (lca <= depth) & ~masks.similar
        np.fill_diagonal(expected, False)
        assert (masks.dissimilar == expected).all()


def test_similar_and_dissimilar_never_overlap(h: ClassHierarchy) -> None:
    lca = h.lca_depths()
    for depth in range(8):
        masks = h.class_masks(dissimilar_depth=depth)
        assert not (masks.similar & masks.dissimilar).any()
        # the dissimilar relation is symmetric up to the similar sets taken out of it
        raw = lca <= depth
        np.fill_diagonal(raw, False)
        assert ((raw & ~masks.similar) == masks.dissimilar).all()
        assert (raw == raw.T).all()
    # with the defaults, 6 classes have a similar set taken under a shallow synset
    masks = h.class_masks()
    shallow = {int(i) for i, c in zip(*masks.similar.nonzero(), strict=True) if lca[i, c] <= 3}
    assert {h.names[i] for i in shallow} == {
        "street sign",
        "traffic light",
        "bubble",
        "cliff",
        "geyser",
        "valley",
    }


def test_set_sizes_are_reasonable(h: ClassHierarchy) -> None:
    masks = h.class_masks()
    sim_sizes = masks.similar.sum(1)
    dis_sizes = masks.dissimilar.sum(1)
    assert sim_sizes.min() >= 1
    assert np.median(sim_sizes) <= 10
    assert dis_sizes.min() >= 400


def test_bad_parameters(h: ClassHierarchy) -> None:
    with pytest.raises(ValueError, match="min_size must be an int >= 1, got 0"):
        wordnet_class_sets(207, min_size=0)
    with pytest.raises(ValueError, match=r"min_size must be <= C - 1 = 999"):
        wordnet_class_sets(207, min_size=1000)
    with pytest.raises(TypeError, match="min_size must be an int"):
        wordnet_class_sets(207, min_size=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dissimilar_depth must be an int >= 0, got -1"):
        wordnet_class_sets(207, dissimilar_depth=-1)
    with pytest.raises(TypeError, match="dissimilar_depth"):
        wordnet_class_masks(dissimilar_depth=None)  # type: ignore[arg-type]


def test_depth_beyond_the_tree_makes_everything_dissimilar(h: ClassHierarchy) -> None:
    masks = h.class_masks(dissimilar_depth=100)
    assert (masks.dissimilar | masks.similar).sum() == 1000 * 999


def test_ancestors_and_describe(h: ClassHierarchy) -> None:
    anc = h.ancestors(207)
    assert anc[0] == "entity.n.01"
    assert anc[-1] == "retriever.n.01"
    assert "dog.n.01" in anc
    assert "domestic_animal.n.01" in anc
    assert h.describe(207) == "  207  n02099601  golden retriever"
    assert h.lemmas("crane.n.04") == ("crane",)


# ----------------------------------------------------------- a toy hierarchy
def toy() -> ClassHierarchy:
    r"""Classes in caps; ``ab`` has two parents.

    ::

        r ── a ── A1, A2, AB
         └── b ── B1, AB, bx ── B2
         └── c ── cx ── C1
                  cy ── C2     (c ── cy: C1 and C2 are cousins under c)
    """
    rec = {
        "n00000001": ("r.n.01", ()),
        "n00000002": ("a.n.01", ("n00000001",)),
        "n00000003": ("b.n.01", ("n00000001",)),
        "n00000004": ("bx.n.01", ("n00000003",)),
        "n00000005": ("c.n.01", ("n00000001",)),
        "n00000006": ("cx.n.01", ("n00000005",)),
        "n00000007": ("cy.n.01", ("n00000005",)),
        "n00000010": ("a1.n.01", ("n00000002",)),
        "n00000011": ("a2.n.01", ("n00000002",)),
        "n00000012": ("ab.n.01", ("n00000002", "n00000003")),
        "n00000013": ("b1.n.01", ("n00000003",)),
        "n00000014": ("b2.n.01", ("n00000004",)),
        "n00000015": ("c1.n.01", ("n00000006",)),
        "n00000016": ("c2.n.01", ("n00000007",)),
    }
    records = [SynsetRecord(w, n, p, (n.split(".")[0],)) for w, (n, p) in rec.items()]
    classes = ["n00000010", "n00000011", "n00000012", "n00000013", "n00000014"]
    return ClassHierarchy(records, [*classes, "n00000015", "n00000016"], source="toy")


def test_toy_siblings_union_over_parents() -> None:
    t = toy()
    a1, a2, ab, b1, _b2, _c1, _c2 = range(7)
    assert t.class_sets("ab", dissimilar_depth=0).similar == (a1, a2, b1)
    assert t.class_sets(a1).similar == (a2, ab)
    assert t.class_sets(b1).similar == (ab,)
    assert t.similar_basis(ab).synsets == ("a.n.01", "b.n.01")


def test_toy_fallback_and_ties() -> None:
    t = toy()
    a1, a2, ab, b1, b2, c1, c2 = range(7)
    # b2 has no siblings: bx holds only b2, b holds {b1, ab, b2}
    assert t.similar_basis(b2, min_size=1) == SimilarBasis("subtree", ("b.n.01",))
    assert t.class_sets(b2, min_size=2).similar == (ab, b1)
    assert t.class_sets(b2, min_size=3).similar == (a1, a2, ab, b1, c1, c2)  # root
    assert t.class_sets(c1, min_size=1).similar == (c2,)  # cousins under c
    with pytest.raises(ValueError, match="min_size must be <= C - 1 = 6"):
        t.class_sets(b2, min_size=7)


def test_toy_depth_and_dissimilar() -> None:
    t = toy()
    a1, _a2, ab, b1, b2, c1, c2 = range(7)
    assert [t.depth(i) for i in range(7)] == [2, 2, 2, 2, 3, 3, 3]
    lca = t.lca_depths()
    assert lca[a1, b1] == 0
    assert lca[ab, b1] == 1
    assert lca[ab, a1] == 1
    assert lca[b1, b2] == 1
    assert lca[c1, c2] == 1
    assert t.class_sets(ab, dissimilar_depth=0).dissimilar == (c1, c2)
    assert t.class_sets(a1, dissimilar_depth=0).dissimilar == (b1, b2, c1, c2)
    # LCA(a1, a2) = a1's depth-1 parent a, but a2 and ab are a1's siblings: not dissimilar
    assert t.class_sets(a1, dissimilar_depth=1).dissimilar == (b1, b2, c1, c2)
    assert t.class_sets(b2, min_size=3, dissimilar_depth=1).dissimilar == ()


def test_toy_masks_match_single_sets() -> None:
    t = toy()
    for m in (1, 2, 3):
        for k in (0, 1, 2, 3):
            masks = t.class_masks(min_size=m, dissimilar_depth=k)
            for i in range(7):
                sim, dis = t.class_sets(i, min_size=m, dissimilar_depth=k)
                assert tuple(np.flatnonzero(masks.similar[i])) == sim
                assert tuple(np.flatnonzero(masks.dissimilar[i])) == dis
                assert t._class_sets_direct(i, m, k) == (sim, dis)


def test_class_that_is_an_ancestor_of_another_class() -> None:
    # ImageNet-21k style: "b" itself is a class, above b1, ab and b2
    t = toy()
    recs = t.records
    h = ClassHierarchy(recs, ["n00000003", "n00000013", "n00000014", "n00000010"])
    b, b1, b2, a1 = range(4)
    # b1 has no sibling class (its parent b is itself a class): fallback to b's subtree
    assert h.class_sets(b1).similar == (b, b2)
    assert h.similar_basis(b1) == SimilarBasis("subtree", ("b.n.01",))
    assert h.lca_depths()[b, b2] == 1  # b is its own ancestor
    assert b not in h.class_sets(b2, dissimilar_depth=0).dissimilar
    assert a1 in h.class_sets(b2, dissimilar_depth=0).dissimilar


def test_separate_roots_get_lca_depth_minus_one() -> None:
    recs = [
        SynsetRecord("v00000001", "x.v.01", (), ("x",)),
        SynsetRecord("v00000002", "y.v.01", (), ("y",)),
        SynsetRecord("v00000003", "x1.v.01", ("v00000001",), ("x1",)),
        SynsetRecord("v00000005", "x2.v.01", ("v00000001",), ("x2",)),
        SynsetRecord("v00000004", "y1.v.01", ("v00000002",), ("y1",)),
    ]
    h = ClassHierarchy(recs, ["v00000003", "v00000005", "v00000004"])
    x1, x2, y1 = range(3)
    assert h.lca_depths()[x1, y1] == -1
    assert h.lca_depths()[x1, x2] == 0
    assert h.class_sets(x1, min_size=1, dissimilar_depth=0) == ((x2,), (y1,))
    with pytest.raises(ValueError, match="no ancestor of class 2"):
        h.class_sets(y1, min_size=1)


def test_save_load_round_trip(tmp_path) -> None:
    t = toy()
    for name in ("toy.tsv", "toy.tsv.gz"):
        t.save(tmp_path / name)
        back = ClassHierarchy.load(tmp_path / name)
        assert back.to_text() == t.to_text()
        assert back.source == "toy"
        assert back.wnids == t.wnids
    # gzip output is reproducible byte for byte
    t.save(tmp_path / "again.tsv.gz")
    assert (tmp_path / "again.tsv.gz").read_bytes() == (tmp_path / "toy.tsv.gz").read_bytes()


def test_save_load_round_trips_names_with_spaces_and_percent(tmp_path) -> None:
    recs = [
        SynsetRecord("n00000001", "animal.n.01", (), ("animal",)),
        SynsetRecord("n00000002", "big_cat.n.01", ("n00000001",), ("big cat", "50%_cat")),
        SynsetRecord("n00000003", "dog.n.01", ("n00000001",), ("dog", "a%20b")),
    ]
    h = ClassHierarchy(recs, ["n00000002", "n00000003"], source="hand made")
    h.save(tmp_path / "h.tsv")
    back = ClassHierarchy.load(tmp_path / "h.tsv")
    assert sorted(back.records) == sorted(h.records)
    assert back.lemmas(0) == ("big cat", "50%_cat")
    assert back.lemmas(1) == ("dog", "a%20b")
    assert back.index("big cat") == 0
    assert back.names == ("big cat", "dog")


@pytest.mark.parametrize("bad", ["big\tcat", "big\ncat", "big\rcat"])
def test_save_rejects_tab_and_newline_in_names(tmp_path, bad) -> None:
    bad = bad.encode().decode("unicode_escape")
    root = SynsetRecord("n00000001", "animal.n.01", (), ("animal",))
    for rec in (
        SynsetRecord("n00000002", "x.n.01", ("n00000001",), (bad,)),
        SynsetRecord("n00000002", bad, ("n00000001",), ("x",)),
    ):
        h = ClassHierarchy([root, rec], ["n00000002"])
        with pytest.raises(ValueError, match="must not contain"):
            h.save(tmp_path / "h.tsv")
        assert not (tmp_path / "h.tsv").exists()
    with pytest.raises(ValueError, match="source must not contain"):
        ClassHierarchy([root], ["n00000001"], source="a\nb").save(tmp_path / "h.tsv")
    spaced = SynsetRecord("n 0000002", "x.n.01", ("n00000001",), ("x",))
    with pytest.raises(ValueError, match="wnid without whitespace"):
        ClassHierarchy([root, spaced], ["n 0000002"]).to_text()


def test_invalid_hierarchies() -> None:
    r = SynsetRecord("n00000001", "r.n.01", (), ("r",))
    x = SynsetRecord("n00000002", "x.n.01", ("n00000001",), ("x",))
    with pytest.raises(ValueError, match="unique wnids"):
        ClassHierarchy([r, r], ["n00000001"])
    with pytest.raises(ValueError, match="without a record"):
        ClassHierarchy([x], ["n00000002"])
    with pytest.raises(ValueError, match="unknown wnids"):
        ClassHierarchy([r, x], ["n00000009"])
    with pytest.raises(ValueError, match="duplicates"):
        ClassHierarchy([r, x], ["n00000002", "n00000002"])
    loop = [
        SynsetRecord("n00000001", "r.n.01", ("n00000002",), ("r",)),
        SynsetRecord("n00000002", "x.n.01", ("n00000001",), ("x",)),
    ]
    with pytest.raises(ValueError, match="acyclic"):
        ClassHierarchy(loop, ["n00000002"])
    with pytest.raises(ValueError, match="header"):
        ClassHierarchy.from_text("wnid\tname\n")
    head = "wnid\tsynset\tclass\tparents\tlemmas\n"
    with pytest.raises(ValueError, match="5 tab-separated fields"):
        ClassHierarchy.from_text(head + "n00000001\tr.n.01\t0\n")
    with pytest.raises(ValueError, match="without gaps"):
        ClassHierarchy.from_text(head + "n00000001\tr.n.01\t1\t\tr\n")


def test_targets_as_integer_tensors_and_arrays() -> None:
    import torch

    want = wordnet_class_sets(207)
    for ref in (torch.tensor(207), torch.tensor([207]), np.int32(207), np.array(207)):
        assert wordnet_class_sets(ref) == want  # type: ignore[arg-type]
    for bad in (torch.tensor(207.0), torch.tensor([207, 208]), torch.tensor(True), 207.0):
        with pytest.raises(TypeError, match="target must be a class index"):
            wordnet_class_sets(bad)  # type: ignore[arg-type]
