"""Fixtures for the WordNet tests: an offline nltk WordNet copied from Debian's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lsdiffusion.semantics import ClassHierarchy, imagenet1k_wnids

DEBIAN_WORDNET = Path("/usr/share/wordnet")


@pytest.fixture(scope="session")
def nltk_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An nltk data folder holding WordNet 3.0; skips when nltk or the files are absent."""
    pytest.importorskip("nltk")
    if not (DEBIAN_WORDNET / "data.noun").is_file():
        pytest.skip(f"WordNet not installed in {DEBIAN_WORDNET} (apt-get install wordnet-base)")
    from lsdiffusion.semantics import prepare_wordnet_corpus

    return prepare_wordnet_corpus(tmp_path_factory.mktemp("nltk_data"), DEBIAN_WORDNET)


@pytest.fixture(scope="session")
def wn(nltk_data: Path):
    """nltk's WordNet reader, loaded from ``nltk_data``."""
    from lsdiffusion.semantics import load_wordnet

    return load_wordnet(nltk_data)


@pytest.fixture(scope="session")
def nltk_imagenet(nltk_data: Path, wn) -> ClassHierarchy:
    """ImageNet-1K's hierarchy rebuilt from WordNet through nltk."""
    from lsdiffusion.semantics import wordnet_hierarchy

    return wordnet_hierarchy(list(imagenet1k_wnids()), nltk_data=nltk_data, embedded=False)
