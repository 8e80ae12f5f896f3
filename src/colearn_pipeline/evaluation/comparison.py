"""Study-level Table II: per-study means, seed averaging, paired comparisons, a primary endpoint.

Input is the long per-slice metrics table of every net and training seed (columns ``net``,
``seed``, ``study``, ``roi`` and the metrics, as written by the ``train_eval`` pipeline). The
unit of analysis is the study (docs/train_eval.md, "Statistics"):

1. per (net, seed, study, ROI) the mean of each metric over the study's slices (NaN skipped);
2. per (net, study, ROI) the mean over seeds;
3. pivot to one column per net; per (ROI, metric) the reference net against each other net:
   paired per-study differences over the studies both have, their mean with a t interval,
   paired t-test, Wilcoxon signed-rank, and a bootstrap CI where n is large enough;
4. the *primary endpoint* (one ROI and metric, named in conf) against every other net of the
   table is the only family tested for inference: Holm-Bonferroni over those few comparisons.
   Every other row is secondary and descriptive (unadjusted p, no star).

The calibration simulation (:mod:`colearn_pipeline.evaluation.simulation`) runs steps 1-4
through the same functions (:func:`study_means`, :func:`seed_averaged`, :func:`study_pivot`,
:func:`paired_statistics`, ``holm_adjust``) with a replicate key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation.statistics import (
    BOOTSTRAP_MIN_STUDIES,
    bootstrap_mean_ci,
    holm_adjust,
    paired_t_pvalues,
    t_mean_ci,
    wilcoxon_pvalues,
)

KEYS = ("net", "seed", "study", "roi")
PRIMARY, SECONDARY = "primary", "secondary"
#: Columns of the paired comparison (NaN on the reference net's own rows).
PAIRED_COLUMNS = ("n_pairs", "difference", "sd_differences", "ci_low", "ci_high", "boot_low", "boot_high",
                  "p_t_studies", "p_wilcoxon_studies")


@dataclass(frozen=True)
class ComparisonSettings:
    """How a study-level table is computed (``evaluation`` block of the train_eval conf).

    ``primary_roi`` and ``primary_metric`` name the pre-specified primary endpoint; the
    reference net against each other net of the table on it is the Holm family.
    """

    reference: str
    alpha: float
    n_bootstrap: int
    bootstrap_seed: int
    confidence: float
    primary_roi: str
    primary_metric: str


def study_means(per_slice: pd.DataFrame, metrics: Sequence[str], keys: Sequence[str] = KEYS) -> pd.DataFrame:
    """Long table of per-(net, seed, study, ROI) means: columns ``keys``, ``metric``, ``value``,
    ``n_slices`` (slices with a defined value). Extra ``keys`` (e.g. a simulation's replicate)
    are carried through."""
    grouped = per_slice.groupby(list(keys), sort=False)[list(metrics)]
    means = grouped.mean().melt(ignore_index=False, var_name="metric", value_name="value")
    counts = grouped.count().melt(ignore_index=False, var_name="metric", value_name="n_slices")
    out = means.reset_index()
    out["n_slices"] = counts["n_slices"].to_numpy()
    return out


def seed_averaged(means: pd.DataFrame) -> pd.DataFrame:
    """Per (every key but ``seed``, metric): the mean over seeds and the slices behind one seed."""
    keys = [c for c in means.columns if c not in ("seed", "value", "n_slices")]
    g = means.groupby(keys, sort=False)
    return g.agg(value=("value", "mean"), n_slices=("n_slices", "max")).reset_index()


def study_pivot(averaged: pd.DataFrame, index: Sequence[str] = ("roi", "metric")) -> pd.DataFrame:
    """Seed-averaged study means, one column per net, rows ``(*index, study)``."""
    return averaged.pivot_table(index=[*index, "study"], columns="net", values="value", aggfunc="first",
                                dropna=False)


def paired_statistics(differences: np.ndarray, settings: ComparisonSettings) -> dict[str, np.ndarray]:
    """Every paired statistic of per-study differences, vectorised over leading axes.

    Parameters
    ----------
    differences : numpy.ndarray
        ``(..., n)`` reference minus other, one value per study (no NaN).
    settings : ComparisonSettings
        CI level, bootstrap resamples and seed.

    Returns
    -------
    dict
        Arrays of shape ``(...)`` for :data:`PAIRED_COLUMNS`. ``ci_low``/``ci_high`` are the t
        interval; ``boot_low``/``boot_high`` the expanded-percentile bootstrap, NaN below
        ``BOOTSTRAP_MIN_STUDIES`` studies.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[-1]
    lead = d.shape[:-1]
    low, high = t_mean_ci(d, settings.confidence)
    if n >= BOOTSTRAP_MIN_STUDIES:
        boot_low, boot_high = bootstrap_mean_ci(d, settings.n_bootstrap, settings.bootstrap_seed, settings.confidence)
    else:
        boot_low, boot_high = np.full(lead, np.nan), np.full(lead, np.nan)
    return {
        "n_pairs": np.full(lead, n),
        "difference": d.mean(axis=-1) if n else np.full(lead, np.nan),
        "sd_differences": d.std(axis=-1, ddof=1) if n > 1 else np.full(lead, np.nan),
        "ci_low": low, "ci_high": high, "boot_low": boot_low, "boot_high": boot_high,
        "p_t_studies": paired_t_pvalues(d),
        "p_wilcoxon_studies": wilcoxon_pvalues(d),
    }


def _describe(avg: pd.DataFrame, per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per (ROI, metric, net): mean and SD over studies, SD over seeds of the per-seed means, n."""
    keys = ["roi", "metric", "net"]
    ok = avg.dropna(subset=["value"])
    g = ok.groupby(keys)
    out = g.agg(mean=("value", "mean"), n_studies=("value", "size"), n_slices=("n_slices", "sum"))
    out["sd_studies"] = g["value"].std(ddof=1)
    seed_means = per_seed.dropna(subset=["value"]).groupby([*keys, "seed"])["value"].mean()
    by_seed = seed_means.groupby(level=keys)
    out = out.join(by_seed.std(ddof=1).rename("sd_seeds"), how="outer").join(by_seed.size().rename("n_seeds"))
    return out


def _paired_rows(wide: pd.DataFrame, ref: str, others: Sequence[str], settings: ComparisonSettings) -> pd.DataFrame:
    """Paired statistics of ``ref`` against each other net for every (ROI, metric) of ``wide``."""
    rows = []
    for (roi, metric), block in wide.groupby(level=["roi", "metric"], sort=False):
        for other in others:
            both = block[[ref, other]].dropna() if {ref, other} <= set(block.columns) else block.iloc[:0]
            d = (both[ref] - both[other]).to_numpy(dtype=np.float64) if len(both) else np.zeros(0)
            stats = {k: float(v) for k, v in paired_statistics(d, settings).items()}
            rows.append({"roi": roi, "metric": metric, "net": other, **stats})
    return pd.DataFrame(rows, columns=["roi", "metric", "net", *PAIRED_COLUMNS])


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
        Reference net, primary endpoint, alpha, CI level, bootstrap resamples and seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``roi``, ``metric``, ``net``, ``endpoint`` (primary / secondary), ``mean``,
        ``sd_studies``, ``sd_seeds``, ``n_seeds``, ``n_studies``, ``n_slices``, ``n_pairs``,
        ``difference`` (reference minus net, mean over studies), ``sd_differences``,
        ``ci_low``/``ci_high`` (t interval), ``boot_low``/``boot_high`` (bootstrap, n >=
        ``BOOTSTRAP_MIN_STUDIES`` only), ``p_t_studies`` (paired t), ``p_wilcoxon_studies``,
        ``p_holm`` (primary rows only: Holm over the primary family) and ``significant``
        (``p_holm < alpha``; False on secondary rows).
    """
    if settings.reference not in nets:
        raise ValueError(f"reference net {settings.reference!r} is not among the nets {list(nets)}")
    per_slice = per_slice[per_slice["net"].isin(nets) & per_slice["roi"].isin(rois)]
    per_seed = study_means(per_slice, metrics)
    avg = seed_averaged(per_seed)
    others = [n for n in nets if n != settings.reference]
    described = _describe(avg, per_seed)
    paired = _paired_rows(study_pivot(avg), settings.reference, others, settings).set_index(["roi", "metric", "net"])
    rows = []
    for roi in rois:
        for metric in metrics:
            for net in [*others, settings.reference]:
                key = (roi, metric, net)
                row = {"roi": roi, "metric": metric, "net": net}
                row.update(described.loc[key].to_dict() if key in described.index else {})
                row.update(paired.loc[key].to_dict() if key in paired.index else {})
                rows.append(row)
    return _with_primary_family(pd.DataFrame(rows), settings)


def _with_primary_family(table: pd.DataFrame, settings: ComparisonSettings) -> pd.DataFrame:
    for col in ("mean", "sd_studies", "sd_seeds", *PAIRED_COLUMNS):
        if col not in table:
            table[col] = math.nan
    for col in ("n_seeds", "n_studies", "n_slices"):
        table[col] = table[col].fillna(0).astype(int) if col in table else 0
    primary = (table["roi"] == settings.primary_roi) & (table["metric"] == settings.primary_metric)
    table.insert(3, "endpoint", np.where(primary, PRIMARY, SECONDARY))
    tested = primary & (table["net"] != settings.reference)
    table["p_holm"] = math.nan
    table.loc[tested, "p_holm"] = holm_adjust(table.loc[tested, "p_t_studies"].to_numpy(dtype=np.float64))
    table["significant"] = tested & (table["p_holm"] < settings.alpha)
    return table


def primary_rows(table: pd.DataFrame, reference: str) -> pd.DataFrame:
    """The primary family of a study-level table: the primary endpoint's rows without the reference."""
    return table[(table["endpoint"] == PRIMARY) & (table["net"] != reference)]


def _pct(v: float, digits: int = 2, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{100 * v:+.{digits}f}" if sign else f"{100 * v:.{digits}f}"


def _p(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3g}" if v >= 0.001 else "<0.001"


def _interval(r: pd.Series, low: str = "ci_low", high: str = "ci_high") -> str:
    return f"{_pct(r['difference'], sign=True)} [{_pct(r[low], sign=True)}, {_pct(r[high], sign=True)}]"


def _primary_markdown(table: pd.DataFrame, labels: dict, settings: ComparisonSettings) -> list[str]:
    ref = labels.get(settings.reference, settings.reference)
    family = primary_rows(table, settings.reference)
    ref_row = table[(table["endpoint"] == PRIMARY) & (table["net"] == settings.reference)]
    level = f"{100 * settings.confidence:g} %"
    lines = [f"## Primary endpoint: {settings.primary_roi} {settings.primary_metric} (pre-specified)", ""]
    if family.empty:
        return lines + ["No row of this table holds the primary endpoint.", ""]
    ref_mean = ref_row.iloc[0] if len(ref_row) else None
    lines += [f"| CNN | {ref} mean ± SD | CNN mean ± SD | Δ {ref} − CNN [{level} CI] | n studies "
              "| p (paired t, studies) | p (Holm) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for _, r in family.iterrows():
        ref_cell = "n/a" if ref_mean is None else f"{_pct(ref_mean['mean'])} ± {_pct(ref_mean['sd_studies'])}"
        lines.append(f"| {labels.get(r['net'], r['net'])} | {ref_cell} | {_pct(r['mean'])} ± {_pct(r['sd_studies'])} "
                     f"| {_interval(r)} | {int(r['n_pairs']) if r['n_pairs'] == r['n_pairs'] else 0} "
                     f"| {_p(r['p_t_studies'])} | {_p(r['p_holm'])}{'*' if r['significant'] else ''} |")
    lines += ["", f"Holm-Bonferroni over these {len(family)} comparisons only (the pre-specified family); "
              f"* p (Holm) < {settings.alpha:g}. CI: t interval of the mean per-study difference.", ""]
    return lines


def study_table_markdown(table: pd.DataFrame, title: str, labels: dict, settings: ComparisonSettings) -> str:
    """Markdown of :func:`study_level_table`: the primary family, then every row as secondary (%)."""
    ref = labels.get(settings.reference, settings.reference)
    boot = table["boot_low"].notna().any()
    head = ["ROI", "metric", "CNN", "mean ± SD (studies)", "SD (seeds)", "n studies / slices",
            f"Δ {ref} − CNN [{100 * settings.confidence:g} % t CI]", *(["bootstrap CI"] if boot else []),
            "p (paired t, studies)", "p (Wilcoxon, studies)"]
    lines = [f"# {title}", "", *_primary_markdown(table, labels, settings),
             "## Secondary and descriptive: every ROI and metric", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 3 + ["---:"] * (len(head) - 3)) + "|"]
    previous = None
    for _, r in table.iterrows():
        block = (r["roi"], r["metric"])
        roi, metric = (r["roi"], r["metric"]) if block != previous else ("", "")
        previous = block
        is_ref = r["net"] == settings.reference
        cells = [roi, metric, labels.get(r["net"], r["net"]), f"{_pct(r['mean'])} ± {_pct(r['sd_studies'])}",
                 _pct(r["sd_seeds"]), f"{r['n_studies']} / {r['n_slices']}", "" if is_ref else _interval(r)]
        if boot:
            cells.append("" if is_ref or math.isnan(r["boot_low"]) else
                         f"[{_pct(r['boot_low'], sign=True)}, {_pct(r['boot_high'], sign=True)}]")
        cells += ["" if is_ref else _p(r["p_t_studies"]), "" if is_ref else _p(r["p_wilcoxon_studies"])]
        lines.append("| " + " | ".join(cells) + " |")
    n_seeds = int(table["n_seeds"].max()) if len(table) else 0
    lines += [
        "",
        "Study-level analysis: each metric is averaged over a test study's slices, then over "
        f"{n_seeds} training seed(s); mean ± SD over studies, SD (seeds) of the per-seed means over studies.",
        f"Δ: mean paired difference {ref} − CNN over the studies both have, with a {100 * settings.confidence:g} % "
        "t interval of the per-study differences. p: paired t-test and Wilcoxon signed-rank test over studies, "
        "unadjusted. Only the primary endpoint above is tested for inference; these rows are secondary and "
        "descriptive (many correlated comparisons: an unadjusted p < 0.05 among them is expected by chance).",
        "n: studies, and test slices with a defined value behind them (one seed). Values in %.",
    ]
    if boot:
        lines.append(f"Bootstrap CI: expanded-percentile, {settings.n_bootstrap} resamples of studies (seed "
                     f"{settings.bootstrap_seed}), shown from {BOOTSTRAP_MIN_STUDIES} paired studies on, where the "
                     "calibration simulation shows >= 93 % coverage.")
    return "\n".join(lines) + "\n"
