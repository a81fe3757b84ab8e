"""lsdiffusion: label smoothing x knowledge distillation, measured.

Fast, exact losses (:func:`label_smoothing_loss`, :func:`kd_loss` and their
modules), the measurements of Chandrasegaran et al. (ICML 2022) - feature
capture, class centroids, the diffusion index, the Muller projection, target
entropy - and the semantic class sets those measurements need.
"""

from __future__ import annotations

from lsdiffusion.functional import KDTerms, kd_loss, kd_loss_terms, label_smoothing_loss
from lsdiffusion.losses import KDLoss, LabelSmoothingLoss

__version__ = "0.1.0"

__all__ = [
    "KDLoss",
    "KDTerms",
    "LabelSmoothingLoss",
    "__version__",
    "kd_loss",
    "kd_loss_terms",
    "label_smoothing_loss",
]
