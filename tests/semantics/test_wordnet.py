"""The nltk path: regeneration of the shipped data, agreement, other class lists, errors."""

from __future__ import annotations

import gzip
import runpy
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from lsdiffusion.semantics import (
    ClassHierarchy,
    ClassLookupError,
    WordNetUnavailableError,
    imagenet1k_hierarchy,
    imagenet1k_wnids,
    prepare_wordnet_corpus,
    wordnet_hierarchy,
)
from lsdiffusion.semantics.wordnet import load_wordnet

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build_imagenet_hierarchy.py"
DEBIAN_WORDNET = Path("/usr/share/wordnet")


def test_shipped_hierarchy_matches_a_fresh_regeneration(nltk_imagenet: ClassHierarchy) -> None:
    shipped = resources.files("lsdiffusion.semantics") / "data" / "imagenet1k_hierarchy.tsv.gz"
    text = gzip.decompress(shipped.read_bytes()).decode("utf-8")
    assert nltk_imagenet.to_text().splitlines() == text.splitlines()
    assert nltk_imagenet.to_text() == text


@pytest.mark.skipif(not SCRIPT.is_file(), reason="scripts/ not in this checkout")
def test_regeneration_script(nltk_data: Path, wn, tmp_path: Path, capsys) -> None:
    main = runpy.run_path(str(SCRIPT), run_name="build_imagenet_hierarchy")["main"]
    assert main(["--nltk-data", str(nltk_data), "--check"]) == 0
    assert "up to date" in capsys.readouterr().out
    # writing into another folder gives the same content (the gzip header has no time stamp)
    out = tmp_path / "data"
    assert main(["--nltk-data", str(nltk_data), "--out-dir", str(out)]) == 0
    data = resources.files("lsdiffusion.semantics") / "data"
    assert (out / "imagenet1k_wnids.txt").read_bytes() == (
        data / "imagenet1k_wnids.txt"
    ).read_bytes()
    name = "imagenet1k_hierarchy.tsv.gz"
    assert gzip.decompress((out / name).read_bytes()) == gzip.decompress((data / name).read_bytes())
    # a stale file is detected
    (out / "imagenet1k_wnids.txt").write_text("n01440764\n")
    assert main(["--nltk-data", str(nltk_data), "--out-dir", str(out), "--check"]) == 1


def test_embedded_and_nltk_paths_agree_on_all_classes(nltk_imagenet: ClassHierarchy) -> None:
    emb = imagenet1k_hierarchy()
    assert nltk_imagenet.wnids == emb.wnids
    assert nltk_imagenet.names == emb.names
    assert (nltk_imagenet.lca_depths() == emb.lca_depths()).all()
    for min_size, depth in [(2, 3), (1, 0), (4, 5), (8, 7)]:
        a = emb.class_masks(min_size=min_size, dissimilar_depth=depth)
        b = nltk_imagenet.class_masks(min_size=min_size, dissimilar_depth=depth)
        assert (a.similar == b.similar).all()
        assert (a.dissimilar == b.dissimilar).all()
    for i in range(1000):
        assert emb.class_sets(i) == nltk_imagenet.class_sets(i)


def test_structure_against_nltk_itself(wn, nltk_imagenet: ClassHierarchy) -> None:
    """Depths, LCAs and siblings checked with nltk's own methods, not our graph."""
    h = imagenet1k_hierarchy()
    synsets = [wn.synset(name) for name in h.synset_names]
    assert [s.max_depth() for s in synsets] == [h.depth(i) for i in range(1000)]
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, 1000, size=(400, 2))
    lca = h.lca_depths()
    for a, b in pairs:
        common = synsets[a].lowest_common_hypernyms(synsets[b])
        assert max(s.max_depth() for s in common) == lca[a, b]
    index = {s: i for i, s in enumerate(synsets)}
    for i in (207, 52, 401, 2):
        s = synsets[i]
        parents = s.hypernyms() + s.instance_hypernyms()
        siblings = {
            index[c]
            for p in parents
            for c in p.hyponyms() + p.instance_hyponyms()
            if c in index and c != s
        }
        if siblings:
            assert set(h.class_sets(i).similar) == siblings


def test_other_class_lists(nltk_data: Path) -> None:
    # CIFAR-style lemmas, a synset name, and ImageNet-21k style wnids (some are ancestors)
    classes = [
        "maple.n.02",  # the tree (maple.n.01 is the wood)
        "oak.n.02",
        "willow",  # first sense: the tree
        "tiger.n.02",  # tiger.n.01 is "a fierce or audacious person"
        "leopard.n.02",  # leopard.n.01 is the pelt
        "lion",
        "tractor",
        "apple.n.01",
        "n02084071",  # dog.n.01, an ancestor of the next one
        "n02099601",  # golden retriever
        "n02099712",  # Labrador retriever
    ]
    h = wordnet_hierarchy(classes, on_ambiguous="first", nltk_data=nltk_data)
    assert h.num_classes == len(classes)
    assert h.source == "WordNet 3.0"
    sim = {h.names[i]: {h.names[c] for c in h.class_sets(i).similar} for i in range(len(classes))}
    assert sim["leopard"] >= {"tiger", "lion"}  # big cats (genus Panthera)
    assert "willow" in sim["oak"]  # both directly under tree.n.01
    # on_ambiguous="first" takes WordNet's most frequent sense, which is not always the animal
    first = wordnet_hierarchy(["tiger", "lion"], on_ambiguous="first", nltk_data=nltk_data)
    assert first.synset_names == ("tiger.n.01", "lion.n.01")
    assert sim["golden retriever"] == {"Labrador retriever"}
    assert h.index("n02084071") == 8
    # dog.n.01 is an ancestor of the retrievers: never dissimilar to them
    assert 8 not in h.class_sets(9, dissimilar_depth=5).dissimilar
    assert h.index("tractor") in h.class_sets("tiger").dissimilar
    # the hierarchy can be saved and used without nltk
    back = ClassHierarchy.from_text(h.to_text())
    assert all(back.class_sets(i) == h.class_sets(i) for i in range(len(classes)))


def test_ambiguous_and_unknown_lemmas(nltk_data: Path) -> None:
    with pytest.raises(ClassLookupError, match=r"'apple' has 2 noun senses: apple.n.01") as info:
        wordnet_hierarchy(["apple", "pear"], nltk_data=nltk_data)
    assert "on_ambiguous='first'" in str(info.value)
    with pytest.raises(ClassLookupError, match=r"close matches: \[.*'golden_retriever'"):
        wordnet_hierarchy(["golden_retriver"], nltk_data=nltk_data)
    # CIFAR-100's "maple_tree" is not a WordNet lemma: the error points at "maple"
    with pytest.raises(ClassLookupError, match=r"words that are nouns: \['maple', 'tree'\]"):
        wordnet_hierarchy(["maple_tree"], nltk_data=nltk_data)
    with pytest.raises(ClassLookupError, match=r"not a WordNet 3\.0 wnid"):
        wordnet_hierarchy(["n00000000"], nltk_data=nltk_data)
    with pytest.raises(ClassLookupError, match="not a WordNet synset name"):
        wordnet_hierarchy(["nosuchthing.n.01"], nltk_data=nltk_data)
    with pytest.raises(ValueError, match="distinct synsets"):
        wordnet_hierarchy(["n02099601", "golden retriever"], nltk_data=nltk_data)
    with pytest.raises(ValueError, match="on_ambiguous must be"):
        wordnet_hierarchy(["dog"], on_ambiguous="last", nltk_data=nltk_data)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="single str"):
        wordnet_hierarchy("dog", nltk_data=nltk_data)


def test_prepare_wordnet_corpus_copies_regular_files(tmp_path: Path) -> None:
    if not (DEBIAN_WORDNET / "data.noun").is_file():
        pytest.skip("WordNet not installed in /usr/share/wordnet")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("data.noun", "index.noun"):
        (src / name).symlink_to(DEBIAN_WORDNET / name)  # Debian-like symlinks
    dest = prepare_wordnet_corpus(tmp_path / "nltk", src)
    corpus = dest / "corpora" / "wordnet"
    assert sorted(p.name for p in corpus.iterdir()) == ["data.noun", "index.noun", "lexnames"]
    for p in corpus.iterdir():
        assert p.is_file()
        assert not p.is_symlink()
        assert p.stat().st_nlink == 1
    bundled = resources.files("lsdiffusion.semantics") / "data" / "lexnames"
    assert (corpus / "lexnames").read_bytes() == bundled.read_bytes()
    # idempotent; replaces a planted symlink instead of writing through it
    (corpus / "data.noun").unlink()
    (corpus / "data.noun").symlink_to(src / "index.noun")
    prepare_wordnet_corpus(tmp_path / "nltk", src)
    assert not (corpus / "data.noun").is_symlink()
    assert (corpus / "data.noun").read_bytes() == (DEBIAN_WORDNET / "data.noun").read_bytes()


def test_prepare_wordnet_corpus_rejects_a_folder_without_wordnet(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data.noun.*apt-get install wordnet-base"):
        prepare_wordnet_corpus(tmp_path / "out", tmp_path)


INSTALL_HINTS = ("pip install nltk", 'nltk.download("wordnet")', "NLTK_DATA")


def test_missing_nltk_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "nltk", None)  # import nltk -> ImportError
    with pytest.raises(WordNetUnavailableError, match="nltk is not installed") as info:
        wordnet_hierarchy(["dog"])
    for hint in INSTALL_HINTS:
        assert hint in str(info.value)
    assert isinstance(info.value, ImportError)


def test_nltk_data_folder_without_wordnet(tmp_path: Path) -> None:
    pytest.importorskip("nltk")
    with pytest.raises(WordNetUnavailableError, match="corpora/wordnet"):
        load_wordnet(tmp_path)


def test_missing_corpus_says_how_to_install_and_never_downloads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nltk = pytest.importorskip("nltk")
    from nltk.corpus.reader.wordnet import WordNetCorpusReader
    from nltk.corpus.util import LazyCorpusLoader

    def no_download(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(nltk, "download", no_download)
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    fresh = LazyCorpusLoader("wordnet", WordNetCorpusReader, None)
    monkeypatch.setattr(nltk.corpus, "wordnet", fresh)
    with pytest.raises(WordNetUnavailableError, match="WordNet corpus was not found") as info:
        wordnet_hierarchy(["dog"])
    for hint in INSTALL_HINTS:
        assert hint in str(info.value)
    assert str(tmp_path) in str(info.value)  # the folders nltk searched


def test_shipped_wnids_equal_the_embedded_classes() -> None:
    assert imagenet1k_wnids() == imagenet1k_hierarchy().wnids


def test_every_bad_class_of_a_list_is_reported_at_once(nltk_data: Path) -> None:
    from lsdiffusion.semantics import ClassListError

    classes = ["apple", "dog.n.01", "goldn retrievr", "crane", "x" * 5000]
    with pytest.raises(ClassListError) as info:
        wordnet_hierarchy(classes, nltk_data=nltk_data)
    problems = info.value.problems
    assert [p.position for p in problems] == [0, 2, 3, 4]
    assert [p.ref for p in problems] == [classes[i] for i in (0, 2, 3, 4)]
    assert problems[0].senses == ("apple.n.01", "apple.n.02")
    assert problems[1].senses == ()
    assert len(problems[2].senses) == 5
    assert isinstance(info.value, ClassLookupError)
    message = str(info.value)
    assert message.startswith("4 classes of the list: [0] 'apple' has 2 noun senses")
    assert "(5000 characters)" in message
    assert len(message) < 2000  # the 5000-character name is cut
    # with on_ambiguous="first" only the unknown ones remain
    with pytest.raises(ClassListError) as info:
        wordnet_hierarchy(classes, on_ambiguous="first", nltk_data=nltk_data)
    assert [p.position for p in info.value.problems] == [2, 4]
    assert "on_ambiguous" not in str(info.value)


def test_imagenet_wnids_use_the_embedded_hierarchy_without_nltk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lsdiffusion.semantics import wordnet as wordnet_module

    def no_wordnet(*args: object, **kwargs: object) -> None:
        raise WordNetUnavailableError("no WordNet here")

    monkeypatch.setattr(wordnet_module, "load_wordnet", no_wordnet)
    full = imagenet1k_hierarchy()
    picked = [full.wnids[i] for i in (209, 205, 207, 833, 266, 267, 52)]
    h = wordnet_hierarchy(picked)
    assert h.wnids == tuple(picked)
    assert h.source == "WordNet 3.0"
    assert h.class_sets(2).similar == (0, 1)  # golden: Chesapeake Bay, flat-coated
    assert h.ancestors(2) == full.ancestors(207)
    assert h.num_classes == 7
    # only the classes and their ancestors, not the other 993 classes
    assert {r.wnid for r in h.records} == {
        w for i in (209, 205, 207, 833, 266, 267, 52) for w in (full.wnids[i], *[
            r.wnid for r in full.records if r.name in full.ancestors(i)
        ])
    }  # fmt: skip
    with pytest.raises(WordNetUnavailableError):
        wordnet_hierarchy([*picked, "n99999999"])  # not all ImageNet-1K: nltk needed
    with pytest.raises(WordNetUnavailableError):
        wordnet_hierarchy(picked, embedded=False)


def test_embedded_subset_equals_the_nltk_subset(nltk_data: Path) -> None:
    full = imagenet1k_hierarchy()
    picked = [full.wnids[i] for i in range(0, 1000, 37)]
    fast = wordnet_hierarchy(picked)
    slow = wordnet_hierarchy(picked, nltk_data=nltk_data, embedded=False)
    assert fast.to_text() == slow.to_text()
