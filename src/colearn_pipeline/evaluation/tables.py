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


#: Lesion-level metrics that are fractions (shown in %); the others are mL, counts or SUV.
FRACTION_LESION_METRICS: tuple[str, ...] = ("dice_3d", "lesion_sensitivity")


def lesion_table_markdown(table: pd.DataFrame, title: str, labels: Mapping[str, str], reference: str,
                          confidence: float) -> str:
    """Markdown of a study-level table of the lesion-level metrics (``evaluation.lesions``).

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`colearn_pipeline.evaluation.comparison.study_level_table` of the lesion metrics.
    title : str
        Heading.
    labels : mapping
        Display names of the nets.
    reference : str
        The reference net (its rows carry no difference).
    confidence : float
        Level of the table's intervals.

    Returns
    -------
    str
        One row per metric and net: mean ± SD over studies, SD over seeds, n, the paired
        difference with its interval and p-values; Dice and sensitivity in %, volumes in mL.
    """
    ref = labels.get(reference, reference)
    head = ["metric", "CNN", "mean ± SD (studies)", "SD (seeds)", "n studies",
            f"Δ {ref} − CNN [{100 * confidence:g} % CI]", "p (t)", "p (Holm)"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 6) + "|"]

    def fmt(v: float, scale: float) -> str:
        return "n/a" if v is None or not np.isfinite(v) else f"{scale * v:.2f}"

    def p(v: float) -> str:
        return "" if v is None or not np.isfinite(v) else (f"{v:.3g}" if v >= 0.001 else "<0.001")

    previous = None
    for _, r in table.iterrows():
        scale = 100.0 if r["metric"] in FRACTION_LESION_METRICS else 1.0
        name = r["metric"] + (" (%)" if scale == 100.0 else "")
        shown = name if r["metric"] != previous else ""
        previous = r["metric"]
        is_ref = r["net"] == reference
        interval = f"[{fmt(r['ci_low'], scale)}, {fmt(r['ci_high'], scale)}]"
        diff = "" if is_ref else f"{fmt(r['difference'], scale)} {interval}"
        lines.append("| " + " | ".join([
            shown, labels.get(r["net"], r["net"]), f"{fmt(r['mean'], scale)} ± {fmt(r['sd_studies'], scale)}",
            fmt(r["sd_seeds"], scale), str(r["n_studies"]), diff, "" if is_ref else p(r["p_t_studies"]),
            "" if is_ref else p(r["p_holm"]),
        ]) + " |")
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    lines += ["", (f"Per test study on every thorax slice, averaged over {n_seeds} training seed(s); secondary and "
                   "descriptive. dice_3d: foreground Dice of the 3D tumour masks; fpv_ml / fnv_ml: autoPET "
                   "false-positive and false-negative volume (components at 18-connectivity on the CT grid); true / "
                   "detected lesions, lesion_sensitivity, false_positive_lesions: per-lesion detection; mtv_*_ml, "
                   "suvmax_*: metabolic tumour volume and SUVmax of the true and predicted masks. Per-study rows: "
                   "lesion_metrics.csv.")]
    return "\n".join(lines) + "\n"


def scoring_comparison_markdown(per_slice: pd.DataFrame, nets: Sequence[str], roi: str = "tumours",
                                metrics: Sequence[str] = ("precision", "specificity", "dice")) -> str:
    """What scoring every thorax slice changes against scoring the tumour slices only.

    Parameters
    ----------
    per_slice : pandas.DataFrame
        Per-slice metrics with ``net``, ``seed``, ``study``, ``roi``, ``has_tumour`` and ``metrics``.
    nets : sequence of str
        Rows, in order.
    roi : str
        The ROI compared.
    metrics : sequence of str
        Columns.

    Returns
    -------
    str
        A Markdown table: per net and metric the study-level mean (per study over its slices, then
        over seeds and studies) on every scored slice and on the tumour slices, in %.
    """
    sel = per_slice[(per_slice["roi"] == roi) & per_slice["net"].isin(list(nets))]

    def study_level(df: pd.DataFrame) -> pd.DataFrame:
        return df.groupby(["net", "seed", "study"])[list(metrics)].mean().groupby(["net", "study"]).mean() \
            .groupby("net").mean()

    every, tumour = study_level(sel), study_level(sel[sel["has_tumour"].astype(bool)])
    head = ["CNN"] + [f"{m} {which}" for m in metrics for which in ("all thorax", "tumour slices")]
    lines = [f"## {roi}: every thorax slice vs the tumour slices (study-level means, %)", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for net in nets:
        if net not in every.index:
            continue
        cells = [f"{100 * every.loc[net, m]:.2f} | {100 * tumour.loc[net, m]:.2f}" if net in tumour.index
                 else f"{100 * every.loc[net, m]:.2f} | n/a" for m in metrics]
        lines.append(f"| {NET_LABELS.get(net, net)} | " + " | ".join(cells) + " |")
    n_all, n_t = sel["has_tumour"].size, int(sel["has_tumour"].astype(bool).sum())
    lines += ["", (f"{n_all} scored slice rows, {n_t} of them with tumour in the ground truth (all nets, seeds, "
                   "partitions). A tumour-free slice has NaN tumour Dice and sensitivity unless tumour is predicted "
                   "there (then Dice and precision 0): all-slice scoring shows the false positives that the "
                   "tumour-slice protocol cannot see.")]
    return "\n".join(lines) + "\n"
