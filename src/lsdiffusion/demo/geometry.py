"""Cluster geometry of the demo's features: the numbers behind the paper's observations 1 and 2.

(1) an LS teacher's clusters are tighter and its similar classes farther apart
(information erasure); (2) a student distilled at T0 (T = 1) inherits that.
Each network's test features go through one
[`ClassScatter`][lsdiffusion.ClassScatter] pass; the tests pair every class of
every seed between the two teachers (or their T0 students), as the diffusion
check pools its targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["GeometryComparison", "GeometryRow", "compare_geometry", "measure_geometry"]


@dataclass(frozen=True)
class GeometryRow:
    r"""The cluster geometry of one network's test features (one seed).

    Attributes:
        r2: class separation $R^2$ (Kornblith et al. 2021), higher = better separated.
        nc1: NC1 (Papyan et al. 2020), lower = tighter clusters.
        cdnv_similar: per class $\pi$, the mean CDNV over its similar classes.
        cdnv_dissimilar: per class, the mean CDNV over its dissimilar classes.
        nc1_per_class: per class $c$, its term of NC1,
            $\operatorname{tr}(\Sigma_c \Sigma_B^\dagger)/K$ with $\Sigma_c$ the class's
            covariance: NC1 is their mean weighted by the class sizes. Lower = tighter.
    """

    r2: float
    nc1: float
    cdnv_similar: list[float]
    cdnv_dissimilar: list[float]
    nc1_per_class: list[float]

    @property
    def mean_cdnv_similar(self) -> float:
        """The mean over classes of ``cdnv_similar``."""
        return sum(self.cdnv_similar) / len(self.cdnv_similar)

    @property
    def mean_cdnv_dissimilar(self) -> float:
        """The mean over classes of ``cdnv_dissimilar``."""
        return sum(self.cdnv_dissimilar) / len(self.cdnv_dissimilar)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: the scalars and the per-class lists."""
        return asdict(self)


def measure_geometry(
    features: Any,
    labels: Any,
    num_classes: int,
    similar: Sequence[Sequence[int]],
    dissimilar: Sequence[Sequence[int]],
) -> GeometryRow:
    """One streaming pass of [`ClassScatter`][lsdiffusion.ClassScatter] over ``features``.

    Args:
        features: (N, D) penultimate features.
        labels: (N,) their classes.
        num_classes: K.
        similar: for every class, its similar classes.
        dissimilar: for every class, its dissimilar classes.

    Returns:
        R², NC1 and, per class, the mean CDNV over its similar and its dissimilar
        classes and its term of NC1.
    """
    from lsdiffusion.scatter import ClassScatter

    scatter = ClassScatter(num_classes, features.shape[1], sync=False)
    scatter.update(features, labels)
    geometry = scatter.compute()
    classes = range(num_classes)
    return GeometryRow(
        r2=float(geometry.class_separation),
        nc1=float(geometry.nc1),
        cdnv_similar=[geometry.mean_cdnv(c, similar[c]) for c in classes],
        cdnv_dissimilar=[geometry.mean_cdnv(c, dissimilar[c]) for c in classes],
        nc1_per_class=_nc1_per_class(features, labels, geometry.means),
    )


def _nc1_per_class(features: Any, labels: Any, means: Any) -> list[float]:
    r"""Each class's term of NC1, $\sum_j v_j^\top \Sigma_c v_j / s_j^2$ (K = every class present).

    $v_j, s_j$ are the singular vectors and values of the centred class means
    (so $\Sigma_B^\dagger/K = \sum_j v_j v_j^\top / s_j^2$), with the tolerance of
    [`ClassScatter`][lsdiffusion.ClassScatter]'s NC1; the class covariances are
    read from the features in memory, in float64.
    """
    import torch

    means = means.to(torch.float64)
    centred = means - means.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    keep = s > max(centred.shape) * torch.finfo(torch.float64).eps * float(s.max())
    z = (features.to(torch.float64) - means[labels]) @ vh[keep].T  # (N, r)
    per_sample = (z**2 / s[keep] ** 2).sum(1)
    k = means.shape[0]
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, per_sample)
    counts = torch.bincount(labels, minlength=k).to(torch.float64)
    return (sums / counts).tolist()


@dataclass(frozen=True)
class GeometryComparison:
    """LS against plain, every class of every seed one pair: one-sided Wilcoxon p-values.

    Attributes:
        n: the number of pairs (classes x seeds).
        p_tighter: p of "the LS network's per-class NC1 terms are lower" (tighter clusters).
        p_similar_apart: p of "its per-class CDNV over the similar classes is lower"
            (similar classes farther apart, relative to their spread).
        seeds_r2_higher: seeds where the LS network's R² is the higher.
        seeds_nc1_lower: seeds where its NC1 is the lower.
        seeds: the number of seeds.
    """

    n: int
    p_tighter: float
    p_similar_apart: float
    seeds_r2_higher: int
    seeds_nc1_lower: int
    seeds: int

    def holds(self, level: float) -> bool:
        """Both p-values below ``level``."""
        return self.p_tighter < level and self.p_similar_apart < level

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON."""
        return asdict(self)


def compare_geometry(ls: Sequence[GeometryRow], plain: Sequence[GeometryRow]) -> GeometryComparison:
    """Test LS rows against plain rows of the same seeds (same classes, same test data).

    Raises:
        ValueError: the two hold a different number of seeds or of classes.
    """
    from scipy import stats

    if len(ls) != len(plain) or any(
        len(a.nc1_per_class) != len(b.nc1_per_class) for a, b in zip(ls, plain, strict=False)
    ):
        raise ValueError(
            f"ls and plain must hold the same seeds and classes, got {len(ls)} and {len(plain)} "
            "rows"
        )

    def p_less(field: str) -> float:
        a = [v for row in ls for v in getattr(row, field)]
        b = [v for row in plain for v in getattr(row, field)]
        return float(stats.wilcoxon(a, b, alternative="less").pvalue)

    return GeometryComparison(
        n=sum(len(row.nc1_per_class) for row in ls),
        p_tighter=p_less("nc1_per_class"),
        p_similar_apart=p_less("cdnv_similar"),
        seeds_r2_higher=sum(a.r2 > b.r2 for a, b in zip(ls, plain, strict=True)),
        seeds_nc1_lower=sum(a.nc1 < b.nc1 for a, b in zip(ls, plain, strict=True)),
        seeds=len(ls),
    )
