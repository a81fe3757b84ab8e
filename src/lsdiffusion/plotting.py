"""Figures of the paper: projection scatters (Figure 1 style) and diffusion-index charts.

Needs the optional ``plot`` extra (``pip install "lsdiffusion[plot]"``);
matplotlib is imported only when a function here is called. Figures are drawn
on a bare `matplotlib.figure.Figure` (no ``pyplot``, no global backend
change), so they work headless, and are written in the format the file suffix
names (`.png`, `.pdf`, `.svg`, ...; PNG when there is no suffix).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias

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


_AXIS_LABELS = {
    "plane": ("plane axis 1 (along $w_1 - w_0$)", "plane axis 2"),
    "pca": ("PC 1", "PC 2"),
}


def _panel_layers(
    key: PanelKey, value: object, show_templates: bool
) -> tuple[Projection, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Validate one panel; return its projection, labels and every point it draws."""
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
    drawn = [points]
    if show_templates:
        drawn.append(_numpy("templates", proj.templates))
    if proj.centroids is not None:
        drawn.append(_numpy("centroids", proj.centroids))
    return proj, labels, np.concatenate(drawn)


def plot_projections(
    panels: Mapping[PanelKey, tuple[Projection, Any]],
    path: str | Path,
    *,
    class_names: ClassNames = None,
    ncols: int | None = None,
    title: str | None = None,
    share_scale: Literal["row", "all", "none"] = "row",
    show_templates: bool = True,
    point_size: float = 6.0,
    alpha: float = 0.5,
    panel_size: float = 3.2,
    dpi: int = 150,
) -> Path:
    """Draw projections of features, one panel per (teacher, temperature), and save it.

    In each panel the features are coloured by class (the three template classes
    in blue, red and green, any other label in grey). Class centroids, when the
    projection has them (``muller_projection(..., centroids=...)``), are stars
    in their class colour, as in the paper's Figure 1; the templates are
    diamonds. Every marker is named in the legend below the panels, and the
    axes are labelled with the projection's axes (``"plane"``: the plane's
    orthonormal axes; ``"pca"``: the principal components), in feature units.

    With ``share_scale="row"`` (the default) the panels of one row of a
    ``(teacher, temperature)`` grid, one student per temperature, span the same
    range of feature units, each centred on its own points, so spreads can be
    compared across temperatures: a cluster twice as wide *is* twice as wide.
    ``"all"`` shares one scale over every panel (different teachers' students
    may differ in feature scale overall, which the diffusion index ignores);
    ``"none"`` fits each panel to its data.

    Args:
        panels: ``{key: (projection, labels)}`` with ``projection`` from
            [`muller_projection`][lsdiffusion.muller_projection] and ``labels`` the (N,)
            global class of each projected feature. Keys ``(teacher, temperature)``
            (strings) lay the panels out as a grid with one row per teacher; plain
            string keys are panel titles, wrapped ``ncols`` per row.
        path: where to write the figure (parent directories are created); the
            suffix picks the format (`.png`, `.pdf`, `.svg`, ...).
        class_names: names by global class index (``{266: "miniature poodle"}`` or a list).
        ncols: panels per row for string keys (default: up to 4).
        title: a figure title.
        share_scale: ``"row"`` (a scale per grid row; for string keys, as ``"all"``),
            ``"all"`` or ``"none"``.
        show_templates: draw the templates (the paper's figures show centroids only).
        point_size: marker area of the feature points.
        alpha: opacity of the feature points.
        panel_size: size of one panel in inches.
        dpi: resolution of raster formats.

    Returns:
        The path written.
    """
    # Long on purpose: one figure's layout, panel by panel; matplotlib calls read best in order.
    figure_cls = _figure_class()
    from matplotlib.lines import Line2D

    if not isinstance(panels, Mapping) or not panels:
        raise ValueError("panels must be a non-empty mapping {key: (projection, labels)}")
    if share_scale not in ("row", "all", "none"):
        raise ValueError(f"share_scale must be one of ['row', 'all', 'none'], got {share_scale!r}")
    keys = list(panels.keys())
    rows, cols, is_grid = _grid(keys, ncols)
    layers = {key: _panel_layers(key, panels[key], show_templates) for key in keys}
    fig = figure_cls(
        figsize=(panel_size * len(cols) + 0.3, panel_size * len(rows) + (0.9 if title else 0.6)),
        layout="constrained",
    )
    axes = np.asarray(fig.subplots(len(rows), len(cols), squeeze=False))
    used: set[tuple[int, int]] = set()
    legend_handles: dict[str, Any] = {}
    has_centroids = has_templates = False

    def dot(colour: str) -> Any:
        return Line2D([], [], ls="none", marker="o", markersize=5, color=colour, alpha=0.8, lw=0)

    positions: dict[PanelKey, tuple[int, int]] = {}
    for n, key in enumerate(keys):
        if is_grid:
            assert isinstance(key, tuple)
            positions[key] = (rows.index(str(key[0])), cols.index(str(key[1])))
        else:
            positions[key] = divmod(n, len(cols))
    last_row = dict.fromkeys(range(len(cols)), 0)  # the lowest panel of each column
    for i, j in positions.values():
        last_row[j] = max(last_row[j], i)
    half_span: dict[int, float] = {}  # by scale group: the grid row, or 0 for all
    for key, (_, _, drawn) in layers.items():
        group = positions[key][0] if share_scale == "row" and is_grid else 0
        finite = drawn[np.isfinite(drawn).all(axis=1)]
        span = float(np.ptp(finite, axis=0).max()) / 2 if len(finite) else 0.0
        half_span[group] = max(half_span.get(group, 0.0), span)
    for key in keys:
        proj, labels, drawn = layers[key]
        points = _numpy("points", proj.points)
        i, j = positions[key]
        used.add((i, j))
        ax = axes[i, j]
        classes = list(proj.classes) if proj.classes is not None else []
        if not classes:
            uniq, counts = np.unique(labels, return_counts=True)
            classes = [int(u) for u in uniq[np.argsort(-counts)][:3]]
        other = ~np.isin(labels, classes)
        if other.any():
            ax.scatter(*points[other].T, s=point_size, c=_OTHER_COLOUR, alpha=alpha, lw=0)
            legend_handles.setdefault("other classes", dot(_OTHER_COLOUR))
        for k, cls in enumerate(classes):
            sel = labels == cls
            if sel.any():
                colour = _CLASS_COLOURS[k % 3]
                ax.scatter(*points[sel].T, s=point_size, c=colour, alpha=alpha, lw=0)
                legend_handles.setdefault(_name(class_names, cls), dot(colour))
        colours = [_CLASS_COLOURS[k % 3] for k in range(3)]
        if show_templates:
            has_templates = True
            ax.scatter(
                *_numpy("templates", proj.templates).T,
                s=42,
                marker="D",
                c=colours,
                edgecolors="k",
                linewidths=0.8,
                zorder=5,
            )
        if proj.centroids is not None:
            has_centroids = True
            ax.scatter(
                *_numpy("centroids", proj.centroids).T,
                s=190,
                marker="*",
                c=colours,
                edgecolors="k",
                linewidths=0.8,
                zorder=6,
            )
        if share_scale != "none":
            finite = drawn[np.isfinite(drawn).all(axis=1)]
            centre = (finite.min(axis=0) + finite.max(axis=0)) / 2 if len(finite) else (0, 0)
            half = (half_span[i if share_scale == "row" and is_grid else 0] or 1.0) * 1.08
            ax.set_xlim(centre[0] - half, centre[0] + half)
            ax.set_ylim(centre[1] - half, centre[1] + half)
            ax.set_aspect("equal", adjustable="box")
        else:
            ax.margins(0.08)
            ax.set_aspect("equal", adjustable="datalim")
        ax.tick_params(labelsize=6)
        xlabel, ylabel = _AXIS_LABELS[proj.method]
        if i == last_row[j]:
            ax.set_xlabel(xlabel, fontsize=7)
        if is_grid:
            if i == 0:
                ax.set_title(cols[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(f"{rows[i]}\n{ylabel}", fontsize=8)
        else:
            ax.set_title(str(key), fontsize=9)
            if j == 0:
                ax.set_ylabel(ylabel, fontsize=7)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if (i, j) not in used:
                axes[i, j].set_axis_off()
    marker_style: dict[str, Any] = {
        "ls": "none",
        "markerfacecolor": "white",
        "markeredgecolor": "k",
    }
    if has_centroids:
        legend_handles["class centroid (class colour)"] = Line2D(
            [], [], marker="*", markersize=11, **marker_style
        )
    if has_templates:
        legend_handles["template: final-layer weights (class colour)"] = Line2D(
            [], [], marker="D", markersize=5, **marker_style
        )
    if legend_handles:
        options: dict[str, Any] = {
            "ncols": min(3, len(legend_handles)),
            "fontsize": 8,
            "markerscale": 1.0,
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
    """Save in the format named by the suffix (`.pdf`, `.svg`, ...), PNG when there is none."""
    out = Path(path)
    fmt = out.suffix[1:].lower() or "png"
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise ValueError(
            f"path must end in a format matplotlib writes ({', '.join(sorted(supported))}), "
            f"got {str(out)!r}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, format=fmt)
    return out


def _temperature(key: object, where: str) -> float:
    """A temperature key of `results`: a real number, not a label such as `"T=4"`."""
    if isinstance(key, bool) or not isinstance(key, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{where} keys must be temperatures (numbers such as 4.0), got {key!r}; for "
            "several labelled series pass {series_name: {T1: result}}"
        )
    return float(key)


def _is_pair(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in value)
    )


def _summary(value: object, where: str) -> tuple[float, float, float, float]:
    """(similar, dissimilar, similar spread, dissimilar spread) of one result."""
    if isinstance(value, DiffusionIndexTable):
        sd_s = float(np.std(value.similar, ddof=1)) if len(value) > 1 else 0.0
        sd_d = float(np.std(value.dissimilar, ddof=1)) if len(value) > 1 else 0.0
        return value.mean_similar, value.mean_dissimilar, sd_s, sd_d
    if isinstance(value, DiffusionIndex):
        return value.similar, value.dissimilar, 0.0, 0.0
    if _is_pair(value):
        assert isinstance(value, tuple)
        return float(value[0]), float(value[1]), 0.0, 0.0
    if isinstance(value, (list, tuple)) and value:  # one result per seed: their spread
        means = np.asarray([_summary(v, f"{where}[{k}]")[:2] for k, v in enumerate(value)])
        sd = np.std(means, axis=0, ddof=1) if len(means) > 1 else np.zeros(2)
        return float(means[:, 0].mean()), float(means[:, 1].mean()), float(sd[0]), float(sd[1])
    raise TypeError(
        f"{where} must be a DiffusionIndex, a DiffusionIndexTable, a (similar, dissimilar) "
        f"pair or a non-empty list of them (one per seed), got {type(value).__name__}"
    )


def plot_diffusion_index(
    results: Mapping[float, DiffusionValue | Sequence[DiffusionValue]]
    | Mapping[str, Mapping[float, DiffusionValue | Sequence[DiffusionValue]]],
    path: str | Path,
    *,
    title: str | None = None,
    t0: float | None = 1.0,
    figsize: tuple[float, float] = (7.5, 3.3),
    dpi: int = 150,
) -> Path:
    r"""Chart the diffusion index against the distillation temperature and save it.

    Two panels, each with its own y scale and a line at zero: the similar-set
    index $\alpha(\pi, S_{sim})$ on the left, the dissimilar-set index
    $\alpha(\pi, S_{dissim})$ on the right (usually a few percent,
    which one shared axis would flatten), one line per series. Error bars are
    one standard deviation (``ddof=1``): across the results when a list is
    given for a temperature (e.g. one per seed: the seed spread), across
    targets for a single [`DiffusionIndexTable`][lsdiffusion.DiffusionIndexTable].
    Series without any spread are drawn without error bars. Systematic
    diffusion shows as the left line below zero and the right one above.

    Args:
        results: ``{T1: result}`` for one series, or ``{series: {T1: result}}`` for
            several (e.g. one per teacher); a result is a
            [`DiffusionIndex`][lsdiffusion.DiffusionIndex], a
            [`DiffusionIndexTable`][lsdiffusion.DiffusionIndexTable], a
            ``(similar, dissimilar)`` pair in percent, or a list of these (one
            per seed), drawn as the mean of their means.
        path: where to write the figure; the suffix picks the format
            (`.png`, `.pdf`, `.svg`, ...).
        title: a figure title.
        t0: the reference temperature, named in the axis label (``None`` to omit).
        figsize: figure size in inches.
        dpi: resolution of raster formats.

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
    for name, mapping in series.items():
        if not isinstance(mapping, Mapping):
            raise TypeError(f"results[{name!r}] must be a mapping {{T1: result}}")
    where = {k: "results" if not k else f"results[{k!r}]" for k in series}
    temps = sorted({_temperature(t, where[k]) for k, s in series.items() for t in s})
    xpos = {t: i for i, t in enumerate(temps)}
    fig = figure_cls(figsize=figsize, layout="constrained")
    axes = fig.subplots(1, 2, sharex=True)
    panel_titles = (
        "similar classes: $\\alpha(\\pi, S_{sim})$",
        "dissimilar classes: $\\alpha(\\pi, S_{dissim})$",
    )
    for ax, panel_title in zip(axes, panel_titles, strict=True):
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_title(panel_title, fontsize=9)
    handles: list[Any] = []
    for n, (name, mapping) in enumerate(series.items()):
        keys = sorted(mapping, key=lambda t: _temperature(t, where[name]))
        ts = [float(t) for t in keys]
        vals = [_summary(mapping[t], f"results[{t!r}]") for t in keys]
        x = np.asarray([xpos[t] for t in ts], dtype=float) + 0.08 * (n - (len(series) - 1) / 2)
        style = {"color": f"C{n}", "marker": "os"[n % 2], "ls": "-", "label": name or None}
        for ax, mean_at, sd_at in ((axes[0], 0, 2), (axes[1], 1, 3)):
            y = [v[mean_at] for v in vals]
            err = [v[sd_at] for v in vals]
            if any(e > 0 for e in err):
                h = ax.errorbar(x, y, yerr=err, capsize=3, elinewidth=1.0, **style)
            else:
                (h,) = ax.plot(x, y, **style)
        if name:
            handles.append(h)
    xlabel = "distillation temperature $T_1$" + (f" (vs $T_0$ = {t0:g})" if t0 else "")
    for ax in axes:
        ax.set_xticks(range(len(temps)), [f"{t:g}" for t in temps])
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("diffusion index α (%)", fontsize=8)
    if handles:
        try:  # matplotlib >= 3.7 reserves room for an "outside" legend
            fig.legend(
                handles=handles,
                loc="outside lower center",
                ncols=min(4, len(handles)),
                fontsize=8,
                frameon=False,
            )
        except ValueError:  # pragma: no cover - older matplotlib
            fig.legend(handles=handles, loc="lower center", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi)
