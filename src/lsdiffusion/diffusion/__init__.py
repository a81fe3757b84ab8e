r"""Relative distances and the diffusion index (paper Eq. 1), one target or many.

For a target class $\pi$, class centroids $\mu^T$ of the student distilled at
temperature $T$ and a reference set $R$:

$$
d_T(\pi, c) = \frac{\lVert \mu^T_\pi - \mu^T_c \rVert_2}
                   {\sum_{c' \in R} \lVert \mu^T_\pi - \mu^T_{c'} \rVert_2},
\qquad
\alpha_{T_0 \to T_1}(\pi, S) = \frac{100}{|S|} \sum_{c \in S}
    \frac{d_{T_1}(\pi, c) - d_{T_0}(\pi, c)}{d_{T_0}(\pi, c)}
$$

* [`relative_distances`][lsdiffusion.diffusion.relative_distances] gives $d(\pi, \cdot)$;
* [`diffusion_indices`][lsdiffusion.diffusion.diffusion_indices] gives $\alpha$
  of many targets at once (vectorised) as a
  [`DiffusionIndexTable`][lsdiffusion.diffusion.DiffusionIndexTable], which
  prints as a paper-style table and tests *systematic diffusion* with
  [`DiffusionIndexTable.significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance]
  (a [`DiffusionSignificance`][lsdiffusion.diffusion.DiffusionSignificance]);
* [`diffusion_index`][lsdiffusion.diffusion.diffusion_index] is its one-target
  case (a [`DiffusionIndex`][lsdiffusion.diffusion.DiffusionIndex]).

Every distance is computed in float64. Inputs may be torch tensors (any device)
or numpy arrays.

The code lives in private modules, one idea each: `_index.py` (Eq. 1, its
normaliser and the distances), `_sets.py` (the checks of centroids, targets
and class sets), `_table.py` (the table and its exports), `_significance.py`
(the tests).
"""

from __future__ import annotations

from lsdiffusion.diffusion._index import (
    DiffusionIndex,
    diffusion_index,
    diffusion_indices,
    relative_distances,
)
from lsdiffusion.diffusion._significance import DiffusionSignificance
from lsdiffusion.diffusion._table import DiffusionIndexTable

__all__ = [
    "DiffusionIndex",
    "DiffusionIndexTable",
    "DiffusionSignificance",
    "diffusion_index",
    "diffusion_indices",
    "relative_distances",
]
