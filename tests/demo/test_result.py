"""The demo's results side: significance under Table 3, results.json, the fourth check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lsdiffusion.diffusion import DiffusionIndexTable


@pytest.fixture
def run(tiny_run):
    result, data, _ = tiny_run
    return result, data


def test_significance_pools_classes_over_seeds(run):
    result, data = run
    for key, sig in data["significance"].items():
        per_class = data["diffusion_index"][key]["per_class"]
        a = np.concatenate(per_class["similar"])
        b = np.concatenate(per_class["dissimilar"])
        assert sig["n"] == len(a) == 6 * 2  # 6 classes x 2 seeds
        # the per-seed means of Table 3 are the means of these per-class values
        means = [float(np.mean(v)) for v in per_class["similar"]]
        assert means == pytest.approx(data["diffusion_index"][key]["similar"]["values"])
        assert sig["p_similar_negative"] == stats.wilcoxon(a, alternative="less").pvalue
        assert sig["p_dissimilar_positive"] == stats.wilcoxon(b, alternative="greater").pvalue
        assert sig["p_similar_below_dissimilar"] == (
            stats.wilcoxon(a, b, alternative="less").pvalue
        )
        ci = stats.bootstrap(
            (a,), np.mean, confidence_level=0.95, n_resamples=10_000, rng=np.random.default_rng(0)
        ).confidence_interval
        assert sig["ci_similar"] == [ci.low, ci.high]
        alpha, t1 = (float(v) for v in key.split("/"))
        assert result.significance(alpha, t1).to_dict() == sig


def test_fourth_check_comes_from_the_tests(run):
    result, data = run
    (name,) = [k for k in data["checks"] if "alpha_sim < 0 < alpha_dissim" in k]
    assert "Wilcoxon p < 0.05" in name
    assert "n = 12" in name
    sig = result.significance(0.1, 3.0)
    assert data["checks"][name] is (
        sig.p_similar_negative < 0.05 and sig.p_dissimilar_positive < 0.05
    )
    # the signs of the means alone do not decide it
    pooled = DiffusionIndexTable.concat(result.diffusion_tables[(0.1, 3.0)])
    assert sig.mean_similar == pytest.approx(pooled.mean_similar)


def test_significance_printed_under_table_3(run):
    result, _ = run
    text = result.tables()
    table3 = text.index("Table 3")
    block = text.index("Significance of Table 3")
    geometry = text.index("Cluster geometry")  # the table beside Table 3 comes next
    assert table3 < block < geometry < text.index("Appendix H")
    lines = text[block:geometry].strip().splitlines()
    assert "n = 6 x 2 = 12" in lines[0]
    assert "Wilcoxon" in lines[1]
    assert "95% BCa bootstrap" in lines[1]
    assert "p(α_sim<0)" in lines[2]
    rows = lines[4:]
    assert len(rows) == 2  # two teachers x one T1
    sig = result.significance(0.1, 3.0)
    assert f"{sig.p_similar_negative:.2g}" in rows[1]
    assert f"[{sig.ci_similar[0]:+.2f}, {sig.ci_similar[1]:+.2f}]" in rows[1]


def test_significance_of_an_unmeasured_cell(run):
    result, _ = run
    with pytest.raises(KeyError, match=r"no per-class diffusion indices for teacher alpha=0\.5"):
        result.significance(0.5, 3.0)
