"""The demo's printed report: the paper-style tables and the significance lines."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsdiffusion.demo.result import DemoResult

__all__ = ["geometry_lines", "mean_std", "significance_lines", "tables"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def _cell(values: Sequence[float], digits: int = 2) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def tables(result: DemoResult) -> str:
    """The paper-style tables of ``result`` as plain text."""
    cfg = result.config
    temps = cfg.temperatures
    lines = [
        f"Table 2 - test accuracy (%), mean ± std over {len(cfg.seeds)} seeds "
        f"({cfg.num_classes} classes = {cfg.superclasses} superclasses x {cfg.subclasses})",
    ]
    header = f"{'teacher':<10} {'teacher acc':>15}" + "".join(
        f" {f'student T={t:g}':>15}" for t in temps
    )
    lines += [header, "-" * len(header)]
    for a in cfg.alphas:
        row = f"{f'α = {a:g}':<10} {_cell(result.teacher_accuracy[a]):>15}"
        row += "".join(f" {_cell(result.student_accuracy[(a, t)]):>15}" for t in temps)
        lines.append(row)

    t0 = temps[0]
    lines += [
        "",
        f"Table 3 - diffusion index (%) from T0 = {t0:g} to T1, mean over classes, "
        "then mean ± std over seeds",
        "(similar = superclass siblings, dissimilar = other superclasses; "
        "systematic diffusion: α_sim < 0 < α_dissim)",
    ]
    header = f"{'teacher':<10} {'T1':>5} {'α_sim':>16} {'α_dissim':>16}"
    lines += [header, "-" * len(header)]
    for a in cfg.alphas:
        for t in temps[1:]:
            vals = result.diffusion[(a, t)]
            lines.append(
                f"{f'α = {a:g}':<10} {t:>5g} {_cell([s for s, _ in vals]):>16} "
                f"{_cell([d for _, d in vals]):>16}"
            )

    lines += significance_lines(result)
    lines += geometry_lines(result)

    lines += [
        "",
        "Appendix H - teacher target entropy (nats) of softmax(z / T) on the training set, "
        f"max ln K = {math.log(cfg.num_classes):.3f}",
    ]
    header = f"{'teacher':<10}" + "".join(f" {f'T={t:g}':>15}" for t in temps)
    lines += [header, "-" * len(header)]
    for a in cfg.alphas:
        lines.append(
            f"{f'α = {a:g}':<10}"
            + "".join(f" {_cell(result.entropy[(a, t)], 3):>15}" for t in temps)
        )

    lines += ["", "Expected qualitative outcome (paper), as observed in this run:"]
    lines += [f"  [{'x' if ok else ' '}] {name}" for name, ok in result.checks().items()]
    return "\n".join(lines)


def significance_lines(result: DemoResult) -> list[str]:
    """The significance of Table 3, one row per (teacher, T1), under the table."""
    cfg = result.config
    cells = [
        (a, t, result.significance(a, t))
        for a in cfg.alphas
        for t in cfg.temperatures[1:]
        if (a, t) in result.diffusion_tables
    ]
    if not cells:
        return []
    sig0 = cells[0][2]
    pct = f"{sig0.confidence * 100:g}%"

    def mean_ci(mean: float, ci: tuple[float, float]) -> str:
        return f"{mean:+.2f} [{ci[0]:+.2f}, {ci[1]:+.2f}]"

    lines = [
        "",
        f"Significance of Table 3 - every class of every seed is one target "
        f"(n = {cfg.num_classes} x {len(cfg.seeds)} = {sig0.n});",
        f"one-sided Wilcoxon signed-rank p-values; {pct} BCa bootstrap intervals "
        f"of the mean ({sig0.n_resamples} resamples)",
    ]
    header = (
        f"{'teacher':<10} {'T1':>5}  {'α_sim [' + pct + ' CI]':<24} {'p(α_sim<0)':>10}  "
        f"{'α_dissim [' + pct + ' CI]':<24} {'p(α_dissim>0)':>13}  {'p(α_sim<α_dissim)':>17}"
    )
    lines += [header, "-" * len(header)]
    for a, t, sig in cells:
        lines.append(
            f"{f'α = {a:g}':<10} {t:>5g}  {mean_ci(sig.mean_similar, sig.ci_similar):<24} "
            f"{sig.p_similar_negative:>10.2g}  "
            f"{mean_ci(sig.mean_dissimilar, sig.ci_dissimilar):<24} "
            f"{sig.p_dissimilar_positive:>13.2g}  {sig.p_similar_below_dissimilar:>17.2g}"
        )
    return lines


def geometry_lines(result: DemoResult) -> list[str]:
    """The cluster-geometry table beside Table 3, and its tests (observations 1 and 2)."""
    cfg = result.config
    if not result.teacher_geometry:
        return []
    lines = [
        "",
        "Cluster geometry of the penultimate features (test split), mean ± std over seeds",
        "(R²: class separation, higher = better separated; NC1: lower = tighter clusters;",
        " CDNV: within-class variance / squared distance of two class means, averaged over "
        "each class's",
        " similar / dissimilar classes, then over classes; lower = farther apart)",
    ]
    header = (
        f"{'teacher':<10} {'features':<12} {'R²':>13} {'NC1':>13} {'CDNV sim':>13} "
        f"{'CDNV dissim':>13}"
    )
    lines += [header, "-" * len(header)]
    for a in cfg.alphas:
        rows = [("teacher", result.teacher_geometry.get(a, []))]
        rows += [
            (f"student T={t:g}", result.student_geometry.get((a, t), [])) for t in cfg.temperatures
        ]
        for name, seeds in rows:
            if not seeds:
                continue
            lines.append(
                f"{f'α = {a:g}':<10} {name:<12} {_cell([r.r2 for r in seeds]):>13} "
                f"{_cell([r.nc1 for r in seeds]):>13} "
                f"{_cell([r.mean_cdnv_similar for r in seeds], 3):>13} "
                f"{_cell([r.mean_cdnv_dissimilar for r in seeds], 3):>13}"
            )
    comparisons = result.geometry_comparisons()
    if comparisons:
        n = next(iter(comparisons.values())).n
        lines += [
            "",
            f"LS against plain, every class of every seed one pair (n = {cfg.num_classes} x "
            f"{len(cfg.seeds)} = {n}); one-sided Wilcoxon signed-rank p-values;",
            "a class's NC1 term: tr(Σ_c Σ_B†) / K, Σ_c its covariance (NC1 is their mean)",
        ]
        header = (
            f"{'features':<12} {'p(NC1 term lower)':>17} {'p(CDNV sim lower)':>17} "
            f"{'seeds R² higher':>15} {'seeds NC1 lower':>15}"
        )
        lines += [header, "-" * len(header)]
        for key, c in comparisons.items():
            lines.append(
                f"{key:<12} {c.p_tighter:>17.2g} {c.p_similar_apart:>17.2g} "
                f"{f'{c.seeds_r2_higher}/{c.seeds}':>15} {f'{c.seeds_nc1_lower}/{c.seeds}':>15}"
            )
    return lines
