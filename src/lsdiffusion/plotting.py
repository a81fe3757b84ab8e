"""Figures of the paper: projection scatters (Figure 1 style) and diffusion-index charts.

Needs the optional ``plot`` extra (``pip install "lsdiffusion[plot]"``);
matplotlib is imported only when a function here is called. Figures are drawn
on a bare :class:`matplotlib.figure.Figure` (no ``pyplot``, no global backend
change), so they work headless, and are written as PNG files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from lsdiffusion.diffusion import DiffusionIndex, DiffusionIndexTable
from lsdiffusion.projection import Projection

__all__ = ["plot_diffusion_index", "plot_projections"]

ClassNames: TypeAlias = Mapping[int, str] | Sequence[str] | None
PanelKey: TypeAlias = str | tuple[str, str]
DiffusionValue: TypeAlias = DiffusionIndex | DiffusionIndexTable | tuple[float, float]

_CLASS_COLOURS = ("#1f77b4", "#d62728", "#2ca02c")  # blue, red, green
_OTHER_COLOUR = "#9e9e9e"


def _figure_class() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - exercised by monkeypatching
        raise ImportError('plotting needs matplotlib: pip install "lsdiffusion[plot]"') from exc
    return Figure


def _numpy(name: str, value: object) -> np.ndarray[Any, Any]:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, Sequence):
        return np.asarray(value)
    raise TypeError(f"{name} must be a tensor, an array or a sequence, got {type(value).__name__}")


def _name(names: ClassNames, k: int) -> str:
    if names is None:
        return f"class {k}"
    if isinstance(names, Mapping):
        return str(names.get(k, f"class {k}"))
    return str(names[k]) if 0 <= k < len(names) else f"class {k}"


def _grid(keys: Sequence[PanelKey], ncols: int | None) -> tuple[list[str], list[str], bool]:
    """Row and column labels; tuple keys make a (teacher × temperature) grid."""
    if all(isinstance(k, tuple) for k in keys):
        rows: list[str] = []
        cols: list[str] = []
        for key in keys:
            assert isinstance(key, tuple)
            if len(key) != 2:
                raise ValueError(f"panel keys must be (row, column) pairs, got {key!r}")
            r, c = str(key[0]), str(key[1])
            if r not in rows:
                rows.append(r)
            if c not in cols:
                cols.append(c)
        return rows, cols, True
    if any(isinstance(k, tuple) for k in keys):
        raise ValueError("panel keys must be all strings or all (row, column) pairs")
    n = len(keys)
    per_row = min(n, 4) if ncols is None else max(1, int(ncols))
    nrows = -(-n // per_row)
    return [str(i) for i in range(nrows)], [str(j) for j in range(per_row)], False


def plot_projections(
    panels: Mapping[PanelKey, tuple[Projection, Any]],
    path: str | Path,
    *,
    class_names: ClassNames = None,
    ncols: int | None = None,
    title: str | None = None,
    point_size: float = 6.0,
    alpha: float = 0.5,
    panel_size: float = 3.2,
    dpi: int = 150,
) -> Path:
    """Draw Müller projections, one panel per (teacher, temperature), and save a PNG.

    In each panel the features are coloured by class (the three template classes
    in blue, red and green, any other label in grey) and each template is marked
    with a star and its class name.

    Args:
        panels: ``{key: (projection, labels)}`` with ``projection`` from
            :func:`~lsdiffusion.projection.muller_projection` and ``labels`` the (N,)
            global class of each projected feature. Keys ``(teacher, temperature)``
            (strings) lay the panels out as a grid with one row per teacher; plain
            string keys are panel titles, wrapped ``ncols`` per row.
        path: where to write the PNG (parent directories are created).
        class_names: names by global class index (``{266: "miniature poodle"}`` or a list).
        ncols: panels per row for string keys (default: up to 4).
        title: a figure title.
        point_size: marker area of the feature points.
        alpha: opacity of the feature points.
        panel_size: size of one panel in inches.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    figure_cls = _figure_class()
    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("panels must be a non-empty mapping {key: (projection, labels)}")
    keys = list(panels.keys())
    rows, cols, is_grid = _grid(keys, ncols)
    fig = figure_cls(
        figsize=(panel_size * len(cols), panel_size * len(rows) + (0.4 if title else 0.0)),
        layout="constrained",
    )
    axes = np.asarray(fig.subplots(len(rows), len(cols), squeeze=False))
    used: set[tuple[int, int]] = set()
    legend_handles: dict[str, Any] = {}
    for n, key in enumerate(keys):
        value = panels[key]
        if not (isinstance(value, tuple) and len(value) == 2):
            raise TypeError(f"panels[{key!r}] must be a (projection, labels) pair")
        proj, labels_like = value
        if not isinstance(proj, Projection):
            raise TypeError(f"panels[{key!r}][0] must be a Projection, got {type(proj).__name__}")
        points = _numpy("points", proj.points)
        labels = _numpy(f"panels[{key!r}] labels", labels_like).reshape(-1)
        if labels.shape[0] != points.shape[0]:
            raise ValueError(
                f"panels[{key!r}]: {points.shape[0]} projected points but {labels.shape[0]} labels"
            )
        if is_grid:
            assert isinstance(key, tuple)
            i, j = rows.index(str(key[0])), cols.index(str(key[1]))
        else:
            i, j = divmod(n, len(cols))
        used.add((i, j))
        ax = axes[i, j]
        classes = list(proj.classes) if proj.classes is not None else []
        if not classes:
            uniq, counts = np.unique(labels, return_counts=True)
            classes = [int(u) for u in uniq[np.argsort(-counts)][:3]]
        other = ~np.isin(labels, classes)
        if other.any():
            h = ax.scatter(*points[other].T, s=point_size, c=_OTHER_COLOUR, alpha=alpha, lw=0)
            legend_handles.setdefault("other", h)
        for k, cls in enumerate(classes):
            sel = labels == cls
            colour = _CLASS_COLOURS[k % 3]
            if sel.any():
                h = ax.scatter(*points[sel].T, s=point_size, c=colour, alpha=alpha, lw=0)
                legend_handles.setdefault(_name(class_names, cls), h)
        templates = _numpy("templates", proj.templates)
        centre = templates.mean(axis=0)
        for k, (tx, ty) in enumerate(templates):
            ax.scatter(
                [tx],
                [ty],
                s=160,
                marker="*",
                c=_CLASS_COLOURS[k % 3],
                edgecolors="k",
                linewidths=0.8,
                zorder=5,
            )
            if k < len(classes):
                # label outwards, away from the triangle's centre, so labels do not collide
                dx, dy = tx - centre[0], ty - centre[1]
                norm = float(np.hypot(dx, dy)) or 1.0
                dx, dy = dx / norm, dy / norm
                ax.annotate(
                    _name(class_names, classes[k]),
                    (tx, ty),
                    xytext=(9 * dx, 9 * dy),
                    textcoords="offset points",
                    fontsize=7,
                    ha="left" if dx > 0.3 else "right" if dx < -0.3 else "center",
                    va="bottom" if dy > 0.3 else "top" if dy < -0.3 else "center",
                    zorder=6,
                )
        ax.margins(0.15)
        ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
        if is_grid:
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(rows[i], fontsize=9)
        else:
            ax.set_title(str(key), fontsize=9)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if (i, j) not in used:
                axes[i, j].set_axis_off()
    if legend_handles:
        options: dict[str, Any] = {
            "ncols": min(4, len(legend_handles)),
            "fontsize": 8,
            "markerscale": 2.0,
            "frameon": False,
        }
        handles, names = list(legend_handles.values()), list(legend_handles.keys())
        try:  # matplotlib >= 3.7 reserves room for an "outside" legend
            fig.legend(handles, names, loc="outside lower center", **options)
        except ValueError:  # pragma: no cover - older matplotlib
            fig.legend(handles, names, loc="lower center", **options)
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def _save(fig: Any, path: str | Path, dpi: int) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format="png")
    return out


def _summary(value: object, where: str) -> tuple[float, float, float, float]:
    """(similar, dissimilar, similar spread, dissimilar spread) of one result."""
    if isinstance(value, DiffusionIndexTable):
        sd_s = float(np.std(value.similar)) if len(value) > 1 else 0.0
        sd_d = float(np.std(value.dissimilar)) if len(value) > 1 else 0.0
        return value.mean_similar, value.mean_dissimilar, sd_s, sd_d
    if isinstance(value, DiffusionIndex):
        return value.similar, value.dissimilar, 0.0, 0.0
    if isinstance(value, tuple) and len(value) == 2:
        return float(value[0]), float(value[1]), 0.0, 0.0
    raise TypeError(
        f"{where} must be a DiffusionIndex, a DiffusionIndexTable or a (similar, dissimilar) "
        f"pair, got {type(value).__name__}"
    )


def plot_diffusion_index(
    results: Mapping[float, DiffusionValue] | Mapping[str, Mapping[float, DiffusionValue]],
    path: str | Path,
    *,
    title: str | None = None,
    t0: float | None = 1.0,
    figsize: tuple[float, float] = (4.5, 3.2),
    dpi: int = 150,
) -> Path:
    """Chart the diffusion index against the distillation temperature and save a PNG.

    For every temperature :math:`T_1` the similar-set index (solid) and the
    dissimilar-set index (dashed) are plotted; a table's mean is drawn with its
    standard deviation over targets as error bars. Systematic diffusion shows as
    the solid line below zero and the dashed one above.

    Args:
        results: ``{T1: result}`` for one series, or ``{series: {T1: result}}`` for
            several (e.g. one per teacher); a result is a
            :class:`~lsdiffusion.diffusion.DiffusionIndex`, a
            :class:`~lsdiffusion.diffusion.DiffusionIndexTable` or a
            ``(similar, dissimilar)`` pair in percent.
        path: where to write the PNG.
        title: an axes title.
        t0: the reference temperature, named in the axis label (``None`` to omit).
        figsize: figure size in inches.
        dpi: resolution of the PNG.

    Returns:
        The path written.
    """
    figure_cls = _figure_class()
    if not isinstance(results, Mapping) or not results:
        raise ValueError("results must be a non-empty mapping {T1: result}")
    first = next(iter(results.values()))
    series: dict[str, Mapping[float, Any]]
    if isinstance(first, Mapping):
        series = {str(k): v for k, v in results.items()}  # type: ignore[misc]
    else:
        series = {"": results}  # type: ignore[dict-item]
    temps = sorted({float(t) for s in series.values() for t in s})
    xpos = {t: i for i, t in enumerate(temps)}
    fig = figure_cls(figsize=figsize, layout="constrained")
    ax = fig.subplots()
    ax.axhline(0.0, color="k", lw=0.8)
    for n, (name, mapping) in enumerate(series.items()):
        if not isinstance(mapping, Mapping):
            raise TypeError(f"results[{name!r}] must be a mapping {{T1: result}}")
        ts = sorted(float(t) for t in mapping)
        vals = [_summary(mapping[t], f"results[{t!r}]") for t in ts]
        x = np.asarray([xpos[t] for t in ts], dtype=float) + 0.06 * (n - (len(series) - 1) / 2)
        colour = f"C{n}"
        prefix = f"{name}: " if name else ""
        ax.errorbar(
            x,
            [v[0] for v in vals],
            yerr=[v[2] for v in vals],
            color=colour,
            marker="o",
            ls="-",
            capsize=3,
            label=f"{prefix}similar",
        )
        ax.errorbar(
            x,
            [v[1] for v in vals],
            yerr=[v[3] for v in vals],
            color=colour,
            marker="s",
            ls="--",
            capsize=3,
            label=f"{prefix}dissimilar",
        )
    ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
    ax.set_xlabel("distillation temperature $T_1$" + (f" (vs $T_0$ = {t0:g})" if t0 else ""))
    ax.set_ylabel("diffusion index α (%)")
    ax.legend(fontsize=7, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)
