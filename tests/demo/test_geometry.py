"""The demo's cluster geometry: per-class NC1 terms, the LS-vs-plain tests, results.json."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from lsdiffusion import class_scatter
from lsdiffusion.demo.geometry import GeometryRow, compare_geometry, measure_geometry


def _two_level_features(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(6, 5, generator=g, dtype=torch.float64) * 3
    labels = torch.arange(6).repeat_interleave(40)
    x = means[labels] + torch.randn(240, 5, generator=g, dtype=torch.float64)
    return x.to(dtype), labels


SIMILAR = [[c ^ 1] for c in range(6)]
DISSIMILAR = [[o for o in range(6) if o // 2 != c // 2] for c in range(6)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_measure_geometry_against_a_float64_numpy_reference(dtype: torch.dtype) -> None:
    x, y = _two_level_features(dtype)
    row = measure_geometry(x, y, 6, SIMILAR, DISSIMILAR)
    h, lab = x.double().numpy(), y.numpy()
    mu = np.stack([h[lab == c].mean(0) for c in range(6)])
    var = np.array([((h[lab == c] - mu[c]) ** 2).sum(1).mean() for c in range(6)])
    with np.errstate(divide="ignore", invalid="ignore"):  # the diagonal: a class against itself
        cdnv = (var[:, None] + var[None, :]) / (2 * ((mu[:, None] - mu[None, :]) ** 2).sum(-1))
    sigma_b = np.cov((mu - mu.mean(0)).T, bias=True)
    pinv = np.linalg.pinv(sigma_b)
    per_class = [np.trace(np.cov((h[lab == c] - mu[c]).T, bias=True) @ pinv) / 6 for c in range(6)]
    rtol = 1e-5 if dtype == torch.float32 else 1e-9
    assert row.cdnv_similar == pytest.approx([cdnv[c, c ^ 1] for c in range(6)], rel=rtol)
    assert row.cdnv_dissimilar == pytest.approx(
        [cdnv[c, DISSIMILAR[c]].mean() for c in range(6)], rel=rtol
    )
    assert row.nc1_per_class == pytest.approx(per_class, rel=1e-4 if rtol > 1e-9 else 1e-8)
    # NC1 is the mean of its per-class terms (equal class sizes), as ClassScatter computes it
    geometry = class_scatter(x, y, 6)
    assert float(np.mean(row.nc1_per_class)) == pytest.approx(geometry.nc1, rel=1e-9)
    assert row.nc1 == geometry.nc1
    assert row.r2 == geometry.class_separation


def test_the_per_class_terms_are_invariant_to_translation_rotation_and_scale() -> None:
    x, y = _two_level_features(torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    moved = (x @ q) * 7.5 + 1e3
    a = measure_geometry(x, y, 6, SIMILAR, DISSIMILAR)
    b = measure_geometry(moved, y, 6, SIMILAR, DISSIMILAR)
    assert b.nc1_per_class == pytest.approx(a.nc1_per_class, rel=1e-7)
    assert b.cdnv_similar == pytest.approx(a.cdnv_similar, rel=1e-7)


def _row(values: list[float], r2: float, nc1: float) -> GeometryRow:
    return GeometryRow(r2, nc1, values, values, [v / 2 for v in values])


def test_compare_geometry_is_scipys_paired_wilcoxon() -> None:
    rng = np.random.default_rng(0)
    plain = [_row(list(rng.random(8) + 1), 0.5, 1.0) for _ in range(3)]
    ls = [_row(list(rng.random(8)), 0.4 + s / 10, 0.5 + s) for s in range(3)]
    c = compare_geometry(ls, plain)
    a = [v for r in ls for v in r.cdnv_similar]
    b = [v for r in plain for v in r.cdnv_similar]
    assert c.n == 24
    assert c.p_similar_apart == stats.wilcoxon(a, b, alternative="less").pvalue
    half = [v / 2 for v in a], [v / 2 for v in b]
    assert c.p_tighter == stats.wilcoxon(*half, alternative="less").pvalue
    assert (c.seeds_r2_higher, c.seeds_nc1_lower, c.seeds) == (1, 1, 3)
    assert c.holds(0.05)
    assert not compare_geometry(plain, ls).holds(0.05)  # the other way round
    with pytest.raises(ValueError, match="the same seeds and classes"):
        compare_geometry(ls[:2], plain)


def test_results_json_carries_the_geometry_and_its_checks(tiny_run) -> None:
    _, data, out = tiny_run
    cells = data["cluster_geometry"]
    assert set(cells) == {"0/teacher", "0.1/teacher", "0/1", "0/3", "0.1/1", "0.1/3"}
    for cell in cells.values():
        assert len(cell["per_seed"]) == 2  # seeds
        assert len(cell["per_seed"][0]["nc1_per_class"]) == 6  # classes
        assert cell["nc1"]["values"] == [r["nc1"] for r in cell["per_seed"]]
        assert cell["cdnv_similar"]["values"] == pytest.approx(
            [np.mean(r["cdnv_similar"]) for r in cell["per_seed"]]
        )
    sig = data["geometry_significance"]
    assert set(sig) == {"teacher", "student T=1"}
    ls = cells["0.1/teacher"]["per_seed"]
    plain = cells["0/teacher"]["per_seed"]
    a = [v for r in ls for v in r["cdnv_similar"]]
    b = [v for r in plain for v in r["cdnv_similar"]]
    assert sig["teacher"]["p_similar_apart"] == stats.wilcoxon(a, b, alternative="less").pvalue
    assert sig["teacher"]["n"] == 12
    names = [k for k in data["checks"] if "tighter clusters" in k or "inherits it" in k]
    assert len(names) == 2
    assert data["checks"][names[0]] is (
        sig["teacher"]["p_tighter"] < 0.05 and sig["teacher"]["p_similar_apart"] < 0.05
    )
    assert data["figures"] == [str(out / "diffusion.png"), str(out / "figure.png")]


def test_the_geometry_table_is_printed_beside_table_3(tiny_run) -> None:
    result, _, _ = tiny_run
    text = result.tables()
    block = text.index("Cluster geometry of the penultimate features")
    assert text.index("Significance of Table 3") < block < text.index("Appendix H")
    lines = text[block:].splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("teacher    features"))
    rows = lines[header + 2 : header + 8]  # 2 teachers x (teacher + 2 students)
    assert [r.split()[3] for r in rows] == ["teacher", "student", "student"] * 2
    teacher = result.teacher_geometry[0.1]
    mean_r2 = np.mean([r.r2 for r in teacher])
    assert f"{mean_r2:.2f} ± " in rows[3]
    assert "p(NC1 term lower)" in text
    c = result.geometry_comparisons()["student T=1"]
    assert any(line.startswith("student T=1") and f"{c.p_tighter:.2g}" in line for line in lines)
