"""[`DemoResult`][lsdiffusion.demo.DemoResult]: the per-seed measurements, the checks, the JSON."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lsdiffusion.demo import report
from lsdiffusion.demo.config import DemoConfig
from lsdiffusion.demo.geometry import GeometryComparison, GeometryRow, compare_geometry

if TYPE_CHECKING:
    from lsdiffusion.diffusion import DiffusionIndexTable, DiffusionSignificance

__all__ = ["DemoResult"]


def _summary(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "values"}`` of per-seed values."""
    mean, std = report.mean_std(values)
    return {"mean": mean, "std": std, "values": list(values)}


@dataclass
class DemoResult:
    """Raw per-seed measurements and their summaries (all JSON-serialisable)."""

    config: DemoConfig
    teacher_accuracy: dict[float, list[float]] = field(default_factory=dict)
    student_accuracy: dict[tuple[float, float], list[float]] = field(default_factory=dict)
    diffusion: dict[tuple[float, float], list[tuple[float, float]]] = field(default_factory=dict)
    # per seed, the per-class diffusion indices behind ``diffusion``'s means
    diffusion_tables: dict[tuple[float, float], list[DiffusionIndexTable]] = field(
        default_factory=dict, repr=False
    )
    entropy: dict[tuple[float, float], list[float]] = field(default_factory=dict)
    # per seed, the cluster geometry of each teacher's and each student's test features
    teacher_geometry: dict[float, list[GeometryRow]] = field(default_factory=dict, repr=False)
    student_geometry: dict[tuple[float, float], list[GeometryRow]] = field(
        default_factory=dict, repr=False
    )
    seconds: float = 0.0
    figure: str | None = None  # the projections (figure.png), once written
    figures: list[str] = field(default_factory=list)  # every figure written, by file name
    # The first seed's students by (alpha, T), as state dicts: what the figures show.
    students: dict[tuple[float, float], dict[str, Any]] = field(default_factory=dict, repr=False)

    # -- summaries ---------------------------------------------------------

    SIGNIFICANCE_LEVEL = 0.05
    """Level of the demo's significance check (both one-sided Wilcoxon p-values below it)."""

    def significance(self, alpha: float, t1: float) -> DiffusionSignificance:
        """Significance of the diffusion index of teacher ``alpha`` at ``t1``, seeds pooled.

        The per-class tables of every seed are pooled into one table of
        ``classes x seeds`` targets (`DiffusionIndexTable.concat`) and tested
        with `DiffusionIndexTable.significance` (defaults: 95% intervals,
        10 000 bootstrap resamples, seed 0), so the result is the same on every
        run.
        """
        from lsdiffusion.diffusion import DiffusionIndexTable

        if (alpha, t1) not in self.diffusion_tables:
            raise KeyError(
                f"no per-class diffusion indices for teacher alpha={alpha:g} at T1={t1:g}; "
                f"measured: {sorted(self.diffusion_tables)}"
            )
        tables = self.diffusion_tables[(alpha, t1)]
        # about 0.3 s per cell (BCa bootstrap): computed once per cell and number of seeds
        cache = self.__dict__.setdefault("_significance", {})
        key = (alpha, t1, len(tables))
        if key not in cache:
            cache[key] = DiffusionIndexTable.concat(tables).significance()
        sig: DiffusionSignificance = cache[key]
        return sig

    def geometry_comparisons(self) -> dict[str, GeometryComparison]:
        """The LS teacher against the plain one, and their students at T0 (observations 1, 2).

        Keys ``"teacher"`` and ``"student T=<T0>"``; each compares per-class
        CDNV with one-sided Wilcoxon tests, every class of every seed one pair
        (`lsdiffusion.demo.geometry.compare_geometry`).
        Empty when the run measured no geometry.
        """
        plain, ls = min(self.config.alphas), max(self.config.alphas)
        t0 = self.config.temperatures[0]
        out = {}
        if ls in self.teacher_geometry and plain in self.teacher_geometry:
            out["teacher"] = compare_geometry(
                self.teacher_geometry[ls], self.teacher_geometry[plain]
            )
        if (ls, t0) in self.student_geometry and (plain, t0) in self.student_geometry:
            out[f"student T={t0:g}"] = compare_geometry(
                self.student_geometry[(ls, t0)], self.student_geometry[(plain, t0)]
            )
        return out

    def checks(self) -> dict[str, bool]:
        """The paper's four qualitative outcomes, as observed in this run.

        The three accuracy outcomes compare means over seeds. The fourth,
        systematic diffusion, is decided by the significance tests (both
        one-sided Wilcoxon p-values below `SIGNIFICANCE_LEVEL`, targets
        pooled over seeds), not by the signs of the means alone.
        """
        plain, ls = min(self.config.alphas), max(self.config.alphas)
        t0, t_high = self.config.temperatures[0], max(self.config.temperatures)
        t1 = self.config.diffusion_t1

        def acc(a: float, t: float) -> float:
            return statistics.fmean(self.student_accuracy[(a, t)])

        out = {
            "LS teacher beats the plain teacher": statistics.fmean(self.teacher_accuracy[ls])
            > statistics.fmean(self.teacher_accuracy[plain]),
            f"at T = {t0:g}, the LS-teacher student is at least as good": acc(ls, t0)
            >= acc(plain, t0),
            f"at T = {t_high:g}, the LS-teacher student falls behind": acc(ls, t_high)
            < acc(plain, t_high),
        }
        if (ls, t1) in self.diffusion_tables:
            sig = self.significance(ls, t1)
            name = (
                f"LS teacher, T {t0:g} -> {t1:g}: alpha_sim < 0 < alpha_dissim, "
                f"significant (one-sided Wilcoxon p < {self.SIGNIFICANCE_LEVEL:g} each, "
                f"n = {sig.n})"
            )
            out[name] = sig.systematic_at(self.SIGNIFICANCE_LEVEL)
        level = self.SIGNIFICANCE_LEVEL
        for key, comparison in self.geometry_comparisons().items():
            if key == "teacher":
                name = (
                    "LS teacher: tighter clusters, similar classes farther apart (per-class "
                    "NC1 terms and CDNV over similar classes below the plain teacher's, "
                    f"one-sided Wilcoxon p < {level:g} each, n = {comparison.n})"
                )
            else:
                name = (
                    f"at T = {t0:g}, the LS-teacher student inherits it (the same tests "
                    f"against the plain teacher's student, n = {comparison.n})"
                )
            out[name] = comparison.holds(level)
        return out

    def to_json(self) -> dict[str, Any]:
        """A plain-JSON view: config, per-seed values, mean/std tables and checks."""

        def key(*parts: float) -> str:
            return "/".join(f"{p:g}" for p in parts)

        summary = _summary

        return {
            "config": asdict(self.config),
            "teacher_accuracy": {key(a): summary(v) for a, v in self.teacher_accuracy.items()},
            "student_accuracy": {
                key(a, t): summary(v) for (a, t), v in self.student_accuracy.items()
            },
            "diffusion_index": {
                key(a, t): {
                    "similar": summary([s for s, _ in v]),
                    "dissimilar": summary([d for _, d in v]),
                    # one list per seed, by class index: the targets of "significance"
                    "per_class": {
                        "similar": [tab.similar.tolist() for tab in self.diffusion_tables[(a, t)]],
                        "dissimilar": [
                            tab.dissimilar.tolist() for tab in self.diffusion_tables[(a, t)]
                        ],
                    }
                    if (a, t) in self.diffusion_tables
                    else None,
                }
                for (a, t), v in self.diffusion.items()
            },
            "significance": {
                key(a, t): self.significance(a, t).to_dict() for (a, t) in self.diffusion_tables
            },
            "cluster_geometry": self._geometry_json(),
            "geometry_significance": {
                k: c.to_dict() for k, c in self.geometry_comparisons().items()
            },
            "target_entropy": {key(a, t): summary(v) for (a, t), v in self.entropy.items()},
            "max_entropy": math.log(self.config.num_classes),
            "checks": self.checks(),
            "seconds": self.seconds,
            "figure": self.figure,
            "figures": list(self.figures),
        }

    def _geometry_json(self) -> dict[str, Any]:
        """``"<alpha>/teacher"`` and ``"<alpha>/<T>"``: summaries over seeds, per-seed rows."""
        rows = {f"{a:g}/teacher": v for a, v in self.teacher_geometry.items()}
        rows.update({f"{a:g}/{t:g}": v for (a, t), v in self.student_geometry.items()})
        summary = _summary
        return {
            k: {
                "r2": summary([r.r2 for r in v]),
                "nc1": summary([r.nc1 for r in v]),
                "cdnv_similar": summary([r.mean_cdnv_similar for r in v]),
                "cdnv_dissimilar": summary([r.mean_cdnv_dissimilar for r in v]),
                "per_seed": [r.to_dict() for r in v],
            }
            for k, v in rows.items()
        }

    def tables(self) -> str:
        """The paper-style tables as plain text."""
        return report.tables(self)
