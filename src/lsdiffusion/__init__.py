"""lsdiffusion: label smoothing x knowledge distillation, measured.

Fast, exact losses ([`label_smoothing_loss`][lsdiffusion.label_smoothing_loss],
[`kd_loss`][lsdiffusion.kd_loss] and their modules), the measurements of Chandrasegaran et al. (ICML
2022) - feature capture, class centroids, the diffusion index, the Muller projection, target
entropy - and the semantic class sets those measurements need.

Every public name is importable from here (``from lsdiffusion import KDLoss``)
and its module is imported on first use: ``import lsdiffusion`` itself loads
neither torch nor numpy, and the ``lsdiffusion`` command answers ``--help``
without torch. Optional pieces stay optional: matplotlib
(``lsdiffusion[plot]``) and nltk's WordNet corpus are loaded only when a
function needs them, and the embedded ImageNet-1K hierarchy is read on first
use.

Examples:
    >>> import lsdiffusion
    >>> from lsdiffusion.losses import KDLoss
    >>> lsdiffusion.KDLoss is KDLoss
    True
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first access by
# ``__getattr__`` below. To export a name, add it here and to the
# TYPE_CHECKING imports (tests/test_package.py checks that the two agree and
# that ``import lsdiffusion`` stays free of torch).
_EXPORTS: dict[str, str] = {
    "ClassCentroids": "lsdiffusion.centroids",
    "EmptyClassWarning": "lsdiffusion.centroids",
    "class_centroids": "lsdiffusion.centroids",
    "DiffusionIndex": "lsdiffusion.diffusion",
    "DiffusionIndexTable": "lsdiffusion.diffusion",
    "DiffusionSignificance": "lsdiffusion.diffusion",
    "diffusion_index": "lsdiffusion.diffusion",
    "diffusion_indices": "lsdiffusion.diffusion",
    "relative_distances": "lsdiffusion.diffusion",
    "EntropyReport": "lsdiffusion.entropy",
    "TargetEntropy": "lsdiffusion.entropy",
    "target_entropy": "lsdiffusion.entropy",
    "FeatureBatch": "lsdiffusion.features",
    "FeatureCapture": "lsdiffusion.features",
    "collect_features": "lsdiffusion.features",
    "find_final_linear": "lsdiffusion.features",
    "iter_features": "lsdiffusion.features",
    "TopKTeacher": "lsdiffusion.teachers",
    "KDTerms": "lsdiffusion.functional",
    "fused_linear_kd_loss": "lsdiffusion.fused_linear",
    "fused_linear_label_smoothing_loss": "lsdiffusion.fused_linear",
    "kd_loss": "lsdiffusion.functional",
    "kd_loss_terms": "lsdiffusion.functional",
    "label_smoothing_loss": "lsdiffusion.functional",
    "FusedLinearKDLoss": "lsdiffusion.losses",
    "FusedLinearLabelSmoothingLoss": "lsdiffusion.losses",
    "KDLoss": "lsdiffusion.losses",
    "LabelSmoothingLoss": "lsdiffusion.losses",
    "plot_diffusion_index": "lsdiffusion.plotting",
    "plot_projections": "lsdiffusion.plotting",
    "ClassScatter": "lsdiffusion.scatter",
    "ClusterGeometry": "lsdiffusion.scatter",
    "class_scatter": "lsdiffusion.scatter",
    "Projection": "lsdiffusion.projection",
    "Templates": "lsdiffusion.projection",
    "muller_projection": "lsdiffusion.projection",
    "templates_from_linear": "lsdiffusion.projection",
    "ClassHierarchy": "lsdiffusion.semantics",
    "ClassListError": "lsdiffusion.semantics",
    "ClassLookupError": "lsdiffusion.semantics",
    "ClassSetMasks": "lsdiffusion.semantics",
    "ClassSets": "lsdiffusion.semantics",
    "PAPER_CLASS_SETS": "lsdiffusion.semantics",
    "WordNetUnavailableError": "lsdiffusion.semantics",
    "cifar100_class_masks": "lsdiffusion.semantics",
    "cifar100_class_sets": "lsdiffusion.semantics",
    "cifar100_hierarchy": "lsdiffusion.semantics",
    "feature_class_masks": "lsdiffusion.semantics",
    "feature_class_sets": "lsdiffusion.semantics",
    "find_class": "lsdiffusion.semantics",
    "imagenet1k_hierarchy": "lsdiffusion.semantics",
    "paper_class_set": "lsdiffusion.semantics",
    "prepare_wordnet_corpus": "lsdiffusion.semantics",
    "set_consistency": "lsdiffusion.semantics",
    "wordnet_class_masks": "lsdiffusion.semantics",
    "wordnet_class_sets": "lsdiffusion.semantics",
    "wordnet_hierarchy": "lsdiffusion.semantics",
}

if TYPE_CHECKING:  # what type checkers and IDEs see
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
        collect_features,
        find_final_linear,
        iter_features,
    )
    from lsdiffusion.functional import (
        KDTerms,
        kd_loss,
        kd_loss_terms,
        label_smoothing_loss,
    )
    from lsdiffusion.fused_linear import (
        fused_linear_kd_loss,
        fused_linear_label_smoothing_loss,
    )
    from lsdiffusion.losses import (
        FusedLinearKDLoss,
        FusedLinearLabelSmoothingLoss,
        KDLoss,
        LabelSmoothingLoss,
    )
    from lsdiffusion.plotting import plot_diffusion_index, plot_projections
    from lsdiffusion.projection import (
        Projection,
        Templates,
        muller_projection,
        templates_from_linear,
    )
    from lsdiffusion.scatter import ClassScatter, ClusterGeometry, class_scatter
    from lsdiffusion.semantics import (
        PAPER_CLASS_SETS,
        ClassHierarchy,
        ClassListError,
        ClassLookupError,
        ClassSetMasks,
        ClassSets,
        WordNetUnavailableError,
        cifar100_class_masks,
        cifar100_class_sets,
        cifar100_hierarchy,
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
    from lsdiffusion.teachers import TopKTeacher


def __getattr__(name: str) -> Any:
    """Import the module of a public name, or a submodule, on first access (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        if not name.startswith("_") and importlib.util.find_spec(f"lsdiffusion.{name}"):
            return importlib.import_module(f"lsdiffusion.{name}")  # lsdiffusion.losses
        raise AttributeError(f"module 'lsdiffusion' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "PAPER_CLASS_SETS",
    "ClassCentroids",
    "ClassHierarchy",
    "ClassListError",
    "ClassLookupError",
    "ClassScatter",
    "ClassSetMasks",
    "ClassSets",
    "ClusterGeometry",
    "DiffusionIndex",
    "DiffusionIndexTable",
    "DiffusionSignificance",
    "EmptyClassWarning",
    "EntropyReport",
    "FeatureBatch",
    "FeatureCapture",
    "FusedLinearKDLoss",
    "FusedLinearLabelSmoothingLoss",
    "KDLoss",
    "KDTerms",
    "LabelSmoothingLoss",
    "Projection",
    "TargetEntropy",
    "Templates",
    "TopKTeacher",
    "WordNetUnavailableError",
    "__version__",
    "cifar100_class_masks",
    "cifar100_class_sets",
    "cifar100_hierarchy",
    "class_centroids",
    "class_scatter",
    "collect_features",
    "diffusion_index",
    "diffusion_indices",
    "feature_class_masks",
    "feature_class_sets",
    "find_class",
    "find_final_linear",
    "fused_linear_kd_loss",
    "fused_linear_label_smoothing_loss",
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
