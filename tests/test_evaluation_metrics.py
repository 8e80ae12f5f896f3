"""Pixel-overlap metrics, NaN rules, t-tests and the Table II layout."""

import math

import numpy as np
import pandas as pd
import pytest

from colearn_pipeline.evaluation import (
    confusion_counts,
    format_table_ii,
    metrics_from_counts,
    slice_metrics,
    summarise,
    table_ii_markdown,
)


def test_counts_and_metrics_by_hand():
    truth = np.zeros((1, 4, 4), np.uint8)
    truth[0, :2, :2] = 1  # 4 lung pixels
    pred = np.zeros_like(truth)
    pred[0, :2, :3] = 1  # 6 predicted: 4 tp, 2 fp
    c = confusion_counts(pred, truth, 1)
    assert (c["tp"][0], c["fp"][0], c["fn"][0], c["tn"][0]) == (4, 2, 0, 10)
    m = metrics_from_counts(**c)
    assert m["precision"][0] == pytest.approx(4 / 6)
    assert m["sensitivity"][0] == 1.0
    assert m["specificity"][0] == pytest.approx(10 / 12)
    assert m["accuracy"][0] == pytest.approx(14 / 16)
    assert m["dice"][0] == pytest.approx(8 / 10)


def test_nan_rules():
    # slice 0: no tumour anywhere -> NaN precision/sensitivity/dice, specificity 1
    # slice 1: tumour in truth, none predicted -> precision 0, sensitivity 0, dice 0
    # slice 2: tumour predicted, none in truth -> precision 0, sensitivity NaN, dice 0
    truth = np.zeros((3, 4, 4), np.uint8)
    pred = np.zeros_like(truth)
    truth[1, 0, 0] = 3
    pred[2, 0, 0] = 3
    m = metrics_from_counts(**confusion_counts(pred, truth, 3))
    assert math.isnan(m["precision"][0]) and math.isnan(m["sensitivity"][0]) and math.isnan(m["dice"][0])
    assert m["specificity"][0] == 1.0 and m["accuracy"][0] == 1.0
    assert m["precision"][1] == 0.0 and m["sensitivity"][1] == 0.0 and m["dice"][1] == 0.0
    assert m["precision"][2] == 0.0 and math.isnan(m["sensitivity"][2]) and m["dice"][2] == 0.0


def test_slice_metrics_table_and_overall_is_mean_over_rois():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (5, 8, 8)).astype(np.uint8)
    pred = truth.copy()
    pred[:, :2] = 0
    df = slice_metrics(pred, truth, studies=["s"] * 5, slice_index=range(10, 15), overall_includes_background=True)
    assert set(df["roi"]) == {"background", "lungs", "mediastinum", "tumours", "overall"}
    assert len(df) == 25
    per = df[df["roi"] != "overall"].groupby("slice")["accuracy"].mean()
    overall = df[df["roi"] == "overall"].set_index("slice")["accuracy"]
    np.testing.assert_allclose(overall.sort_index(), per.sort_index())
    perfect = slice_metrics(truth, truth)
    assert (perfect[perfect["roi"] == "lungs"]["dice"] == 1).all()


def _fake(net_values):
    rows = []
    for i, v in enumerate(net_values):
        for roi in ("lungs", "mediastinum", "tumours", "background", "overall"):
            rows.append({"slice": i, "roi": roi, "precision": v, "sensitivity": v, "specificity": v,
                         "accuracy": v, "dice": v if roi != "tumours" or i else np.nan})
    return pd.DataFrame(rows)


def test_summary_ttest_marks_significant_baselines():
    rng = np.random.default_rng(1)
    per_net = {
        "colearn": _fake(0.9 + 0.01 * rng.standard_normal(20)),
        "tb": _fake(0.8 + 0.01 * rng.standard_normal(20)),  # clearly worse
        "tc": _fake(0.9 + 0.01 * rng.standard_normal(20)),  # same distribution
        "fs": _fake(0.9 + 0.01 * rng.standard_normal(20)),
    }
    s = summarise(per_net)
    assert list(s["cnn"][:4]) == ["TB", "TC", "FS", "our method"]
    lung = s[s["roi"] == "lungs"].set_index("net")
    assert lung.loc["tb", "accuracy_p_slices"] < 1e-6 and lung.loc["tb", "accuracy_significant"]
    assert math.isnan(lung.loc["colearn", "accuracy_p_slices"])
    tumour = s[s["roi"] == "tumours"].set_index("net")
    assert tumour.loc["colearn", "dice_n_slices"] == 19  # the NaN slice is left out
    t = format_table_ii(s)
    cell = t[(t["ROI"] == "lungs") & (t["CNN"] == "TB")]["Accuracy"].iloc[0]
    mean, sd = (float(v) for v in cell.rstrip("*").split(" ± "))
    assert cell.endswith("*") and mean == pytest.approx(100 * lung.loc["tb", "accuracy_mean"], abs=0.006)
    assert sd == pytest.approx(100 * lung.loc["tb", "accuracy_sd_slices"], abs=0.006)
    md = table_ii_markdown(s, n_slices=20, n_studies=2)
    assert "| lungs | TB |" in md and md.count("| lungs |") == 1 and "p < 0.05" in md


def test_scored_slices_tumour_or_all_thorax():
    from colearn_pipeline.evaluation.metrics import scored_slice_mask

    y = np.zeros((4, 4, 4), np.uint8)
    y[0, 0, 0] = 3          # tumour (and nothing else)
    y[1, 0, 0] = 1          # lung only: a tumour-free thorax slice
    y[2, 0, 0] = 2          # mediastinum only
    np.testing.assert_array_equal(scored_slice_mask(y, "tumour"), [True, False, False, False])
    np.testing.assert_array_equal(scored_slice_mask(y, "all_thorax"), [True, True, False, False])
    with pytest.raises(ValueError, match="all_thorax"):
        scored_slice_mask(y, "everything")


def test_slice_level_sd_is_the_sample_sd():
    """SD over slices with ddof 1: values 0.2, 0.4, 0.9 give sqrt(0.26 / 2) = 0.36056 (ddof 0: 0.29439)."""
    per_net = {net: _fake(np.array([0.2, 0.4, 0.9]) + shift) for net, shift in (("colearn", 0.0), ("tb", 0.05))}
    s = summarise(per_net).set_index(["roi", "net"])
    assert s.loc[("lungs", "tb"), "dice_sd_slices"] == pytest.approx(0.360555, abs=1e-6)
    assert s.loc[("lungs", "colearn"), "accuracy_sd_slices"] == pytest.approx(0.360555, abs=1e-6)
    assert s.loc[("tumours", "tb"), "dice_sd_slices"] == pytest.approx(np.std([0.45, 0.95], ddof=1))  # NaN dropped
    assert s.loc[("lungs", "tb"), "dice_n_slices"] == 3
