"""The paper's Table II: its overall accuracy and specificity are the mean over the three
foreground ROIs (checked on its published numbers), and our "overall" row computes it that way."""

import numpy as np
import pytest

from colearn_pipeline.evaluation import slice_metrics
from colearn_pipeline.evaluation.metrics import overall_from_rois

#: Kumar et al., Table II, (specificity, accuracy) in % per ROI and net: TB, TC, FS, ours.
PAPER = {
    "lungs": {"tb": (98.29, 98.36), "tc": (97.96, 98.07), "fs": (98.56, 98.57), "ours": (98.76, 98.81)},
    "mediastinum": {"tb": (99.06, 98.97), "tc": (99.09, 98.99), "fs": (98.82, 98.69), "ours": (99.08, 99.04)},
    "tumours": {"tb": (99.86, 99.71), "tc": (99.82, 99.72), "fs": (99.73, 99.67), "ours": (99.91, 99.83)},
    "background": {"tb": (98.50, 97.37), "tc": (98.85, 97.04), "fs": (98.02, 97.20), "ours": (99.04, 97.85)},
}
PAPER_OVERALL = {"tb": (99.09, 99.02), "tc": (98.97, 98.93), "fs": (99.05, 98.98), "ours": (99.26, 99.23)}


@pytest.mark.parametrize("net", ["tb", "tc", "fs", "ours"])
def test_paper_overall_is_the_foreground_mean(net):
    rows = {roi: np.array(PAPER[roi][net]) for roi in PAPER}
    ours = overall_from_rois(rows, include_background=False)
    np.testing.assert_allclose(ours, PAPER_OVERALL[net], atol=0.02)
    with_background = overall_from_rois(rows, include_background=True)
    assert np.abs(with_background - np.array(PAPER_OVERALL[net])).max() > 0.1  # the check can fail


def test_slice_overall_row_uses_foreground_unless_asked():
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 4, (4, 8, 8)).astype(np.uint8)
    pred = np.where(rng.random(truth.shape) < 0.3, 0, truth).astype(np.uint8)
    df = slice_metrics(pred, truth)
    fg = df[df["roi"].isin(["lungs", "mediastinum", "tumours"])].groupby("slice")["specificity"].mean()
    overall = df[df["roi"] == "overall"].set_index("slice")["specificity"].sort_index()
    np.testing.assert_allclose(overall, fg.sort_index())
    df4 = slice_metrics(pred, truth, overall_includes_background=True)
    all4 = df4[df4["roi"] != "overall"].groupby("slice")["specificity"].mean()
    np.testing.assert_allclose(df4[df4["roi"] == "overall"].set_index("slice")["specificity"].sort_index(),
                               all4.sort_index())
    assert not np.allclose(all4.sort_index(), fg.sort_index())
