"""The demo's printed report: the paper-style tables and the significance lines."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lsdiffusion.demo.result import DemoResult

__all__ = ["mean_std", "significance_lines", "tables"]


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
