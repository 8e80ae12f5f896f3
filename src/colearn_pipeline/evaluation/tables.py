"""The paper's protocol: mean ± SD over test *slices*, slice-level two-sample t-tests against the
co-learning net, Table II layout. The unit of analysis here is the slice (as in the paper); the
study-level primary analysis is :mod:`colearn_pipeline.evaluation.comparison`. Both run their
tests through :mod:`colearn_pipeline.evaluation.statistics`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation.metrics import METRICS
from colearn_pipeline.evaluation.statistics import slice_two_sample_t_pvalue

#: Display names of the nets, in the paper's row order (baselines first, ours last), then the
#: ablation nets (TB and tb_skips are different nets: the paper's TB has no skip inputs).
NET_LABELS: dict[str, str] = {"tb": "TB", "tc": "TC", "fs": "FS", "colearn": "our method",
                              "tb_skips": "TB + skips", "tb_skips_conv": "TB + skips + conv"}
ROI_ORDER: tuple[str, ...] = ("lungs", "mediastinum", "tumours", "background", "overall")


def _values(df: pd.DataFrame, roi: str, metric: str) -> np.ndarray:
    v = df.loc[df["roi"] == roi, metric].to_numpy(dtype=np.float64)
    return v[~np.isnan(v)]


def summarise(
    per_net: Mapping[str, pd.DataFrame],
    reference: str = "colearn",
    alpha: float = 0.05,
    equal_var: bool = True,
    metrics: Sequence[str] = METRICS,
    roi_order: Sequence[str] = ROI_ORDER,
) -> pd.DataFrame:
    """Mean, SD over slices (ddof 1), slice count and slice-level t-test p per ROI, net and metric.

    Parameters
    ----------
    per_net : mapping
        ``{net: slice-metrics table}`` (:func:`colearn_pipeline.evaluation.metrics.slice_metrics`),
        all on the same test slices.
    reference : str
        The net every other one is compared with (``scipy.stats.ttest_ind`` over the slices'
        non-NaN values, two-sided); its own rows get p = NaN.
    alpha : float
        Significance level for the ``<metric>_significant`` columns.
    equal_var : bool
        Student's (True, the classic two-sample t-test) or Welch's test.
    metrics, roi_order : sequence of str
        Columns and row order.

    Returns
    -------
    pandas.DataFrame
        One row per (roi, net) in Table II order; columns ``roi``, ``net``, ``cnn`` (display
        name) and for each metric ``<m>_mean``, ``<m>_sd_slices``, ``<m>_n_slices``,
        ``<m>_p_slices`` (two-sample t over slices), ``<m>_significant`` (fractions, not percent).
    """
    nets = [n for n in NET_LABELS if n in per_net] + [n for n in per_net if n not in NET_LABELS]
    if reference in nets:
        nets = [n for n in nets if n != reference] + [reference]
    rows = []
    for roi in roi_order:
        for net in nets:
            row: dict[str, object] = {"roi": roi, "net": net, "cnn": NET_LABELS.get(net, net)}
            for m in metrics:
                v = _values(per_net[net], roi, m)
                row[f"{m}_mean"] = float(v.mean()) if v.size else math.nan
                row[f"{m}_sd_slices"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
                row[f"{m}_n_slices"] = int(v.size)
                p = math.nan
                if net != reference and reference in per_net:
                    p = slice_two_sample_t_pvalue(_values(per_net[reference], roi, m), v, equal_var)
                row[f"{m}_p_slices"] = p
                row[f"{m}_significant"] = bool(p < alpha) if not math.isnan(p) else False
            rows.append(row)
    return pd.DataFrame(rows)


def format_table_ii(summary: pd.DataFrame, metrics: Sequence[str] = METRICS, alpha: float = 0.05) -> pd.DataFrame:
    """Table II cells ``"mean ± SD"`` in percent with ``*`` where p < alpha.

    Returns
    -------
    pandas.DataFrame
        Columns ``ROI``, ``CNN`` and one per metric (capitalised), strings.
    """
    out = pd.DataFrame({"ROI": summary["roi"], "CNN": summary["cnn"]})
    for m in metrics:
        cells = []
        for _, r in summary.iterrows():
            mean, sd = r[f"{m}_mean"], r[f"{m}_sd_slices"]
            if math.isnan(mean):
                cells.append("n/a")
                continue
            cell = f"{100 * mean:.2f} ± {100 * sd:.2f}" if not math.isnan(sd) else f"{100 * mean:.2f}"
            cells.append(cell + ("*" if r[f"{m}_significant"] else ""))
        out[m.capitalize()] = cells
    return out


def table_ii_markdown(summary: pd.DataFrame, metrics: Sequence[str] = METRICS, alpha: float = 0.05,
                      n_slices: int | None = None, n_studies: int | None = None,
                      overall_includes_background: bool = False) -> str:
    """The paper's protocol in the Table II layout as a Markdown document (ROI shown once per block).

    Slice-level, unadjusted two-sample t-tests as the paper did: kept so the paper can be
    reproduced cell for cell, labelled as such; the primary analysis is study-level
    (:mod:`colearn_pipeline.evaluation.comparison`).
    """
    t = format_table_ii(summary, metrics, alpha)
    header = ["ROI", "CNN", *[m.capitalize() for m in metrics]]
    lines = [
        "# Table II, paper protocol: slice-level two-sample t-tests, unadjusted",
        "",
        "Reproduces the paper's analysis. Test slices of one study are not independent and both nets"
        " are scored on the same slices, so these p-values overstate significance; see table_ii.md"
        " for the study-level primary analysis.",
        "",
        "Metrics: mean ± standard deviation over test slices, in %.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * 2 + ["---:"] * len(metrics)) + "|",
    ]
    previous = None
    for _, r in t.iterrows():
        roi = r["ROI"] if r["ROI"] != previous else ""
        previous = r["ROI"]
        lines.append("| " + " | ".join([roi, r["CNN"], *[r[m.capitalize()] for m in metrics]]) + " |")
    ref = summary.loc[summary["cnn"] == NET_LABELS["colearn"], "cnn"]
    lines += [
        "",
        f"\\* p < {alpha:g}, two-sample t-test (scipy.stats.ttest_ind) of {ref.iloc[0] if len(ref) else 'the reference'}"
        " against that row's net over the test slices.",
        "Slices where a ratio is undefined (e.g. no pixel of the ROI in the ground truth and none predicted)"
        " are left out of that ROI's mean, SD and test; 'overall' is the per-slice mean over the "
        + ("four ROIs." if overall_includes_background else "three foreground ROIs, as the paper's Table II."),
    ]
    if n_slices is not None:
        lines.append(f"Test set: {n_slices} slices" + (f" from {n_studies} studies." if n_studies is not None else "."))
    return "\n".join(lines) + "\n"


def flat_metrics(summary: pd.DataFrame, net: str, metrics: Sequence[str] = METRICS) -> dict[str, float]:
    """``{"<roi>_<metric>_mean": value, ...}`` of one net (for MLflow), NaNs dropped."""
    out = {}
    for _, r in summary[summary["net"] == net].iterrows():
        for m in metrics:
            for stat, col in (("mean", f"{m}_mean"), ("sd", f"{m}_sd_slices")):
                v = r[col]
                if not math.isnan(v):
                    out[f"test_{r['roi']}_{m}_{stat}"] = float(v)
    return out
