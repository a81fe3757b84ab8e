"""The table of diffusion indices: one row per target plus the mean, and its exports.

Private to [`lsdiffusion.diffusion`][lsdiffusion.diffusion].
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from lsdiffusion.diffusion._significance import (
    DiffusionSignificance,
    json_float,
    significance_of,
)

ClassNames: TypeAlias = Mapping[int, str] | Sequence[str] | None
Reference: TypeAlias = Literal["union", "all"]


_LATEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(ch) for ch in _LATEX))


def _latex_escape(text: str) -> str:
    """Every LaTeX special character of `text` as text, in one pass."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group(0)], " ".join(text.splitlines()))


def _markdown_escape(text: str) -> str:
    """A table cell: `|` escaped, line breaks as spaces."""
    return " ".join(text.splitlines()).replace("|", "\\|")


def _column(name: str, values: object) -> npt.NDArray[Any]:
    """A 1-D numpy array of `values` (a sequence, an array or a CPU tensor)."""
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


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

    def __post_init__(self) -> None:
        """Check and convert the columns (lists, tuples and CPU tensors become arrays)."""
        targets = _column("targets", self.targets)
        if targets.dtype == np.bool_ or not np.issubdtype(targets.dtype, np.integer):
            raise TypeError(f"targets must hold integer class indices, got dtype {targets.dtype}")
        n = int(targets.shape[0])
        if n == 0:
            raise ValueError("targets is empty; a table needs at least one row")
        columns = {}
        for name in ("similar", "dissimilar"):
            col = _column(name, getattr(self, name))
            if col.dtype == np.bool_ or not (
                np.issubdtype(col.dtype, np.integer) or np.issubdtype(col.dtype, np.floating)
            ):
                raise TypeError(f"{name} must hold real numbers (percent), got dtype {col.dtype}")
            if col.shape[0] != n:
                raise ValueError(
                    f"{name} must have one value per target: {n} targets, got {col.shape[0]}"
                )
            columns[name] = col.astype(np.float64)
        if self.reference not in ("union", "all"):
            raise ValueError(f"reference must be one of ['union', 'all'], got {self.reference!r}")
        object.__setattr__(self, "targets", targets.astype(np.int64))
        object.__setattr__(self, "similar", columns["similar"])
        object.__setattr__(self, "dissimilar", columns["dissimilar"])

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
        two rows); `significance` treats every row as one observation.

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
                [`DiffusionSignificance.systematic_at`][lsdiffusion.diffusion.DiffusionSignificance.systematic_at].
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
            >>> sig.systematic
            True
        """
        return significance_of(self.similar, self.dissimilar, confidence, n_resamples, seed)

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

    def to_dict(self, names: ClassNames = None) -> dict[str, object]:
        """Plain JSON values: one dict per row, the means; NaN becomes `None`.

        `json.dumps` of the result is standard JSON (no `NaN` tokens).

        Examples:
            >>> import json, numpy as np
            >>> tab = DiffusionIndexTable(np.array([3]), np.array([-2.0]), np.array([np.nan]))
            >>> json.dumps(tab.to_dict(names={3: "cat"})["rows"])
            '[{"target": 3, "name": "cat", "similar": -2.0, "dissimilar": null}]'
        """
        return {
            "reference": self.reference,
            "n": len(self),
            "rows": [
                {
                    "target": t,
                    "name": _class_name(names, t),
                    "similar": json_float(s),
                    "dissimilar": json_float(d),
                }
                for t, s, d in self
            ],
            "mean_similar": json_float(self.mean_similar),
            "mean_dissimilar": json_float(self.mean_dissimilar),
            "fraction_systematic": json_float(self.fraction_systematic),
        }

    def to_markdown(self, names: ClassNames = None, decimals: int = 2) -> str:
        """A GitHub-flavoured Markdown table (mean row in bold)."""
        cells = self._cells(names, decimals)
        lines = ["| target | α_sim (%) | α_dissim (%) |", "|---|---:|---:|"]
        lines += [f"| {_markdown_escape(a)} | {b} | {c} |" for a, b, c in cells[:-1]]
        a, b, c = cells[-1]
        lines.append(f"| **{a}** | **{b}** | **{c}** |")
        return "\n".join(lines)

    def to_latex(self, names: ClassNames = None, decimals: int = 2) -> str:
        """A LaTeX ``tabular`` (booktabs rules), mean row last."""
        cells = self._cells(names, decimals)
        lines = [
            "\\begin{tabular}{lrr}",
            "\\toprule",
            "Target & $\\alpha_{\\mathrm{sim}}$ (\\%) & $\\alpha_{\\mathrm{dissim}}$ (\\%) \\\\",
            "\\midrule",
        ]
        lines += [f"{_latex_escape(a)} & ${b}$ & ${c}$ \\\\" for a, b, c in cells[:-1]]
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
