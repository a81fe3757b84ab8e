"""Semantic class sets: which classes are similar or dissimilar to a target.

Two methods, as in Chandrasegaran et al. (ICML 2022):

1. **WordNet** ([`wordnet_class_sets`][lsdiffusion.wordnet_class_sets],
   [`ClassHierarchy`][lsdiffusion.ClassHierarchy]): siblings under the immediate hypernym, and
   classes whose lowest common ancestor with the target is near the root. ImageNet-1K's hierarchy
   ships with the package (no nltk, no network); other class lists go through nltk
   ([`wordnet_hierarchy`][lsdiffusion.wordnet_hierarchy]).
2. **Feature distance** ([`feature_class_sets`][lsdiffusion.feature_class_sets]): the classes whose
   centroids are closest (1%) and farthest (90%) from the target's.

[`set_consistency`][lsdiffusion.set_consistency] compares two selections (paper Table G.1) and
[`paper_class_set`][lsdiffusion.paper_class_set] returns the paper's hand-picked sets. CIFAR-100's
official hierarchy (20 superclasses of 5 classes) ships too
([`cifar100_class_sets`][lsdiffusion.cifar100_class_sets]: similar = the other four classes of the
superclass, dissimilar = the classes of the other superclasses).
"""

from __future__ import annotations

from lsdiffusion.semantics.cifar100 import (
    CIFAR100_DISSIMILAR_DEPTH,
    cifar100_class_masks,
    cifar100_class_names,
    cifar100_class_sets,
    cifar100_hierarchy,
    cifar100_superclasses,
)
from lsdiffusion.semantics.features import (
    feature_class_masks,
    feature_class_sets,
    feature_set_sizes,
    set_consistency,
)
from lsdiffusion.semantics.graph import SynsetRecord
from lsdiffusion.semantics.hierarchy import (
    DEFAULT_DISSIMILAR_DEPTH,
    DEFAULT_MIN_SIZE,
    ClassHierarchy,
    ClassSetMasks,
    ClassSets,
    SimilarBasis,
)
from lsdiffusion.semantics.imagenet import (
    PAPER_CLASS_SETS,
    find_class,
    imagenet1k_hierarchy,
    imagenet1k_wnids,
    paper_class_set,
    wordnet_class_masks,
    wordnet_class_sets,
)
from lsdiffusion.semantics.names import ClassLookupError
from lsdiffusion.semantics.wordnet import (
    ClassListError,
    ClassProblem,
    WordNetUnavailableError,
    load_wordnet,
    prepare_wordnet_corpus,
    wordnet_hierarchy,
)

__all__ = [
    "CIFAR100_DISSIMILAR_DEPTH",
    "DEFAULT_DISSIMILAR_DEPTH",
    "DEFAULT_MIN_SIZE",
    "PAPER_CLASS_SETS",
    "ClassHierarchy",
    "ClassListError",
    "ClassLookupError",
    "ClassProblem",
    "ClassSetMasks",
    "ClassSets",
    "SimilarBasis",
    "SynsetRecord",
    "WordNetUnavailableError",
    "cifar100_class_masks",
    "cifar100_class_names",
    "cifar100_class_sets",
    "cifar100_hierarchy",
    "cifar100_superclasses",
    "feature_class_masks",
    "feature_class_sets",
    "feature_set_sizes",
    "find_class",
    "imagenet1k_hierarchy",
    "imagenet1k_wnids",
    "load_wordnet",
    "paper_class_set",
    "prepare_wordnet_corpus",
    "set_consistency",
    "wordnet_class_masks",
    "wordnet_class_sets",
    "wordnet_hierarchy",
]
