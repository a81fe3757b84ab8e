"""The demo's figures: Figure-1-style projections and the diffusion-index chart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from lsdiffusion.demo.result import DemoResult
from lsdiffusion.demo.task import HierarchicalTask, mlp

__all__ = ["draw_figures"]


def draw_figures(
    result: DemoResult, students: dict[tuple[float, float], Any], task: HierarchicalTask, out: Path
) -> str | None:
    """Figure-1-style projections and the diffusion chart; ``None`` without matplotlib.

    Three classes as in the paper's Figure 1 (two poodles and a submarine): two
    siblings of superclass 0 and one class of superclass 1, for both teachers
    at T0, at the checked T1 and at the highest T. Each student's features are
    projected as in the paper's Algorithm 1: QR of its three bias-augmented
    templates, then a PCA fitted on the *training* features plus their three
    class centroids; the *test* features and test centroids (stars) are drawn
    through that fit. Every panel has the same scale. ``diffusion.png`` draws
    the mean over classes and seeds with the seed spread (one std) as error
    bars. Writes ``figure.png`` and ``diffusion.png``; returns the first.
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from lsdiffusion.plotting import plot_diffusion_index, plot_projections

    cfg = result.config
    classes = [0, 1, cfg.subclasses]
    names = {
        0: "class 0 (superclass 0)",
        1: "class 1 (superclass 0, sibling)",
        cfg.subclasses: f"class {cfg.subclasses} (superclass 1)",
    }
    figure = plot_projections(
        _projection_panels(result, students, task, classes),
        out / "figure.png",
        class_names=names,
        title=(
            f"Student features, test split (seed {cfg.seeds[0]}): QR of 3 templates + PCA "
            "fitted on train (paper's Algorithm 1)\none scale per row; stars: class centroids"
        ),
        show_templates=False,
    )
    series = {  # one (similar, dissimilar) pair per seed: the error bars are the seed spread
        f"teacher α={alpha:g}": {
            t: list(result.diffusion[(alpha, t)]) for t in cfg.temperatures[1:]
        }
        for alpha in cfg.alphas
    }
    plot_diffusion_index(
        series,
        out / "diffusion.png",
        title=(
            f"Diffusion index: mean over classes and {len(cfg.seeds)} seeds\n"
            "(error bars: ±1 std over seeds)"
        ),
        t0=cfg.temperatures[0],
    )
    return str(figure)


def _projection_panels(
    result: DemoResult,
    students: dict[tuple[float, float], Any],
    task: HierarchicalTask,
    classes: list[int],
) -> dict[str | tuple[str, str], tuple[Any, Any]]:
    """A panel per (teacher, shown T): the test split through the training split's fit."""
    import torch

    from lsdiffusion.centroids import class_centroids
    from lsdiffusion.projection import muller_projection, templates_from_linear

    cfg = result.config
    shown = [cfg.temperatures[0]] + [
        t for t in (cfg.diffusion_t1, max(cfg.temperatures)) if t in cfg.temperatures[1:]
    ]
    mask = torch.isin(task.test_y, torch.tensor(classes))
    x, y = task.test_x[mask], task.test_y[mask]
    fit_mask = torch.isin(task.train_y, torch.tensor(classes))
    fit_x, fit_y = task.train_x[fit_mask], task.train_y[fit_mask]

    def centroids_of(f: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return class_centroids(f, labels, cfg.num_classes, on_empty="ignore")[classes]

    panels: dict[str | tuple[str, str], tuple[Any, Any]] = {}
    for alpha in cfg.alphas:
        for t in dict.fromkeys(shown):
            model = mlp(cfg.input_dim, cfg.student_width, cfg.student_features, cfg.num_classes, 0)
            model.load_state_dict(students[(alpha, t)])
            model.eval()
            with torch.no_grad():
                features = model[:-1](x)
                fit_features = model[:-1](fit_x)
            templates = templates_from_linear(model[-1], classes)
            fitted = muller_projection(
                fit_features,
                templates,
                method="pca",
                centroids=centroids_of(fit_features, fit_y),
            )
            shown_split = dataclasses.replace(  # the test split through the training fit
                fitted,
                points=fitted.transform(features),
                centroids=fitted.transform(centroids_of(features, y)),
            )
            panels[(f"teacher α={alpha:g}", f"student T={t:g}")] = (shown_split, y)
    return panels
