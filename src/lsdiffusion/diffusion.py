r"""Relative distances and the diffusion index (paper Eq. 1), one target or many.

For a target class $\pi$, class centroids $\mu^T$ of the student
distilled at temperature $T$ and a reference set $R$:

$$
d_T(\pi, c) = \frac{\lVert \mu^T_\pi - \mu^T_c \rVert_2}
                   {\sum_{c' \in R} \lVert \mu^T_\pi - \mu^T_{c'} \rVert_2},
\qquad
\alpha_{T_0 \to T_1}(\pi, S) = \frac{100}{|S|} \sum_{c \in S}
    \frac{d_{T_1}(\pi, c) - d_{T_0}(\pi, c)}{d_{T_0}(\pi, c)}
$$

* [`relative_distances`][lsdiffusion.relative_distances] gives $d(\pi, \cdot)$;
* [`diffusion_index`][lsdiffusion.diffusion_index] gives $\alpha$ of one target over its similar
  and dissimilar sets (a [`DiffusionIndex`][lsdiffusion.DiffusionIndex]);
* [`diffusion_indices`][lsdiffusion.diffusion_indices] does the same for many targets at once
  (vectorised) and returns a [`DiffusionIndexTable`][lsdiffusion.DiffusionIndexTable], which prints
  as a paper-style table and tests *systematic diffusion* with
  [`DiffusionIndexTable.significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance].

Every distance is computed in float64. Inputs may be torch tensors (any device)
or numpy arrays.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeAlias

import numpy as np
import numpy.typing as npt
import torch

from lsdiffusion._arrays import (
    ArrayLike,
    _as_tensor,
    _check_choice,
    _check_int,
    _check_range,
    _index_array,
    _shape,
    _short_list,
)

__all__ = [
    "DiffusionIndex",
    "DiffusionIndexTable",
    "DiffusionSignificance",
    "diffusion_index",
    "diffusion_indices",
    "relative_distances",
]

Reference: TypeAlias = Literal["union", "all"]
ClassNames: TypeAlias = Mapping[int, str] | Sequence[str] | None
ClassSets: TypeAlias = Mapping[int, Iterable[int]] | Sequence[Iterable[int]] | ArrayLike

_REFERENCES: tuple[str, ...] = ("union", "all")


def _as_centroids(name: str, centroids: object) -> torch.Tensor:
    c = _as_tensor(name, centroids)
    if c.dim() != 2:
        raise ValueError(f"{name} must be 2-D (C, D), got shape {_shape(c)}")
    if not c.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {c.dtype}")
    if c.shape[0] < 2 or c.shape[1] < 1:
        raise ValueError(
            f"{name} must have at least 2 classes and 1 feature, got shape {_shape(c)}"
        )
    return c.to(torch.float64)


def _centroid_pair(c0: object, c1: object) -> tuple[torch.Tensor, torch.Tensor]:
    a = _as_centroids("centroids_t0", c0)
    b = _as_centroids("centroids_t1", c1)
    if a.shape != b.shape:
        raise ValueError(
            f"centroids_t1 must have shape {_shape(a)} like centroids_t0, got {_shape(b)}"
        )
    if b.device != a.device:
        b = b.to(a.device)
    return a, b


def _check_one_set(name: str, arr: npt.NDArray[np.int64], target: int, num_classes: int) -> None:
    if arr.size == 0:
        raise ValueError(f"{name} of target {target} is empty; it needs at least one class")
    _check_range(f"{name} of target {target}", arr, num_classes)
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"{name} of target {target} has duplicate classes {_short_list(uniq[counts > 1])}"
        )
    if (arr == target).any():
        raise ValueError(f"{name} of target {target} contains the target itself")


def _check_finite_rows(
    c0: torch.Tensor, c1: torch.Tensor, rows: torch.Tensor | None = None
) -> None:
    for name, c in (("centroids_t0", c0), ("centroids_t1", c1)):
        sub = c if rows is None else c.index_select(0, rows)
        finite = torch.isfinite(sub).all(dim=1)
        if not bool(finite.all()):
            idx = torch.nonzero(~finite).flatten()
            classes = idx if rows is None else rows[idx]
            _raise_non_finite(name, classes.cpu().tolist())


def _raise_non_finite(name: str, classes: list[int]) -> NoReturn:
    raise ValueError(
        f"{name} has non-finite (NaN or inf) centroids for classes {_short_list(classes)} "
        "that the diffusion index needs; an empty class has a NaN centroid: collect "
        "samples for it or drop it from the sets"
    )


def _check_target(target: object, num_classes: int) -> int:
    if isinstance(target, torch.Tensor) and target.numel() == 1 and not target.is_floating_point():
        target = int(target.item())
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be an int class index, got {type(target).__name__}")
    t = int(target)
    if not 0 <= t < num_classes:
        raise ValueError(
            f"target must be a class index in [0, {num_classes - 1}] "
            f"(the centroids have {num_classes} rows), got {t}"
        )
    return t


def relative_distances(
    centroids: ArrayLike,
    target: int,
    reference: Iterable[int] | Literal["all"] = "all",
) -> torch.Tensor:
    r"""Relative distance from ``target``'s centroid to every class centroid.

    $$
    d(\pi, c) = \frac{\lVert \mu_\pi - \mu_c \rVert_2}
                     {\sum_{c' \in R} \lVert \mu_\pi - \mu_{c'} \rVert_2}
    $$

    Args:
        centroids: (C, D) class centroids (tensor or numpy array).
        target: the target class $\pi$.
        reference: the normalising set $R$: ``"all"`` (every class except
            the target) or an iterable of class indices (without the target).

    Returns:
        (C,) float64 tensor; entry ``target`` is 0. Entries of classes outside
        $R$ are still defined (same normaliser).

    Examples:
        >>> import torch
        >>> mu = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
        >>> relative_distances(mu, target=0)
        tensor([0.0000, 0.2500, 0.7500], dtype=torch.float64)
    """
    c = _as_centroids("centroids", centroids)
    num_classes = int(c.shape[0])
    t = _check_target(target, num_classes)
    if isinstance(reference, str):
        _check_choice("reference", reference, ("all",))
        ref = np.asarray([k for k in range(num_classes) if k != t], dtype=np.int64)
    else:
        ref = _index_array("reference", reference)
        _check_one_set("reference", ref, t, num_classes)
    ref_t = torch.from_numpy(ref).to(c.device)
    rows = torch.cat([torch.tensor([t], device=c.device), ref_t])
    finite = torch.isfinite(c.index_select(0, rows)).all(dim=1)
    if not bool(finite.all()):
        bad = rows[~finite].cpu().tolist()
        raise ValueError(f"centroids has non-finite rows for classes {_short_list(bad)}")
    dist = torch.linalg.vector_norm(c - c[t], dim=1)
    total = dist.index_select(0, ref_t).sum()
    if not bool(total > 0):
        raise ValueError(f"every reference centroid coincides with the target {t}'s centroid")
    out: torch.Tensor = dist / total
    return out


@dataclass(frozen=True)
class DiffusionIndex:
    r"""The diffusion index of one target class (paper Eq. 1), in percent.

    Attributes:
        target: the target class $\pi$.
        similar: $\alpha_{T_0 \to T_1}(\pi, S_{sim})$ in percent.
        dissimilar: $\alpha_{T_0 \to T_1}(\pi, S_{dissim})$ in percent.
        similar_classes: the classes of $S_{sim}$.
        dissimilar_classes: the classes of $S_{dissim}$.
        reference: ``"union"`` or ``"all"``, the normalising set used.
        changes: per class of either set, the percent change
            $100 (d_{T_1} - d_{T_0}) / d_{T_0}$.
    """

    target: int
    similar: float
    dissimilar: float
    similar_classes: tuple[int, ...]
    dissimilar_classes: tuple[int, ...]
    reference: Reference
    changes: dict[int, float] = field(repr=False, compare=False)

    @property
    def systematic(self) -> bool:
        """True when the target diffuses towards its similar classes (α_sim < 0 < α_dissim)."""
        return self.similar < 0.0 < self.dissimilar

    def __str__(self) -> str:
        return (
            f"target {self.target}: similar {self.similar:+.2f}%, "
            f"dissimilar {self.dissimilar:+.2f}%"
        )


def diffusion_index(
    centroids_t0: ArrayLike,
    centroids_t1: ArrayLike,
    target: int,
    similar: Iterable[int],
    dissimilar: Iterable[int],
    *,
    reference: Reference = "union",
) -> DiffusionIndex:
    r"""Diffusion index of one target class from temperature T0 to T1 (paper Eq. 1).

    $$
    d_T(\pi, c) = \frac{\lVert \mu^T_\pi - \mu^T_c \rVert_2}
                       {\sum_{c' \in R} \lVert \mu^T_\pi - \mu^T_{c'} \rVert_2},
    \qquad
    \alpha_{T_0 \to T_1}(\pi, S) = \frac{100}{|S|} \sum_{c \in S}
        \frac{d_{T_1}(\pi, c) - d_{T_0}(\pi, c)}{d_{T_0}(\pi, c)}
    $$

    with $R = S_{sim} \cup S_{dissim}$ (``reference="union"``) or every
    class but $\pi$ (``reference="all"``). Systematic diffusion shows as
    ``similar < 0`` and ``dissimilar > 0``. The index is invariant to
    translating, rotating or uniformly scaling either feature space. Distances
    are computed in float64; only the rows the index needs must be finite.

    Args:
        centroids_t0: (C, D) centroids of the student distilled at T0.
        centroids_t1: (C, D) centroids of the student distilled at T1.
        target: the target class $\pi$.
        similar: the classes of $S_{sim}$ (non-empty, no duplicates, no target).
        dissimilar: the classes of $S_{dissim}$ (same rules, disjoint from ``similar``).
        reference: the normalising set, ``"union"`` or ``"all"``.

    Returns:
        A [`DiffusionIndex`][lsdiffusion.DiffusionIndex]; ``.similar`` and ``.dissimilar`` are in
        percent.

    See Also:
        [`diffusion_indices`][lsdiffusion.diffusion_indices] for many targets at once.

    Examples:
        >>> import torch
        >>> t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])  # d0 = 1/4, 3/4
        >>> t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])  # d1 = 1/5, 4/5
        >>> r = diffusion_index(t0, t1, target=0, similar=[1], dissimilar=[2])
        >>> round(r.similar, 3), round(r.dissimilar, 3)
        (-20.0, 6.667)
    """
    _check_choice("reference", reference, _REFERENCES)
    c0, c1 = _centroid_pair(centroids_t0, centroids_t1)
    num_classes = int(c0.shape[0])
    t = _check_target(target, num_classes)
    sim = _index_array("similar", similar)
    dis = _index_array("dissimilar", dissimilar)
    _check_one_set("similar", sim, t, num_classes)
    _check_one_set("dissimilar", dis, t, num_classes)
    overlap = np.intersect1d(sim, dis)
    if overlap.size:
        raise ValueError(
            f"similar and dissimilar of target {t} overlap in classes {_short_list(overlap)}"
        )
    if reference == "union":
        ref = np.concatenate([sim, dis])
    else:
        ref = np.asarray([k for k in range(num_classes) if k != t], dtype=np.int64)
    device = c0.device
    ref_t = torch.from_numpy(ref).to(device)
    rows = torch.cat([torch.tensor([t], device=device), ref_t])
    _check_finite_rows(c0, c1, rows)

    def rel(name: str, c: torch.Tensor) -> torch.Tensor:
        dist = torch.linalg.vector_norm(c.index_select(0, ref_t) - c[t], dim=1)
        total = dist.sum()
        if not bool(total > 0):
            raise ValueError(
                f"{name}: every reference class coincides with the centroid of target {t}, "
                "so relative distances are undefined"
            )
        out: torch.Tensor = dist / total
        return out

    d0, d1 = rel("centroids_t0", c0), rel("centroids_t1", c1)
    # only the classes in the sets are divided by: other reference classes may coincide
    in_sets = torch.from_numpy(np.isin(ref, np.concatenate([sim, dis]))).to(device)
    if bool((in_sets & ~(d0 > 0)).any()):
        zero = ref_t[in_sets & ~(d0 > 0)].cpu().tolist()
        raise ValueError(
            f"centroids_t0 of classes {_short_list(zero)} coincide with the centroid of "
            f"target {t}: the relative change is undefined"
        )
    safe_d0 = torch.where(in_sets, d0, 1.0)
    change = torch.where(in_sets, (d1 - d0) / safe_d0 * 100.0, float("nan")).cpu().tolist()
    changes = dict(zip(ref.tolist(), change, strict=True))
    return DiffusionIndex(
        target=t,
        similar=float(np.mean([changes[int(k)] for k in sim])),
        dissimilar=float(np.mean([changes[int(k)] for k in dis])),
        similar_classes=tuple(int(k) for k in sim),
        dissimilar_classes=tuple(int(k) for k in dis),
        reference=reference,
        changes={int(k): changes[int(k)] for k in np.concatenate([sim, dis])},
    )


@dataclass(frozen=True)
class DiffusionSignificance:
    r"""Is the diffusion systematic? Tests over the targets of a `DiffusionIndexTable`.

    Made by
    [`DiffusionIndexTable.significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance].
    With $a_i$ the $\alpha(\pi_i, S_{sim})$ and $b_i$ the $\alpha(\pi_i, S_{dissim})$ of the $n$
    targets:

    * ``p_similar_negative``: one-sided Wilcoxon signed-rank test of
      $a_i$, alternative "located below 0" (``scipy.stats.wilcoxon(a,
      alternative="less")``);
    * ``p_dissimilar_positive``: the same for $b_i$, alternative "above 0";
    * ``p_similar_below_dissimilar``: paired, one-sided, on $a_i - b_i$,
      alternative "below 0" (``wilcoxon(a, b, alternative="less")``);
    * ``ci_similar``, ``ci_dissimilar``: bootstrap confidence intervals of the
      means $\bar a$, $\bar b$ (``scipy.stats.bootstrap``, BCa,
      ``n_resamples`` resamples of the targets).

    The tests treat targets as independent units. Targets measured on one
    network share it, so pool targets over several seeds
    ([`DiffusionIndexTable.concat`][lsdiffusion.diffusion.DiffusionIndexTable.concat]) before
    reading much into a small p.

    Attributes:
        n: the number of targets.
        mean_similar: $\bar a$, percent.
        mean_dissimilar: $\bar b$, percent.
        p_similar_negative: p-value of $a < 0$.
        p_dissimilar_positive: p-value of $b > 0$.
        p_similar_below_dissimilar: p-value of $a < b$ (paired).
        ci_similar: ``(low, high)`` interval of $\bar a$, percent.
        ci_dissimilar: ``(low, high)`` interval of $\bar b$, percent.
        confidence: the intervals' confidence level.
        n_resamples: bootstrap resamples.
    """

    n: int
    mean_similar: float
    mean_dissimilar: float
    p_similar_negative: float
    p_dissimilar_positive: float
    p_similar_below_dissimilar: float
    ci_similar: tuple[float, float]
    ci_dissimilar: tuple[float, float]
    confidence: float
    n_resamples: int

    def systematic(self, level: float | None = None) -> bool:
        r"""Whether both one-sided tests reject at ``level`` (systematic diffusion).

        Requiring *both* p-values below ``level`` is an intersection-union
        test: the joint claim holds at level ``level`` with no multiplicity
        correction.

        Args:
            level: significance level; default ``1 - confidence`` (0.05).
        """
        lvl = 1.0 - self.confidence if level is None else float(level)
        if not 0.0 < lvl < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        return self.p_similar_negative < lvl and self.p_dissimilar_positive < lvl

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (intervals as ``[low, high]`` lists)."""
        return {
            "n": self.n,
            "mean_similar": self.mean_similar,
            "mean_dissimilar": self.mean_dissimilar,
            "p_similar_negative": self.p_similar_negative,
            "p_dissimilar_positive": self.p_dissimilar_positive,
            "p_similar_below_dissimilar": self.p_similar_below_dissimilar,
            "ci_similar": list(self.ci_similar),
            "ci_dissimilar": list(self.ci_dissimilar),
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "systematic": self.systematic(),
        }

    def to_text(self, decimals: int = 2) -> str:
        """Three aligned lines: each mean with its interval and p-value, then the paired test."""
        f = f"{{:+.{decimals}f}}"
        pct = f"{self.confidence * 100:g}%"
        rows = [
            ("α_sim", self.mean_similar, self.ci_similar, "α_sim < 0", self.p_similar_negative),
            (
                "α_dissim",
                self.mean_dissimilar,
                self.ci_dissimilar,
                "α_dissim > 0",
                self.p_dissimilar_positive,
            ),
        ]
        cells = [
            (
                f"{name:<9} mean {f.format(mean)} %",
                f"{pct} CI [{f.format(ci[0])}, {f.format(ci[1])}]",
                f"p({test}) = {p:.2g}",
            )
            for name, mean, ci, test, p in rows
        ]
        w0 = max(len(c[0]) for c in cells)
        w1 = max(len(c[1]) for c in cells)
        lines = [f"{a:<{w0}}  {b:<{w1}}  {c}" for a, b, c in cells]
        paired = f"p(α_sim < α_dissim) = {self.p_similar_below_dissimilar:.2g}"
        lines.append(f"{'paired':<{w0 + w1 + 4}}{paired}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return (
            f"n = {self.n} targets; one-sided Wilcoxon signed-rank p-values, "
            f"bootstrap (BCa, {self.n_resamples} resamples) intervals\n" + self.to_text()
        )


def _bootstrap_interval(
    values: npt.NDArray[np.float64], confidence: float, n_resamples: int, seed: int | None
) -> tuple[float, float]:
    """BCa bootstrap interval of the mean (scipy), seeded with ``np.random.default_rng(seed)``."""
    import inspect

    from scipy import stats

    # scipy >= 1.15 names the generator ``rng``; older releases ``random_state``
    key = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
    res = stats.bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        **{key: np.random.default_rng(seed)},
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _class_name(names: ClassNames, k: int) -> str:
    if names is None:
        return str(k)
    if isinstance(names, Mapping):
        return str(names.get(k, k))
    return str(names[k]) if 0 <= k < len(names) else str(k)


@dataclass(frozen=True)
class DiffusionIndexTable:
    r"""Diffusion indices of many targets: one row per target plus the mean.

    Attributes:
        targets: (T,) int64 target classes.
        similar: (T,) float64, $\alpha(\pi, S_{sim})$ in percent.
        dissimilar: (T,) float64, $\alpha(\pi, S_{dissim})$ in percent.
        reference: the normalising set used (``"union"`` or ``"all"``).

    Examples:
        >>> import numpy as np
        >>> tab = DiffusionIndexTable(np.array([3, 7]), np.array([-2.0, -4.0]),
        ...                           np.array([1.0, 3.0]), "union")
        >>> print(tab.to_markdown(names={3: "cat", 7: "dog"}))
        | target | α_sim (%) | α_dissim (%) |
        |---|---:|---:|
        | cat | -2.00 | +1.00 |
        | dog | -4.00 | +3.00 |
        | **mean** | **-3.00** | **+2.00** |
    """

    targets: npt.NDArray[np.int64]
    similar: npt.NDArray[np.float64]
    dissimilar: npt.NDArray[np.float64]
    reference: Reference = "union"

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __iter__(self) -> Iterator[tuple[int, float, float]]:
        """Yield ``(target, similar, dissimilar)`` rows."""
        for t, s, d in zip(self.targets, self.similar, self.dissimilar, strict=True):
            yield int(t), float(s), float(d)

    @property
    def mean_similar(self) -> float:
        """Mean of `similar` over targets, in percent."""
        return float(np.mean(self.similar))

    @property
    def mean_dissimilar(self) -> float:
        """Mean of `dissimilar` over targets, in percent."""
        return float(np.mean(self.dissimilar))

    @property
    def fraction_systematic(self) -> float:
        """Fraction of targets with systematic diffusion (α_sim < 0 < α_dissim)."""
        return float(np.mean((self.similar < 0) & (self.dissimilar > 0)))

    def row(self, target: int) -> tuple[float, float]:
        """Return ``(similar, dissimilar)`` of one target class."""
        hits = np.nonzero(self.targets == int(target))[0]
        if hits.size == 0:
            raise KeyError(f"target {target} is not in this table")
        i = int(hits[0])
        return float(self.similar[i]), float(self.dissimilar[i])

    @classmethod
    def concat(cls, tables: Iterable[DiffusionIndexTable]) -> DiffusionIndexTable:
        """Pool the rows of several tables (e.g. one per seed) into one table.

        Targets may then repeat (class 3 of seed 0 and class 3 of seed 1 are
        two rows); [`significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance] treats
        every row as one observation.

        Examples:
            >>> import numpy as np
            >>> a = DiffusionIndexTable(np.array([0, 1]), np.array([-2.0, -4.0]),
            ...                         np.array([1.0, 3.0]))
            >>> len(DiffusionIndexTable.concat([a, a]))
            4
        """
        items = list(tables)
        if not items:
            raise ValueError("tables is empty; pass at least one DiffusionIndexTable")
        for i, t in enumerate(items):
            if not isinstance(t, DiffusionIndexTable):
                raise TypeError(
                    f"tables[{i}] must be a DiffusionIndexTable, got {type(t).__name__}"
                )
        refs = sorted({t.reference for t in items})
        if len(refs) > 1:
            raise ValueError(
                f"tables must share one reference set to be pooled, got references {refs}"
            )
        return cls(
            targets=np.concatenate([t.targets for t in items]).astype(np.int64),
            similar=np.concatenate([t.similar for t in items]).astype(np.float64),
            dissimilar=np.concatenate([t.dissimilar for t in items]).astype(np.float64),
            reference=items[0].reference,
        )

    def significance(
        self, confidence: float = 0.95, n_resamples: int = 10_000, seed: int | None = 0
    ) -> DiffusionSignificance:
        r"""Test systematic diffusion over the targets: Wilcoxon p-values, bootstrap intervals.

        With $a_i = \alpha(\pi_i, S_{sim})$ and $b_i = \alpha(\pi_i, S_{dissim})$:

        * ``p_similar_negative`` = ``scipy.stats.wilcoxon(a, alternative="less").pvalue``
        * ``p_dissimilar_positive`` = ``wilcoxon(b, alternative="greater").pvalue``
        * ``p_similar_below_dissimilar`` = ``wilcoxon(a, b, alternative="less").pvalue``
          (paired: the signed ranks of $a_i - b_i$)
        * ``ci_similar`` / ``ci_dissimilar``: ``scipy.stats.bootstrap((a,), np.mean,
          confidence_level=confidence, n_resamples=n_resamples)`` (BCa), each
          with a generator ``np.random.default_rng(seed)``.

        The signed-rank test asks whether the values are located (their
        pseudo-median) below or above zero, without assuming normality; it
        assumes independent targets and a distribution symmetric about its
        centre. See [`DiffusionSignificance`][lsdiffusion.DiffusionSignificance] and the concepts
        page.

        Args:
            confidence: confidence level of the intervals, in (0, 1); ``1 -
                confidence`` is also the default level of
                [`DiffusionSignificance.systematic`][lsdiffusion.diffusion.DiffusionSignificance.systematic].
            n_resamples: bootstrap resamples (>= 1; the default 10 000 takes
                milliseconds for thousands of targets).
            seed: seeds the bootstrap, so that a table always gives the same
                intervals; ``None`` draws fresh entropy.

        Returns:
            A [`DiffusionSignificance`][lsdiffusion.DiffusionSignificance].

        Raises:
            ValueError: fewer than 2 targets, or bad arguments.

        Examples:
            >>> import numpy as np
            >>> tab = DiffusionIndexTable(np.arange(8),
            ...     np.array([-9.0, -4.0, -6.0, -1.0, -7.5, -3.0, -8.0, 0.5]),
            ...     np.array([2.0, 1.0, 0.5, 3.0, -0.2, 1.5, 2.5, 0.8]))
            >>> sig = tab.significance(n_resamples=2000)
            >>> sig.n, round(sig.p_similar_negative, 4), round(sig.p_dissimilar_positive, 4)
            (8, 0.0078, 0.0078)
            >>> sig.systematic()
            True
        """
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
            raise TypeError(
                f"confidence must be a float in (0, 1), got {type(confidence).__name__}"
            )
        if not 0.0 < float(confidence) < 1.0:
            raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
        reps = _check_int("n_resamples", n_resamples, minimum=1)
        if seed is not None:
            _check_int("seed", seed, minimum=0)
        n = len(self)
        if n < 2:
            raise ValueError(
                f"significance needs at least 2 targets, got {n}; pool more targets or "
                "seeds with DiffusionIndexTable.concat"
            )
        from scipy import stats

        a = np.asarray(self.similar, dtype=np.float64)
        b = np.asarray(self.dissimilar, dtype=np.float64)
        conf = float(confidence)
        return DiffusionSignificance(
            n=n,
            mean_similar=float(np.mean(a)),
            mean_dissimilar=float(np.mean(b)),
            p_similar_negative=float(stats.wilcoxon(a, alternative="less").pvalue),
            p_dissimilar_positive=float(stats.wilcoxon(b, alternative="greater").pvalue),
            p_similar_below_dissimilar=float(stats.wilcoxon(a, b, alternative="less").pvalue),
            ci_similar=_bootstrap_interval(a, conf, reps, seed),
            ci_dissimilar=_bootstrap_interval(b, conf, reps, seed),
            confidence=conf,
            n_resamples=reps,
        )

    def _cells(self, names: ClassNames, decimals: int) -> list[tuple[str, str, str]]:
        fmt = f"{{:+.{decimals}f}}"
        rows = [(_class_name(names, t), fmt.format(s), fmt.format(d)) for t, s, d in self]
        rows.append(("mean", fmt.format(self.mean_similar), fmt.format(self.mean_dissimilar)))
        return rows

    def to_text(self, names: ClassNames = None, decimals: int = 2) -> str:
        """Plain aligned text, one row per target and a final mean row."""
        header = ("target", "α_sim (%)", "α_dissim (%)")
        cells = self._cells(names, decimals)
        widths = [max(len(r[i]) for r in [header, *cells]) for i in range(3)]

        def line(r: tuple[str, str, str]) -> str:
            return f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}".rstrip()

        rule = "-" * (sum(widths) + 4)
        body = [line(r) for r in cells]
        return "\n".join([line(header), rule, *body[:-1], rule, body[-1]])

    def to_markdown(self, names: ClassNames = None, decimals: int = 2) -> str:
        """A GitHub-flavoured Markdown table (mean row in bold)."""
        cells = self._cells(names, decimals)
        lines = ["| target | α_sim (%) | α_dissim (%) |", "|---|---:|---:|"]
        lines += [f"| {a} | {b} | {c} |" for a, b, c in cells[:-1]]
        a, b, c = cells[-1]
        lines.append(f"| **{a}** | **{b}** | **{c}** |")
        return "\n".join(lines)

    def to_latex(self, names: ClassNames = None, decimals: int = 2) -> str:
        """A LaTeX ``tabular`` (booktabs rules), mean row last."""

        def esc(text: str) -> str:
            for ch in ("\\", "&", "%", "$", "#", "_", "{", "}"):
                text = text.replace(ch, "\\" + ch)
            return text

        cells = self._cells(names, decimals)
        lines = [
            "\\begin{tabular}{lrr}",
            "\\toprule",
            "Target & $\\alpha_{\\mathrm{sim}}$ (\\%) & $\\alpha_{\\mathrm{dissim}}$ (\\%) \\\\",
            "\\midrule",
        ]
        lines += [f"{esc(a)} & ${b}$ & ${c}$ \\\\" for a, b, c in cells[:-1]]
        _, b, c = cells[-1]
        lines += ["\\midrule", f"Mean & ${b}$ & ${c}$ \\\\", "\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)

    def to_csv(self, path: str | Path | None = None, names: ClassNames = None) -> str:
        """CSV text (full precision, mean row last); also written to ``path`` if given."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["target", "name", "similar_pct", "dissimilar_pct"])
        for t, s, d in self:
            writer.writerow([t, _class_name(names, t), repr(s), repr(d)])
        writer.writerow(["", "mean", repr(self.mean_similar), repr(self.mean_dissimilar)])
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def __str__(self) -> str:
        return self.to_text()


def _build_mask(
    name: str,
    sets: object,
    targets: npt.NDArray[np.int64],
    num_classes: int,
) -> npt.NDArray[np.bool_]:
    """Turn ragged sets (aligned with ``targets``) or a bool mask into a (T, C) mask."""
    num_targets = int(targets.shape[0])
    if isinstance(sets, (torch.Tensor, np.ndarray)):
        arr: npt.NDArray[Any] = (
            sets.detach().cpu().numpy() if isinstance(sets, torch.Tensor) else sets
        )
        if arr.dtype != np.bool_:
            raise TypeError(
                f"{name} given as an array must be a boolean mask of shape "
                f"({num_targets}, {num_classes}), got dtype {arr.dtype}; "
                "pass ragged sets as a list of lists or a dict {target: classes}"
            )
        if (
            arr.shape == (num_classes, num_classes)
            and num_targets == num_classes
            and not np.array_equal(targets, np.arange(num_classes))
        ):
            raise ValueError(
                f"{name} is a ({num_classes}, {num_classes}) mask and there are {num_targets} "
                "targets in a non-identity order: it could be aligned with targets or indexed "
                "by class. Pass targets=None (every class, row t for class t) or a list of "
                "per-target class lists"
            )
        if arr.shape == (num_classes, num_classes):
            mask: npt.NDArray[np.bool_] = arr[targets]  # row t holds the sets of class t
        elif arr.shape == (num_targets, num_classes):
            mask = arr.copy()
        else:
            raise ValueError(
                f"{name} mask must have shape ({num_targets}, {num_classes}) (aligned with "
                f"targets) or ({num_classes}, {num_classes}) (row t for class t), "
                f"got {arr.shape}"
            )
        sizes = mask.sum(axis=1)
        if (sizes == 0).any():
            t = int(targets[int(np.argmax(sizes == 0))])
            raise ValueError(f"{name} of target {t} is empty; it needs at least one class")
        self_hit = mask[np.arange(num_targets), targets]
        if self_hit.any():
            t = int(targets[int(np.argmax(self_hit))])
            raise ValueError(f"{name} of target {t} contains the target itself")
        return mask
    if isinstance(sets, Mapping):
        missing = [int(t) for t in targets if int(t) not in sets]
        if missing:
            raise KeyError(f"{name} has no entry for targets {_short_list(missing)}")
        rows: list[object] = [sets[int(t)] for t in targets]
    elif isinstance(sets, Sequence) and not isinstance(sets, (str, bytes)):
        if len(sets) != num_targets:
            raise ValueError(
                f"{name} must hold one set per target: {num_targets} targets, got {len(sets)} sets"
            )
        rows = list(sets)
    else:
        raise TypeError(
            f"{name} must be a list of class-index lists (one per target), a dict "
            f"{{target: classes}} or a boolean (targets, classes) mask, got {type(sets).__name__}"
        )
    arrays = [_index_array(f"{name}[{i}]", r) for i, r in enumerate(rows)]
    lengths = np.asarray([a.size for a in arrays], dtype=np.int64)
    if (lengths == 0).any():
        t = int(targets[int(np.argmax(lengths == 0))])
        raise ValueError(f"{name} of target {t} is empty; it needs at least one class")
    flat = np.concatenate(arrays)
    row_of = np.repeat(np.arange(num_targets), lengths)
    bad = (flat < 0) | (flat >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"{name} of target {int(targets[row_of[i]])} must hold class indices in "
            f"[0, {num_classes - 1}] (the centroids have {num_classes} rows), got {int(flat[i])}"
        )
    self_hit = flat == targets[row_of]
    if self_hit.any():
        t = int(targets[row_of[int(np.argmax(self_hit))]])
        raise ValueError(f"{name} of target {t} contains the target itself")
    mask = np.zeros((num_targets, num_classes), dtype=np.bool_)
    mask[row_of, flat] = True
    sizes = mask.sum(axis=1)
    if (sizes != lengths).any():
        i = int(np.argmax(sizes != lengths))
        uniq, counts = np.unique(arrays[i], return_counts=True)
        raise ValueError(
            f"{name} of target {int(targets[i])} has duplicate classes "
            f"{_short_list(uniq[counts > 1])}"
        )
    return mask


def _finite_rows(c: torch.Tensor) -> torch.Tensor:
    """(C,) bool, True where the row of ``c`` is all finite (one cheap pass over ``c``)."""
    finite = torch.isfinite(c.sum(dim=1))
    if not bool(finite.all()):  # a sum can also overflow: check the suspects exactly
        suspects = torch.nonzero(~finite).flatten()
        finite[suspects] = torch.isfinite(c.index_select(0, suspects)).all(dim=1)
    return finite


def _distances_to(c: torch.Tensor, targets: torch.Tensor, centre_row: int) -> torch.Tensor:
    """Euclidean distances (T, C) from ``c[targets]`` to every row of ``c``, in float64.

    Uses the matrix-product expansion ``|a|² + |b|² - 2 a·b`` on rows centred at a
    finite row (so nothing cancels because of a far-away origin), then recomputes
    exactly, by differences, the pairs where the expansion could lose precision
    (``d² <= 1e-6 (|a|² + |b|²)``: then the relative error could exceed ~1e-10).
    """
    x = c - c[centre_row]
    sq = torch.linalg.vector_norm(x, dim=1).square()
    everything = targets.shape[0] == c.shape[0] and bool(
        torch.equal(targets, torch.arange(c.shape[0], device=targets.device))
    )
    xt = x if everything else x.index_select(0, targets)
    sq_t = (sq if everything else sq.index_select(0, targets)).unsqueeze(1)
    d2 = (xt @ x.T).mul_(-2.0).add_(sq_t).add_(sq)
    risky = d2 <= 1e-6 * (sq_t + sq)
    own = torch.arange(targets.shape[0], device=targets.device)
    risky[own, targets] = False  # a target's distance to itself is exactly 0
    dist = d2.clamp_min_(0.0).sqrt_()
    dist[own, targets] = 0.0
    rows, cols = torch.nonzero(risky, as_tuple=True)
    if rows.numel():
        exact = torch.linalg.vector_norm(x.index_select(0, cols) - xt.index_select(0, rows), dim=1)
        dist[rows, cols] = exact
    return dist


def diffusion_indices(
    centroids_t0: ArrayLike,
    centroids_t1: ArrayLike,
    targets: Iterable[int] | ArrayLike | None,
    similar: ClassSets,
    dissimilar: ClassSets,
    *,
    reference: Reference = "union",
) -> DiffusionIndexTable:
    """Diffusion indices of many targets at once (vectorised `diffusion_index`).

    The sets become two boolean (T, C) masks; all target-to-class distances are
    one float64 matrix product, so all 1000 ImageNet classes against sets of
    hundreds of classes take a fraction of a second on a CPU. The formula and
    the rules for the sets are those of [`diffusion_index`][lsdiffusion.diffusion_index].

    Args:
        centroids_t0: (C, D) centroids of the student distilled at T0.
        centroids_t1: (C, D) centroids of the student distilled at T1.
        targets: the T target classes (distinct). ``None`` takes the keys of
            ``similar`` when it is a dict, or every class ``0..C-1`` when the sets
            are masks with C rows.
        similar: $S_{sim}$ per target: a ragged list of class-index lists
            aligned with ``targets``, a dict ``{target: classes}``, a boolean
            (T, C) mask aligned with ``targets``, or a boolean (C, C) mask whose
            row ``t`` holds the set of class ``t`` (as
            [`lsdiffusion.semantics.ClassSetMasks`][lsdiffusion.ClassSetMasks]).
        dissimilar: $S_{dissim}$ per target, in the same forms.
        reference: the normalising set, ``"union"`` or ``"all"``.

    Returns:
        A [`DiffusionIndexTable`][lsdiffusion.DiffusionIndexTable] (percent), rows in the order of
        ``targets``.

    Shape:
        - centroids: (C, D); targets: (T,); masks: (T, C) or (C, C).

    Examples:
        >>> import torch
        >>> t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
        >>> t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
        >>> tab = diffusion_indices(t0, t1, [0, 1], similar=[[1], [0]], dissimilar=[[2], [2]])
        >>> print(tab.to_text(decimals=1))
        target  α_sim (%)  α_dissim (%)
        -------------------------------
        0           -20.0          +6.7
        1           -18.8          +5.9
        -------------------------------
        mean        -19.4          +6.3
    """
    _check_choice("reference", reference, _REFERENCES)
    c0, c1 = _centroid_pair(centroids_t0, centroids_t1)
    num_classes = int(c0.shape[0])
    if targets is None:
        if isinstance(similar, Mapping):
            targets = list(similar.keys())
        elif isinstance(similar, (torch.Tensor, np.ndarray)) and similar.shape[0] == num_classes:
            targets = list(range(num_classes))
        else:
            raise ValueError(
                "targets=None needs similar as a dict {target: classes} or as a "
                f"({num_classes}, {num_classes}) mask; pass the targets explicitly"
            )
    tgt = _index_array("targets", targets)
    if tgt.size == 0:
        raise ValueError("targets is empty; pass at least one target class")
    _check_range("targets", tgt, num_classes)
    uniq, counts = np.unique(tgt, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"targets has duplicate classes {_short_list(uniq[counts > 1])}")
    sim = _build_mask("similar", similar, tgt, num_classes)
    dis = _build_mask("dissimilar", dissimilar, tgt, num_classes)
    both = sim & dis
    if both.any():
        i, k = (int(v[0]) for v in np.nonzero(both))
        raise ValueError(
            f"similar and dissimilar of target {int(tgt[i])} overlap in classes "
            f"{_short_list(np.nonzero(both[i])[0])}"
        )
    device = c0.device
    t_idx = torch.from_numpy(tgt).to(device)
    sim_m = torch.from_numpy(sim).to(device)
    dis_m = torch.from_numpy(dis).to(device)
    if reference == "union":
        ref_m = sim_m | dis_m
        needed = ref_m.any(dim=0)
        needed[t_idx] = True
    else:
        ref_m = torch.ones_like(sim_m)
        ref_m[torch.arange(len(tgt), device=device), t_idx] = False
        needed = torch.ones(num_classes, dtype=torch.bool, device=device)
    for name, c in (("centroids_t0", c0), ("centroids_t1", c1)):
        bad = needed & ~_finite_rows(c)
        if bool(bad.any()):
            _raise_non_finite(name, torch.nonzero(bad).flatten().cpu().tolist())

    zero = torch.zeros((), dtype=torch.float64, device=device)

    def rel(name: str, c: torch.Tensor) -> torch.Tensor:
        dist = torch.where(ref_m, _distances_to(c, t_idx, int(tgt[0])), zero)
        total = dist.sum(dim=1, keepdim=True)
        collapsed = ~(total.squeeze(1) > 0)
        if bool(collapsed.any()):
            i = int(torch.nonzero(collapsed)[0, 0])
            raise ValueError(
                f"{name}: every reference class coincides with the centroid of target "
                f"{int(tgt[i])}, so relative distances are undefined"
            )
        return dist / total

    d0, d1 = rel("centroids_t0", c0), rel("centroids_t1", c1)
    in_sets = sim_m | dis_m
    degenerate = in_sets & ~(d0 > 0)
    if bool(degenerate.any()):
        i, k = (int(v[0]) for v in torch.nonzero(degenerate, as_tuple=True))
        raise ValueError(
            f"centroids_t0 of class {k} coincides with the centroid of target {int(tgt[i])}: "
            "the relative change is undefined"
        )
    change = torch.where(in_sets, (d1 - d0) / torch.where(in_sets, d0, 1.0), zero) * 100.0
    a_sim = change.mul(sim_m).sum(dim=1) / sim_m.sum(dim=1)
    a_dis = change.mul(dis_m).sum(dim=1) / dis_m.sum(dim=1)
    return DiffusionIndexTable(
        targets=tgt.copy(),
        similar=a_sim.cpu().numpy().astype(np.float64),
        dissimilar=a_dis.cpu().numpy().astype(np.float64),
        reference=reference,
    )
