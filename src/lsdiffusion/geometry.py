"""Compatibility module: the measurements now live in one module per concept.

* [`lsdiffusion.centroids`][lsdiffusion.centroids]: [`ClassCentroids`][lsdiffusion.ClassCentroids],
  [`class_centroids`][lsdiffusion.class_centroids];
* [`lsdiffusion.diffusion`][lsdiffusion.diffusion]:
  [`relative_distances`][lsdiffusion.relative_distances],
  [`diffusion_index`][lsdiffusion.diffusion_index],
  [`diffusion_indices`][lsdiffusion.diffusion_indices],
  [`DiffusionIndexTable`][lsdiffusion.DiffusionIndexTable],
  [`DiffusionSignificance`][lsdiffusion.DiffusionSignificance];
* [`lsdiffusion.projection`][lsdiffusion.projection]:
  [`muller_projection`][lsdiffusion.muller_projection],
  [`templates_from_linear`][lsdiffusion.templates_from_linear],
  [`Projection`][lsdiffusion.Projection], [`Templates`][lsdiffusion.Templates].

Every name is also exported from `lsdiffusion` itself, the import path to
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
