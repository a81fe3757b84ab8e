"""Tables, figures and `report.md` of `lsdiffusion analyze`, written atomically."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

_STAGING = ".lsdiffusion-analyze-"


def _geometry_rows(measured: dict[str, Any], sets: Any) -> list[dict[str, Any]]:
    rows = []
    for key, m in measured.items():
        g = m.geometry
        sim = [
            g.mean_cdnv(t, np.flatnonzero(row))
            for t, row in zip(sets.targets, sets.similar, strict=True)
        ]
        dis = [
            g.mean_cdnv(t, np.flatnonzero(row))
            for t, row in zip(sets.targets, sets.dissimilar, strict=True)
        ]
        rows.append(
            {
                "model": key,
                "accuracy": m.accuracy,
                "class_separation": g.class_separation,
                "nc1": g.nc1,
                "cdnv_similar": float(np.mean(sim)),
                "cdnv_dissimilar": float(np.mean(dis)),
            }
        )
    return rows


def _geometry_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | accuracy | R² | NC1 | CDNV similar | CDNV dissimilar |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['accuracy']:.2%} | {r['class_separation']:.4f} | "
            f"{r['nc1']:.4g} | {r['cdnv_similar']:.4g} | {r['cdnv_dissimilar']:.4g} |"
        )
    return "\n".join(lines)


def _entropy_markdown(report: Any) -> str:
    lines = ["| T | entropy (nats) | / ln K |", "|---:|---:|---:|"]
    for t, h, r in zip(report.temperatures, report.entropy, report.normalized, strict=True):
        lines.append(f"| {t:g} | {h:.4f} | {r:.3f} |")
    lines.append(f"| ln K | {report.max_entropy:.4f} | K = {report.num_classes} |")
    return "\n".join(lines)


def write_report(
    args: argparse.Namespace,
    measured: dict[str, Any],
    sets: Any,
    names: Sequence[str],
    entropy: Any,
) -> dict[str, Any]:
    """Print the tables, stage every file, then move them into `args.out` (report.md last)."""
    # Long on purpose: the report's sections in the order they are written.
    from lsdiffusion.diffusion import diffusion_indices
    from lsdiffusion.plotting import plot_diffusion_index, plot_projections
    from lsdiffusion.projection import muller_projection, templates_from_linear

    out: Path = args.out
    temps = list(args.temperatures)
    t0 = temps[0]
    students = ", ".join(f"T = {t:g}" for t in temps)
    title = f"Diffusion analysis: teacher {args.teacher.name}, students at {students}"
    lines = [f"# {title}", "", f"Data: {args.data} ({len(names)} classes).", ""]
    geometry = _geometry_rows(measured, sets)
    geo_md = _geometry_markdown(geometry)
    print(f"{title}\n\nclass sets: {sets.source}\n")
    print(geo_md)
    lines += ["## Accuracy and cluster geometry", "", f"Class sets: {sets.source}.", "", geo_md]
    staging = Path(tempfile.mkdtemp(prefix=_STAGING, dir=out))
    tables: dict[float, Any] = {}
    significance: dict[float, Any] = {}
    try:
        c0 = measured[f"student T={t0:g}"].centroids
        for t1 in temps[1:]:
            c1 = measured[f"student T={t1:g}"].centroids
            table = diffusion_indices(
                c0, c1, sets.targets, sets.similar, sets.dissimilar, reference=args.relative_to
            )
            tables[t1] = table
            stem = f"diffusion_T{t0:g}_to_T{t1:g}"
            table.to_csv(staging / f"{stem}.csv", names=names)
            markdown = table.to_markdown(names=names)
            (staging / f"{stem}.md").write_text(markdown + "\n", encoding="utf-8")
            head = f"Table 3: diffusion index (%) from T0 = {t0:g} to T1 = {t1:g}"
            lines += ["", f"## {head}", "", markdown]
            print(f"\n{head}\n{table.to_text(names=names)}")
            if len(table) >= 2:
                sig = table.significance()
                significance[t1] = sig
                lines += ["", "```", sig.to_text(), "```"]
                print(sig.to_text())
            share = f"systematic diffusion in {table.fraction_systematic:.0%} of the classes"
            lines += ["", share + "."]
            print(share)
        if tables:
            n = len(sets.targets)
            chart = plot_diffusion_index(
                {f"students of {args.teacher.name}": tables},
                staging / "diffusion_index.png",
                t0=t0,
                title=f"Diffusion index from T0 = {t0:g} (error bars: ±1 s.d. over {n} classes)",
            )
            lines += ["", f"![diffusion index]({chart.name})"]
        else:
            print("one student only: no diffusion index (give two or more temperatures)")
        picked = [int(c) for c in np.unique(measured["teacher"].labels.numpy())][:3]
        panels: dict[Any, Any] = {}
        for key, m in measured.items():
            templates = templates_from_linear(m.layer, picked)
            panels[key] = (muller_projection(m.features, templates), m.labels)
        fig = plot_projections(
            panels, staging / "projection.png", class_names=list(names),
            title="penultimate-layer features",
        )  # fmt: skip
        lines += ["", "## Müller projection", "", f"![projection]({fig.name})"]
        entropy_md = _entropy_markdown(entropy)
        (staging / "target_entropy.md").write_text(entropy_md + "\n", encoding="utf-8")
        columns = zip(entropy.temperatures, entropy.entropy, entropy.normalized, strict=True)
        rows = ["temperature,entropy_nats,normalized"] + [
            f"{t:g},{h!r},{r!r}" for t, h, r in columns
        ]
        (staging / "target_entropy.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        lines += ["", "## Teacher target entropy", "", entropy_md]
        print(f"\nteacher target entropy\n{entropy}")
        (staging / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        written = sorted(p.name for p in staging.iterdir() if p.name != "report.md")
        for name in [*written, "report.md"]:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"\nwrote {out}/: report.md, {', '.join(written)}")
    return {
        "accuracy": {k: m.accuracy for k, m in measured.items()},
        "tables": tables,
        "significance": significance,
        "geometry": geometry,
        "entropy": entropy,
        "names": list(names),
        "sets": sets,
        "out": str(out),
    }
