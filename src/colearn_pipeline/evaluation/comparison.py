"""Study-level Table II: per-study means, seed averaging, paired tests, Holm, one-line answers.

Input is the long per-slice metrics table of every net and training seed (columns ``net``,
``seed``, ``study``, ``roi`` and the metrics, as written by the ``train_eval`` pipeline). The
unit of analysis is the study (docs/train_eval.md, "Statistics"):

1. per (net, seed, study, ROI) the mean of each metric over the study's slices (NaN skipped);
2. per (net, study, ROI) the mean over seeds;
3. per (ROI, metric) the reference net against each other net: paired differences of the
   study means over the studies both have, paired t-test, Wilcoxon signed-rank, bootstrap CI;
4. Holm-Bonferroni over every comparison of one table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation.statistics import (
    bootstrap_mean_ci,
    holm_adjust,
    paired_t_pvalues,
    wilcoxon_pvalues,
)

KEYS = ("net", "seed", "study", "roi")
#: Below this many paired studies the table warns that its bootstrap CIs under-cover.
SMALL_N_STUDIES = 8


@dataclass(frozen=True)
class ComparisonSettings:
    """How a study-level table is computed (``evaluation`` block of the train_eval conf)."""

    reference: str
    alpha: float
    n_bootstrap: int
    bootstrap_seed: int
    confidence: float


def study_means(per_slice: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Long table of per-(net, seed, study, ROI) means: columns ``KEYS``, ``metric``, ``value``,
    ``n_slices`` (slices with a defined value)."""
    grouped = per_slice.groupby(list(KEYS), sort=False)[list(metrics)]
    means = grouped.mean().melt(ignore_index=False, var_name="metric", value_name="value")
    counts = grouped.count().melt(ignore_index=False, var_name="metric", value_name="n_slices")
    out = means.reset_index()
    out["n_slices"] = counts["n_slices"].to_numpy()
    return out


def _seed_averaged(means: pd.DataFrame) -> pd.DataFrame:
    """Per (net, study, ROI, metric): mean over seeds and the slices behind one seed."""
    g = means.groupby(["net", "study", "roi", "metric"], sort=False)
    return g.agg(value=("value", "mean"), n_slices=("n_slices", "max")).reset_index()


def _describe(avg: pd.DataFrame, per_seed: pd.DataFrame, net: str, roi: str, metric: str) -> dict:
    sel = avg[(avg["net"] == net) & (avg["roi"] == roi) & (avg["metric"] == metric)].dropna(subset=["value"])
    seeds = per_seed[(per_seed["net"] == net) & (per_seed["roi"] == roi) & (per_seed["metric"] == metric)]
    seed_means = seeds.groupby("seed")["value"].mean().dropna()
    v = sel["value"].to_numpy()
    return {
        "mean": float(v.mean()) if v.size else math.nan,
        "sd_studies": float(v.std(ddof=1)) if v.size > 1 else math.nan,
        "sd_seeds": float(seed_means.std(ddof=1)) if seed_means.size > 1 else math.nan,
        "n_seeds": int(seed_means.size),
        "n_studies": int(v.size),
        "n_slices": int(sel["n_slices"].sum()),
    }


def _paired(avg: pd.DataFrame, ref: str, other: str, roi: str, metric: str, s: ComparisonSettings) -> dict:
    sel = avg[(avg["roi"] == roi) & (avg["metric"] == metric) & avg["net"].isin([ref, other])]
    wide = sel.pivot(index="study", columns="net", values="value").dropna()
    if ref not in wide or other not in wide:
        wide = pd.DataFrame(columns=[ref, other], dtype=float)
    d = (wide[ref] - wide[other]).to_numpy(dtype=np.float64)
    low, high = bootstrap_mean_ci(d, s.n_bootstrap, s.bootstrap_seed, s.confidence)
    return {
        "n_pairs": int(d.size),
        "difference": float(d.mean()) if d.size else math.nan,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_ttest": float(paired_t_pvalues(d)),
        "p_wilcoxon": float(wilcoxon_pvalues(d)),
    }


def study_level_table(
    per_slice: pd.DataFrame,
    nets: Sequence[str],
    rois: Sequence[str],
    metrics: Sequence[str],
    settings: ComparisonSettings,
) -> pd.DataFrame:
    """The study-level comparison table (one row per ROI, metric and net; values as fractions).

    Parameters
    ----------
    per_slice : pandas.DataFrame
        Long per-slice metrics with columns ``net``, ``seed``, ``study``, ``roi`` and ``metrics``.
    nets : sequence of str
        Nets of this table, the reference among them (its rows carry no test).
    rois, metrics : sequence of str
        Row blocks and metrics.
    settings : ComparisonSettings
        Reference net, alpha, bootstrap resamples and seed, CI level.

    Returns
    -------
    pandas.DataFrame
        Columns ``roi``, ``metric``, ``net``, ``mean``, ``sd_studies``, ``sd_seeds``,
        ``n_seeds``, ``n_studies``, ``n_slices``, ``n_pairs``, ``difference`` (reference minus
        net), ``ci_low``, ``ci_high``, ``p_ttest``, ``p_wilcoxon``, ``p_holm`` (over every
        t-test of the table) and ``significant`` (``p_holm < alpha``).
    """
    if settings.reference not in nets:
        raise ValueError(f"reference net {settings.reference!r} is not among the nets {list(nets)}")
    per_slice = per_slice[per_slice["net"].isin(nets)]
    per_seed = study_means(per_slice, metrics)
    avg = _seed_averaged(per_seed)
    ordered = [n for n in nets if n != settings.reference] + [settings.reference]
    rows = []
    for roi in rois:
        for metric in metrics:
            for net in ordered:
                row = {"roi": roi, "metric": metric, "net": net, **_describe(avg, per_seed, net, roi, metric)}
                if net != settings.reference:
                    row.update(_paired(avg, settings.reference, net, roi, metric, settings))
                rows.append(row)
    table = pd.DataFrame(rows)
    for col in ("n_pairs", "difference", "ci_low", "ci_high", "p_ttest", "p_wilcoxon"):
        if col not in table:
            table[col] = math.nan
    table["p_holm"] = holm_adjust(table["p_ttest"].to_numpy(dtype=np.float64))
    table["significant"] = table["p_holm"] < settings.alpha
    return table


def _pct(v: float, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"


def _p(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}" if v >= 0.001 else "<0.001"


def study_table_markdown(table: pd.DataFrame, title: str, labels: Mapping[str, str], settings: ComparisonSettings) -> str:
    """Markdown of :func:`study_level_table`: one row per ROI, metric and net, values in %."""
    ref = labels.get(settings.reference, settings.reference)
    head = ["ROI", "metric", "CNN", "mean ± SD (studies)", "SD (seeds)", "n studies / slices",
            f"Δ {ref} − CNN [{100 * settings.confidence:g} % CI]", "p (t)", "p (Wilcoxon)", "p (Holm)"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * 7) + "|"]
    previous = None
    for _, r in table.iterrows():
        block = (r["roi"], r["metric"])
        roi, metric = (r["roi"], r["metric"]) if block != previous else ("", "")
        previous = block
        is_ref = r["net"] == settings.reference
        diff = "" if is_ref else f"{_pct(r['difference'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"
        star = "*" if (not is_ref and bool(r["significant"])) else ""
        lines.append("| " + " | ".join([
            roi, metric, labels.get(r["net"], r["net"]),
            f"{_pct(r['mean'])} ± {_pct(r['sd_studies'])}", _pct(r["sd_seeds"]),
            f"{r['n_studies']} / {r['n_slices']}", diff,
            "" if is_ref else _p(r["p_ttest"]), "" if is_ref else _p(r["p_wilcoxon"]),
            "" if is_ref else _p(r["p_holm"]) + star,
        ]) + " |")
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    lines += [
        "",
        "Study-level analysis (primary). Each metric is averaged over a test study's slices, then over "
        f"{n_seeds} training seed(s); mean ± SD over studies, SD (seeds) of the per-seed means over studies.",
        f"Δ: mean paired difference {ref} − CNN over the studies both have, with a {100 * settings.confidence:g} % "
        f"expanded-percentile bootstrap CI ({settings.n_bootstrap} resamples of studies, seed "
        f"{settings.bootstrap_seed}). p (t): paired t-test; p (Wilcoxon): signed-rank test; p (Holm): "
        f"t-test p adjusted by Holm-Bonferroni over all {int(table['p_ttest'].notna().sum())} comparisons of this "
        f"table; * p (Holm) < {settings.alpha:g}.",
        "n: studies, and test slices with a defined value behind them (one seed). Values in %.",
    ]
    pairs = table["n_pairs"].dropna()
    if len(pairs) and pairs.min() < SMALL_N_STUDIES:
        lines.append(
            f"Caution: with fewer than {SMALL_N_STUDIES} paired studies a bootstrap CI under-covers (simulated 95 % "
            "CI coverage 75 % at n = 3, 93 % at n = 5) and the Wilcoxon test cannot reach p < 0.25 at n = 3: "
            "read such CIs as descriptive; use K-fold (split.mode: kfold) to test every study."
        )
    return "\n".join(lines) + "\n"


def _sentence_part(table: pd.DataFrame, roi: str, metric: str, other: str, labels: Mapping[str, str]) -> str:
    r = table[(table["roi"] == roi) & (table["metric"] == metric) & (table["net"] == other)]
    if r.empty or math.isnan(float(r["difference"].iloc[0])):
        return f"no comparison with {labels.get(other, other)} (no paired studies)"
    r = r.iloc[0]
    if int(r["n_pairs"]) < 2:
        return (f"cannot be tested against {labels.get(other, other)} (n = {int(r['n_pairs'])} study; "
                f"Δ {metric} {100 * r['difference']:+.1f} points)")
    verdict = "beats" if r["significant"] and r["difference"] > 0 else (
        "is worse than" if r["significant"] else "is not distinguishable from")
    return (
        f"{verdict} {labels.get(other, other)} (Δ {metric} {100 * r['difference']:+.1f} points, "
        f"95 % CI {100 * r['ci_low']:+.1f} to {100 * r['ci_high']:+.1f}, Holm p {_p(r['p_holm'])}, "
        f"n = {int(r['n_pairs'])} studies)"
    )


def answer_sentences(
    main: pd.DataFrame,
    ablation: pd.DataFrame | None,
    rois: Sequence[str],
    metric: str,
    baselines: Sequence[str],
    ablation_net: str,
    labels: Mapping[str, str],
    reference: str,
) -> list[str]:
    """One sentence per ROI: does ``reference`` beat the best baseline, and ``ablation_net``?

    The best baseline of an ROI is the baseline with the highest study-level mean of ``metric``.
    """
    out = []
    ref = labels.get(reference, reference)
    for roi in rois:
        cand = main[(main["roi"] == roi) & (main["metric"] == metric) & main["net"].isin(baselines)]
        if cand.empty or cand["mean"].isna().all():
            continue
        best = str(cand.loc[cand["mean"].idxmax(), "net"])
        text = f"{roi}: {ref} {_sentence_part(main, roi, metric, best, labels)} (the best baseline)"
        if ablation is not None and ablation_net in set(ablation["net"]):
            text += f", and {_sentence_part(ablation, roi, metric, ablation_net, labels)}"
        out.append(text + ".")
    return out
