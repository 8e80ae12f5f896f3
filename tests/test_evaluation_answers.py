"""answers.md says what the study-level tables say: effects with CI and n, survivors either way, power."""

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation.answers import PowerTarget, answers_markdown
from colearn_pipeline.evaluation.comparison import ComparisonSettings, study_level_table
from colearn_pipeline.evaluation.statistics import paired_t_n_for_power
from colearn_pipeline.evaluation.tables import NET_LABELS

SETTINGS = ComparisonSettings(reference="colearn", alpha=0.05, n_bootstrap=500, bootstrap_seed=0, confidence=0.95,
                              primary_roi="tumours", primary_metric="dice")
SHIFTS = {"colearn": 0.0, "tb": 0.0, "tc": 0.01, "fs": 0.15, "tb_skips": 0.005, "tb_skips_conv": 0.02}


def _per_slice(shifts, n_studies=8, seed=0):
    """Per-slice Dice: study effects, each other net ``shift`` above co-learning with a +-``pattern``
    per study (mean 0), so the mean difference is exactly ``-shift``. FS: 15 points better."""
    rng = np.random.default_rng(seed)
    study = rng.normal(0.6, 0.1, n_studies)
    rows = []
    for j, (net, shift) in enumerate(shifts.items()):
        noise = (0.0 if net == "colearn" else 0.02) * np.resize([1, -1] if j % 2 else [-1, 1], n_studies)
        for i in range(n_studies):
            for roi in ("lungs", "tumours"):
                for k in range(2):
                    rows.append({"net": net, "seed": 1, "study": f"s{i}", "roi": roi, "slice": k,
                                 "dice": study[i] + shift + noise[i]})
    return pd.DataFrame(rows)


def _answers(per_slice):
    table_ii = study_level_table(per_slice, ["tb", "tc", "fs", "colearn"], ["lungs", "tumours"], ["dice"], SETTINGS)
    ablation = study_level_table(per_slice, ["tb_skips", "tb_skips_conv", "colearn"], ["lungs", "tumours"], ["dice"],
                                 SETTINGS)
    text = answers_markdown(table_ii, ablation, SETTINGS, NET_LABELS, PowerTarget(0.02, 0.8), ["lungs", "tumours"],
                            n_seeds=1, slices="all_thorax")
    return table_ii, text


def test_a_loss_that_survives_holm_is_reported_as_a_loss():
    table_ii, text = _answers(_per_slice(SHIFTS))
    fs = table_ii[(table_ii["endpoint"] == "primary") & (table_ii["net"] == "fs")].iloc[0]
    assert fs["significant"] and fs["difference"] < 0
    assert "our method worse than FS" in text
    assert f"15.0 Dice points lower (Δ {100 * fs['difference']:+.1f}" in text
    assert "n = 8 studies" in text
    line = next(x for x in text.splitlines() if x.startswith("- vs FS"))
    assert f"{100 * fs['ci_low']:+.1f} to {100 * fs['ci_high']:+.1f}" in line


def test_each_net_once_tb_and_tb_skips_apart_and_power_from_the_observed_sd():
    table_ii, text = _answers(_per_slice(SHIFTS))
    for label in ("TB", "TC", "FS", "TB + skips", "TB + skips + conv"):
        assert sum(x.startswith(f"- vs {label} (") for x in text.splitlines()) == 1, label
    assert "same net" not in text
    tb = table_ii[(table_ii["endpoint"] == "primary") & (table_ii["net"] == "tb")].iloc[0]
    n = paired_t_n_for_power(0.02, tb["sd_differences"], 0.8, 0.05 / 3)
    assert f"TB: SD {100 * tb['sd_differences']:.1f} points, n = {n}" in text
    assert "(here: 8)" in text
    assert "## Secondary and descriptive" in text and "- lungs: vs TB" in text


def test_no_survivor_says_so_and_one_net_twice_is_named():
    shifts = {**SHIFTS, "fs": 0.0}
    per_slice = _per_slice(shifts)
    tb = per_slice[per_slice["net"] == "tb"]
    per_slice = pd.concat([per_slice[per_slice["net"] != "tb_skips"], tb.assign(net="tb_skips")])
    _, text = _answers(per_slice)
    assert "Surviving Holm correction over these 3 comparisons (alpha 0.05): none" in text
    assert "are the same net" in text
