"""Is the diffusion systematic? Wilcoxon signed-rank tests and bootstrap intervals.

Private to [`lsdiffusion.diffusion`][lsdiffusion.diffusion]; made by
[`DiffusionIndexTable.significance`][lsdiffusion.diffusion.DiffusionIndexTable.significance].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from lsdiffusion._validation import check_int


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

    @property
    def systematic(self) -> bool:
        """Whether both one-sided tests reject at level `1 - confidence` (0.05 by default).

        A property, like
        [`DiffusionIndex.systematic`][lsdiffusion.diffusion.DiffusionIndex.systematic];
        [`systematic_at`][lsdiffusion.diffusion.DiffusionSignificance.systematic_at]
        takes another level.
        """
        return self.systematic_at(1.0 - self.confidence)

    def systematic_at(self, level: float) -> bool:
        """Whether both one-sided tests reject at `level` (systematic diffusion).

        Requiring *both* p-values below `level` is an intersection-union
        test: the joint claim holds at level `level` with no multiplicity
        correction.

        Args:
            level: significance level, in (0, 1).

        Raises:
            ValueError: `level` outside (0, 1).
        """
        if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)):
            raise TypeError(f"level must be a float in (0, 1), got {type(level).__name__}")
        lvl = float(level)
        if not 0.0 < lvl < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level!r}")
        return self.p_similar_negative < lvl and self.p_dissimilar_positive < lvl

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (intervals as `[low, high]` lists; NaN becomes `None`).

        `json.dumps` of the result is standard JSON (no `NaN` tokens).
        """
        return {
            "n": self.n,
            "mean_similar": json_float(self.mean_similar),
            "mean_dissimilar": json_float(self.mean_dissimilar),
            "p_similar_negative": json_float(self.p_similar_negative),
            "p_dissimilar_positive": json_float(self.p_dissimilar_positive),
            "p_similar_below_dissimilar": json_float(self.p_similar_below_dissimilar),
            "ci_similar": [json_float(v) for v in self.ci_similar],
            "ci_dissimilar": [json_float(v) for v in self.ci_dissimilar],
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "systematic": self.systematic,
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


def json_float(value: float) -> float | None:
    """`value` as a float, or `None` when it is NaN or infinite (JSON has neither)."""
    v = float(value)
    return v if math.isfinite(v) else None


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


def significance_of(
    similar: npt.NDArray[np.float64],
    dissimilar: npt.NDArray[np.float64],
    confidence: float,
    n_resamples: int,
    seed: int | None,
) -> DiffusionSignificance:
    """The tests of `DiffusionIndexTable.significance` on its two columns (same arguments)."""
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"confidence must be a float in (0, 1), got {type(confidence).__name__}")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    reps = check_int("n_resamples", n_resamples, minimum=1)
    if seed is not None:
        check_int("seed", seed, minimum=0)
    n = int(np.asarray(similar).shape[0])
    if n < 2:
        raise ValueError(
            f"significance needs at least 2 targets, got {n}; pool more targets or "
            "seeds with DiffusionIndexTable.concat"
        )
    from scipy import stats

    a = np.asarray(similar, dtype=np.float64)
    b = np.asarray(dissimilar, dtype=np.float64)
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
