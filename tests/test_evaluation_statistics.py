"""Study-level statistics: against scipy on hand-made data, bootstrap coverage, null calibration."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from colearn_pipeline.evaluation.comparison import (
    ComparisonSettings,
    study_level_table,
    study_means,
)
from colearn_pipeline.evaluation.simulation import simulate_null_tables
from colearn_pipeline.evaluation.statistics import (
    bootstrap_mean_ci,
    holm_adjust,
    paired_t_n_for_power,
    paired_t_power,
    paired_t_pvalues,
    slice_two_sample_t_pvalue,
    t_mean_ci,
    wilcoxon_pvalues,
)

REF = np.array([0.71, 0.64, 0.80, 0.55, 0.68, 0.74, 0.60])
OTHER = np.array([0.65, 0.66, 0.71, 0.50, 0.61, 0.70, 0.62])


def test_paired_t_and_wilcoxon_match_scipy():
    assert paired_t_pvalues(REF - OTHER) == pytest.approx(stats.ttest_rel(REF, OTHER).pvalue, rel=1e-12)
    assert wilcoxon_pvalues(REF - OTHER) == pytest.approx(stats.wilcoxon(REF, OTHER).pvalue, rel=1e-12)
    both = np.stack([REF - OTHER, OTHER - REF[::-1]])
    np.testing.assert_allclose(paired_t_pvalues(both)[1], stats.ttest_rel(OTHER, REF[::-1]).pvalue)
    assert math.isnan(float(paired_t_pvalues(np.zeros(5))))  # no variance: no test
    assert math.isnan(float(wilcoxon_pvalues(np.zeros(5))))


def test_holm_by_hand():
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.005])
    # sorted 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone 0.06
    np.testing.assert_allclose(holm_adjust(p), [0.03, 0.06, np.nan, 0.06, 0.02])
    assert holm_adjust(np.array([0.5, 0.9]))[1] == 1.0


def test_holm_along_an_axis_is_one_family_per_row():
    p = np.array([[0.01, 0.04, 0.03], [0.5, np.nan, 0.001]])
    rows = holm_adjust(p, axis=-1)
    np.testing.assert_allclose(rows[0], holm_adjust(p[0]))
    np.testing.assert_allclose(rows[1], [0.5, np.nan, 0.002])
    np.testing.assert_allclose(holm_adjust(p.T, axis=0), rows.T)


def test_t_interval_matches_scipy_and_is_vectorised():
    d = REF - OTHER
    low, high = t_mean_ci(d, 0.95)
    expected = stats.t.interval(0.95, df=d.size - 1, loc=d.mean(), scale=stats.sem(d))
    assert (low, high) == pytest.approx(expected, rel=1e-12)
    lows, highs = t_mean_ci(np.stack([d, 2 * d]), 0.9)
    assert highs[1] - lows[1] == pytest.approx(2 * (highs[0] - lows[0]))
    assert all(math.isnan(v) for v in t_mean_ci(np.array([0.1]), 0.95))


def test_slice_level_two_sample_t_matches_scipy_and_drops_nan():
    a, b = np.array([0.7, 0.8, np.nan, 0.75]), np.array([0.6, 0.65, 0.7])
    assert slice_two_sample_t_pvalue(a, b) == pytest.approx(stats.ttest_ind(a[~np.isnan(a)], b).pvalue)
    assert slice_two_sample_t_pvalue(a, b, equal_var=False) == pytest.approx(
        stats.ttest_ind(a[~np.isnan(a)], b, equal_var=False).pvalue)
    assert math.isnan(slice_two_sample_t_pvalue(np.array([0.5]), b))


def test_paired_t_power_and_sample_size_against_published_values():
    """G*Power 3 (Faul et al. 2007), t-test of matched pairs, two-sided alpha 0.05: d = 0.5 needs 34
    pairs (power 0.8078), d = 1.0 needs 10 (power 0.8031)."""
    assert paired_t_power(0.5, 1.0, 34) == pytest.approx(0.8078, abs=5e-4)
    assert paired_t_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=5e-4)
    assert paired_t_n_for_power(0.5, 1.0) == 34
    assert paired_t_n_for_power(1.0, 1.0) == 10
    assert paired_t_n_for_power(-0.02, 0.04) == paired_t_n_for_power(0.02, 0.04) == 34  # 2 points, SD 4 points
    for d, sd, a in [(0.02, 0.05, 0.05), (0.02, 0.08, 0.05 / 3), (0.1, 0.05, 0.01)]:
        exact = next(n for n in range(2, 1000) if paired_t_power(d, sd, n, a) >= 0.8)  # noncentral t
        assert abs(paired_t_n_for_power(d, sd, 0.8, a) - exact) <= 1, (d, sd, a, exact)
    with pytest.raises(ValueError):
        paired_t_n_for_power(0.0, 0.05)


def _settings(**kw):
    base = {"reference": "colearn", "alpha": 0.05, "n_bootstrap": 2000, "bootstrap_seed": 0, "confidence": 0.95,
            "primary_roi": "tumours", "primary_metric": "dice"}
    return ComparisonSettings(**{**base, **kw})


def _hand_table():
    """Two nets, three studies with 2, 3 and 1 slices, one seed; tumour Dice NaN on one slice."""
    rows = []
    values = {
        "colearn": {"a": [0.8, 0.6], "b": [0.9, 0.7, 0.8], "c": [0.5]},
        "tb": {"a": [0.7, 0.5], "b": [0.6, np.nan, 0.6], "c": [0.55]},
    }
    for net, by_study in values.items():
        for study, vals in by_study.items():
            for i, v in enumerate(vals):
                rows.append({"net": net, "seed": 1, "study": study, "roi": "tumours", "slice": i, "dice": v})
    return pd.DataFrame(rows)


def test_study_level_table_against_scipy_on_study_means():
    per_slice = _hand_table()
    table = study_level_table(per_slice, ["tb", "colearn"], ["tumours"], ["dice"], _settings())
    ref_means = np.array([0.7, 0.8, 0.5])
    tb_means = np.array([0.6, 0.6, 0.55])
    tb = table[table["net"] == "tb"].iloc[0]
    d = ref_means - tb_means
    assert tb["difference"] == pytest.approx(d.mean())
    assert tb["sd_differences"] == pytest.approx(d.std(ddof=1))
    assert tb["p_t_studies"] == pytest.approx(stats.ttest_rel(ref_means, tb_means).pvalue)
    assert (tb["ci_low"], tb["ci_high"]) == pytest.approx(
        stats.t.interval(0.95, df=2, loc=d.mean(), scale=stats.sem(d)))
    assert math.isnan(tb["boot_low"])  # 3 studies: no bootstrap CI (it would be min..max)
    assert tb["p_holm"] == pytest.approx(tb["p_t_studies"])  # one comparison in the primary family
    assert tb["endpoint"] == "primary"
    assert (tb["n_studies"], tb["n_slices"], tb["n_pairs"]) == (3, 5, 3)
    ref = table[table["net"] == "colearn"].iloc[0]
    assert ref["mean"] == pytest.approx(ref_means.mean()) and ref["sd_studies"] == pytest.approx(ref_means.std(ddof=1))
    assert ref["sd_studies"] == pytest.approx(0.152753, abs=1e-6)  # sqrt(0.046667 / 2): ddof 1
    assert (ref["n_studies"], ref["n_slices"]) == (3, 6)
    assert math.isnan(ref["p_t_studies"]) and math.isnan(ref["p_holm"])


def test_holm_runs_over_the_primary_family_only():
    """Three baselines, two metrics, two ROIs: Holm over the 3 tumour-Dice comparisons; the rest secondary."""
    rng = np.random.default_rng(4)
    rows = []
    for net, shift in {"colearn": 0.0, "tb": 0.05, "tc": 0.0, "fs": -0.02}.items():
        for study in range(6):
            for roi in ("lungs", "tumours"):
                for i in range(3):
                    v = 0.6 + 0.02 * study - shift + 0.03 * rng.standard_normal()
                    rows.append({"net": net, "seed": 1, "study": f"s{study}", "roi": roi, "slice": i,
                                 "dice": v, "precision": v + 0.1})
    table = study_level_table(pd.DataFrame(rows), ["tb", "tc", "fs", "colearn"], ["lungs", "tumours"],
                              ["precision", "dice"], _settings())
    family = table[table["endpoint"] == "primary"]
    assert set(zip(family["roi"], family["metric"])) == {("tumours", "dice")} and len(family) == 4
    tested = family[family["net"] != "colearn"]
    np.testing.assert_allclose(tested["p_holm"], holm_adjust(tested["p_t_studies"].to_numpy()))
    secondary = table[table["endpoint"] == "secondary"]
    assert secondary["p_holm"].isna().all() and not secondary["significant"].any()
    assert secondary["p_t_studies"].notna().sum() == 3 * 3  # lungs x 2 metrics + tumours precision, 3 nets


def test_seeds_are_averaged_per_study_and_their_sd_reported():
    one = _hand_table()
    two = one.assign(seed=2, dice=one["dice"] + np.where(one["net"] == "colearn", 0.1, 0.0))
    table = study_level_table(pd.concat([one, two]), ["tb", "colearn"], ["tumours"], ["dice"], _settings())
    ref = table[table["net"] == "colearn"].iloc[0]
    assert ref["mean"] == pytest.approx(np.mean([0.75, 0.85, 0.55]))
    assert ref["sd_seeds"] == pytest.approx(np.std([2.0 / 3, 2.0 / 3 + 0.1], ddof=1))
    assert ref["n_seeds"] == 2
    means = study_means(pd.concat([one, two]), ["dice"])
    assert len(means) == 2 * 2 * 3


def test_bootstrap_ci_covers_the_true_difference():
    """Expanded-percentile CI of a 10-study mean difference covers the truth in >= 93 % of cases."""
    rng = np.random.default_rng(1)
    true = 0.03
    d = true + 0.05 * rng.standard_normal((1000, 10))
    low, high = bootstrap_mean_ci(d, n_resamples=2000, seed=7, confidence=0.95)
    coverage = np.mean((low <= true) & (true <= high))
    assert coverage >= 0.93
    assert coverage <= 0.98  # not trivially wide
    skewed = true + 0.05 * (rng.exponential(1.0, (1000, 10)) - 1.0)
    low, high = bootstrap_mean_ci(skewed, n_resamples=2000, seed=7, confidence=0.95)
    # exponential differences, n = 10: every small-sample interval under-covers somewhat (measured 0.895)
    assert np.mean((low <= true) & (true <= high)) >= 0.87


def test_null_calibration_study_level_vs_slice_level():
    """Under the null (10 studies x 16 slices, study random effect and net-by-study interaction),
    the study-level paired t-test rejects in 3-7 % of 1,000 tables; the paper's slice-level
    two-sample t-test rejects far more often (rates written in docs/train_eval.md)."""
    rates = simulate_null_tables(n_tables=1000, n_studies=10, n_slices=16, interaction_sd=0.5, seed=2026)
    assert 0.03 <= rates["study_paired_t"] <= 0.07
    assert 0.02 <= rates["study_wilcoxon"] <= 0.07
    assert rates["slice_two_sample_t"] > 0.10
