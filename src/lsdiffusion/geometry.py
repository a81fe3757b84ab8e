"""Compatibility module: the measurements now live in one module per concept.

* :mod:`lsdiffusion.centroids`: :class:`ClassCentroids`, :func:`class_centroids`;
* :mod:`lsdiffusion.diffusion`: :func:`relative_distances`,
  :func:`diffusion_index`, :func:`diffusion_indices`, :class:`DiffusionIndexTable`,
  :class:`DiffusionSignificance`;
* :mod:`lsdiffusion.projection`: :func:`muller_projection`,
  :func:`templates_from_linear`, :class:`Projection`, :class:`Templates`.

Every name is also exported from :mod:`lsdiffusion` itself, the import path to
prefer. ``from lsdiffusion.geometry import ...`` keeps working.
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
from lsdiffusion.projection import (
    Projection,
    Templates,
    muller_projection,
    templates_from_linear,
)

__all__ = [
    "ClassCentroids",
    "DiffusionIndex",
    "DiffusionIndexTable",
    "DiffusionSignificance",
    "EmptyClassWarning",
    "Projection",
    "Templates",
    "class_centroids",
    "diffusion_index",
    "diffusion_indices",
    "muller_projection",
    "relative_distances",
    "templates_from_linear",
]
