"""lsdiffusion: label smoothing x knowledge distillation, measured.

Fast, exact losses (:func:`label_smoothing_loss`, :func:`kd_loss` and their
modules), the measurements of Chandrasegaran et al. (ICML 2022) - feature
capture, class centroids, the diffusion index, the Muller projection, target
entropy - and the semantic class sets those measurements need.

Optional pieces stay optional: matplotlib (``lsdiffusion[plot]``) and nltk
(``lsdiffusion[wordnet]``) are imported only when a function needs them, and
the embedded ImageNet-1K hierarchy is read on first use.
"""

from __future__ import annotations

from lsdiffusion.centroids import ClassCentroids, EmptyClassWarning, class_centroids
from lsdiffusion.diffusion import (
    DiffusionIndex,
    DiffusionIndexTable,
    DiffusionSignificance,
    diffusion_index,
    diffusion_indices,
    relative_distances,
)
from lsdiffusion.entropy import EntropyReport, TargetEntropy, target_entropy
from lsdiffusion.features import (
    FeatureBatch,
    FeatureCapture,
    capture_features,
    collect_features,
    find_final_linear,
    iter_features,
)
from lsdiffusion.functional import (
    KDTerms,
    fused_linear_kd_loss,
    kd_loss,
    kd_loss_terms,
    label_smoothing_loss,
)
from lsdiffusion.losses import FusedLinearKDLoss, KDLoss, LabelSmoothingLoss
from lsdiffusion.plotting import plot_diffusion_index, plot_projections
from lsdiffusion.projection import (
    Projection,
    Templates,
    muller_projection,
    templates_from_linear,
)
from lsdiffusion.semantics import (
    PAPER_CLASS_SETS,
    ClassHierarchy,
    ClassLookupError,
    ClassSetMasks,
    ClassSets,
    WordNetUnavailableError,
    feature_class_masks,
    feature_class_sets,
    find_class,
    imagenet1k_hierarchy,
    paper_class_set,
    prepare_wordnet_corpus,
    set_consistency,
    wordnet_class_masks,
    wordnet_class_sets,
    wordnet_hierarchy,
)

__version__ = "0.1.0"

__all__ = [
    "PAPER_CLASS_SETS",
    "ClassCentroids",
    "ClassHierarchy",
    "ClassLookupError",
    "ClassSetMasks",
    "ClassSets",
    "DiffusionIndex",
    "DiffusionIndexTable",
    "DiffusionSignificance",
    "EmptyClassWarning",
    "EntropyReport",
    "FeatureBatch",
    "FeatureCapture",
    "FusedLinearKDLoss",
    "KDLoss",
    "KDTerms",
    "LabelSmoothingLoss",
    "Projection",
    "TargetEntropy",
    "Templates",
    "WordNetUnavailableError",
    "__version__",
    "capture_features",
    "class_centroids",
    "collect_features",
    "diffusion_index",
    "diffusion_indices",
    "feature_class_masks",
    "feature_class_sets",
    "find_class",
    "find_final_linear",
    "fused_linear_kd_loss",
    "imagenet1k_hierarchy",
    "iter_features",
    "kd_loss",
    "kd_loss_terms",
    "label_smoothing_loss",
    "muller_projection",
    "paper_class_set",
    "plot_diffusion_index",
    "plot_projections",
    "prepare_wordnet_corpus",
    "relative_distances",
    "set_consistency",
    "target_entropy",
    "templates_from_linear",
    "wordnet_class_masks",
    "wordnet_class_sets",
    "wordnet_hierarchy",
]
