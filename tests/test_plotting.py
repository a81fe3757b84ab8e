"""Plots write non-empty PNG files (Agg, no display needed)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("matplotlib")

from lsdiffusion.diffusion import DiffusionIndexTable, diffusion_index
from lsdiffusion.plotting import plot_diffusion_index, plot_projections
from lsdiffusion.projection import muller_projection, templates_from_linear

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def _projection(seed: int):
    torch.manual_seed(seed)
    fc = nn.Linear(6, 10)
    classes = [2, 5, 9]
    labels = torch.tensor(classes).repeat_interleave(20)
    feats = fc.weight.detach()[labels] + 0.3 * torch.randn(60, 6)
    feats = torch.cat([feats, torch.randn(5, 6)])
    labels = torch.cat([labels, torch.zeros(5, dtype=torch.long)])  # 5 "other" points
    return muller_projection(feats, templates_from_linear(fc, classes)), labels


def test_projection_grid_png(tmp_path):
    panels = {
        (teacher, f"T = {t}"): _projection(i * 3 + j)
        for i, teacher in enumerate(["no LS", "LS α=0.1"])
        for j, t in enumerate([1, 3, 64])
    }
    out = plot_projections(
        panels,
        tmp_path / "figs" / "projection.png",
        class_names={2: "miniature poodle", 5: "standard poodle", 9: "submarine"},
        title="Penultimate layer",
    )
    assert out == tmp_path / "figs" / "projection.png"
    assert _is_png(out)


def test_projection_string_keys_and_numpy_labels(tmp_path):
    proj, labels = _projection(0)
    panels = {f"panel {k}": (proj, labels.numpy()) for k in range(3)}
    out = plot_projections(panels, tmp_path / "p.png", ncols=2, class_names=["a"] * 10)
    assert _is_png(out)
    # templates without class indices: the three most frequent labels are coloured
    x = torch.randn(30, 4)
    plain = muller_projection(x, torch.randn(3, 4))
    out = plot_projections({"plain": (plain, np.repeat([0, 1, 2], 10))}, tmp_path / "q.png")
    assert _is_png(out)


def test_projection_errors(tmp_path):
    proj, labels = _projection(0)
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_projections({}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="65 projected points but 3 labels"):
        plot_projections({"a": (proj, [1, 2, 3])}, tmp_path / "x.png")
    with pytest.raises(TypeError, match="must be a Projection"):
        plot_projections({"a": (proj.points, labels)}, tmp_path / "x.png")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="all strings or all"):
        plot_projections({"a": (proj, labels), ("b", "c"): (proj, labels)}, tmp_path / "x.png")


def test_diffusion_chart_png(tmp_path):
    rng = np.random.default_rng(0)

    def table(shift: float) -> DiffusionIndexTable:
        return DiffusionIndexTable(
            targets=np.arange(5),
            similar=rng.normal(-shift, 1.0, size=5),
            dissimilar=rng.normal(shift / 3, 0.5, size=5),
        )

    out = plot_diffusion_index(
        {2.0: table(1.0), 3.0: table(2.0), 64.0: table(5.0)},
        tmp_path / "alpha.png",
        title="ImageNet, ResNet-50 teacher with LS",
    )
    assert _is_png(out)
    t0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    t1 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 4.0]])
    single = diffusion_index(t0, t1, 0, [1], [2])
    out = plot_diffusion_index(
        {"LS teacher": {3.0: single, 64.0: (-8.0, 3.0)}, "plain teacher": {3.0: (-1.0, 0.5)}},
        tmp_path / "series.png",
        t0=None,
    )
    assert _is_png(out)
    with pytest.raises(TypeError, match="DiffusionIndex"):
        plot_diffusion_index({2.0: "bad"}, tmp_path / "bad.png")  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="non-empty mapping"):
        plot_diffusion_index({}, tmp_path / "bad.png")


def test_missing_matplotlib_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    proj, labels = _projection(0)
    with pytest.raises(ImportError, match=r'pip install "lsdiffusion\[plot\]"'):
        plot_projections({"a": (proj, labels)}, tmp_path / "x.png")
    with pytest.raises(ImportError, match=r"lsdiffusion\[plot\]"):
        plot_diffusion_index({2.0: (-1.0, 1.0)}, tmp_path / "x.png")


# ---------------------------------------------------------------------------
# what a reader sees: stars, one scale, labels, legend, error bars
# ---------------------------------------------------------------------------


@pytest.fixture
def captured(monkeypatch):
    """The matplotlib figures the plot functions save, in order."""
    import lsdiffusion.plotting as plotting

    figures = []
    save = plotting._save

    def keep(fig, path, dpi):
        figures.append(fig)
        return save(fig, path, dpi)

    monkeypatch.setattr(plotting, "_save", keep)
    return figures


def _with_centroids(seed: int, scale: float, method: str = "plane"):
    torch.manual_seed(seed)
    fc = nn.Linear(6, 10)
    classes = [2, 5, 9]
    labels = torch.tensor(classes).repeat_interleave(20)
    feats = (fc.weight.detach()[labels] + 0.3 * torch.randn(60, 6)) * scale
    cents = torch.stack([feats[labels == c].mean(0) for c in classes])
    proj = muller_projection(
        feats, templates_from_linear(fc, classes), method=method, centroids=cents
    )
    return proj, labels


def _data_axes(fig):
    return [ax for ax in fig.axes if ax.axison]


def test_projection_panels_share_a_scale_per_row(tmp_path, captured):
    panels = {
        (teacher, f"T = {t}"): _with_centroids(i * 3 + j, scale=(1 + j) * (1 + 4 * i))
        for i, teacher in enumerate(["no LS", "LS"])
        for j, t in enumerate([1, 3, 64])
    }
    plot_projections(panels, tmp_path / "row.png")
    axes = _data_axes(captured[-1])
    spans = [(np.ptp(ax.get_xlim()), np.ptp(ax.get_ylim())) for ax in axes]
    for row in (spans[:3], spans[3:]):
        assert all(s == pytest.approx(row[0], rel=1e-9) for s in row)
        assert row[0][0] == pytest.approx(row[0][1])  # square: one unit, one length
    assert spans[0][0] < spans[3][0]  # the second row's students are 5x wider
    # every point, template and centroid is inside its panel
    for ax, (proj, _) in zip(axes, panels.values(), strict=True):
        drawn = torch.cat([proj.points, proj.templates, proj.centroids]).numpy()
        (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
        assert x0 < drawn[:, 0].min()
        assert drawn[:, 0].max() < x1
        assert y0 < drawn[:, 1].min()
        assert drawn[:, 1].max() < y1
    plot_projections(panels, tmp_path / "all.png", share_scale="all")
    spans = [np.ptp(ax.get_xlim()) for ax in _data_axes(captured[-1])]
    assert all(s == pytest.approx(spans[0]) for s in spans)
    plot_projections(panels, tmp_path / "none.png", share_scale="none")
    spans = [np.ptp(ax.get_xlim()) for ax in _data_axes(captured[-1])]
    assert len({round(s, 6) for s in spans}) > 1
    with pytest.raises(ValueError, match=r"share_scale must be one of \['row', 'all', 'none'\]"):
        plot_projections(panels, tmp_path / "bad.png", share_scale=True)  # type: ignore[arg-type]


def test_projection_labels_legend_and_stars(tmp_path, captured):
    names = {2: "miniature poodle", 5: "standard poodle", 9: "submarine"}
    panels = {("plain", "T = 1"): _with_centroids(0, 1.0), ("plain", "T = 3"): _projection(1)}
    plot_projections(panels, tmp_path / "p.png", class_names=names)
    fig = captured[-1]
    axes = _data_axes(fig)
    assert axes[0].get_xlabel().startswith("plane axis 1")
    assert axes[0].get_ylabel() == "plain\nplane axis 2"
    assert axes[1].get_title() == "T = 3"
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    assert set(names.values()) <= set(texts)
    assert "other classes" in texts  # panel 2 has 5 points of class 0
    assert "class centroid (class colour)" in texts
    assert "template: final-layer weights (class colour)" in texts
    # no text annotations left in the panels (they used to overlap the tick labels)
    assert all(not ax.texts for ax in axes)
    # centroids are stars, templates diamonds
    markers = [c.get_paths()[0].vertices.shape[0] for c in axes[0].collections]
    assert len(axes[0].collections) == 3 + 1 + 1  # three classes, templates, centroids
    assert markers[-1] > markers[-2]  # a star has more vertices than a diamond
    # the paper's method, centroids only
    pca = {("LS", "T = 1"): _with_centroids(2, 1.0, method="pca")}
    plot_projections(pca, tmp_path / "pca.png", show_templates=False)
    fig = captured[-1]
    (ax,) = _data_axes(fig)
    assert ax.get_xlabel() == "PC 1"
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "class centroid (class colour)" in texts
    assert not any(t.startswith("template") for t in texts)


def test_diffusion_chart_error_bars_from_seeds(tmp_path, captured):
    per_seed = {
        "LS teacher": {2.0: [(-8.0, 1.0), (-12.0, 2.0), (-10.0, 3.0)], 3.0: [(-20.0, 1.5)] * 3},
        "plain teacher": {2.0: (3.0, 0.5), 3.0: (4.0, 0.7)},
    }
    plot_diffusion_index(per_seed, tmp_path / "d.png", title="seeds")
    fig = captured[-1]
    similar, dissimilar = fig.axes[:2]
    assert "S_{sim}" in similar.get_title()
    assert "S_{dissim}" in dissimilar.get_title()
    # the LS series carries error bars: std over seeds (ddof=1) of each temperature
    bars = [c for c in similar.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    lengths = sorted(round(float(seg[1][1] - seg[0][1]) / 2, 9) for seg in segments)
    assert lengths == [0.0, pytest.approx(2.0)]  # std(-8, -12, -10) = 2; identical seeds: 0
    line = bars[0].lines[0]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), [-10.0, -20.0])
    # the plain series has no spread: a plain line, no error-bar container
    plain = [ln for ln in similar.get_lines() if ln.get_label() == "plain teacher"]
    assert len(plain) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["LS teacher", "plain teacher"]
    with pytest.raises(TypeError, match="non-empty list of them"):
        plot_diffusion_index({2.0: []}, tmp_path / "bad.png")


@pytest.mark.parametrize(
    ("suffix", "magic"), [(".pdf", b"%PDF"), (".png", b"\x89PNG"), (".svg", b"<?xml")]
)
def test_format_follows_the_suffix(tmp_path, suffix, magic):
    out = plot_diffusion_index({2.0: (-1.0, 1.0), 4.0: (-2.0, 1.5)}, tmp_path / f"a{suffix}")
    assert out.read_bytes().startswith(magic)
    g = torch.Generator().manual_seed(0)
    feats, w = torch.randn(12, 4, generator=g), torch.randn(3, 4, generator=g)
    proj = muller_projection(feats, w)
    labels = np.repeat([0, 1, 2], 4)
    out = plot_projections({"p": (proj, labels)}, tmp_path / f"p{suffix}")
    assert out.read_bytes().startswith(magic)


def test_unknown_suffix_and_label_keys_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="path must end in a format matplotlib writes"):
        plot_diffusion_index({2.0: (-1.0, 1.0)}, tmp_path / "a.docx")
    assert not (tmp_path / "a.docx").exists()
    with pytest.raises(TypeError, match=r"keys must be temperatures .*got 'T=4'.*series_name"):
        plot_diffusion_index({"T=4": (-1.0, 1.0)}, tmp_path / "a.png")  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"results\['a'\] keys must be temperatures"):
        plot_diffusion_index({"a": {"T=4": (-1.0, 1.0)}}, tmp_path / "a.png")  # type: ignore[dict-item]
    # labelled series of numeric temperatures work, int keys too
    out = plot_diffusion_index({"LS": {4: (-1.0, 1.0)}, "CE": {4: (0.5, 0.2)}}, tmp_path / "b.png")
    assert out.stat().st_size > 0
