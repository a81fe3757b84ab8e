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
