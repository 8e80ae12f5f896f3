"""``answers.md``: what the study-level tables say, in sentences, without overstating them.

For the pre-specified primary endpoint: the direction and size of every comparison with its
interval, n and Holm p; which results survive the correction, whichever way they point; and how
many studies a given difference would need (paired t power from the observed per-study SD).
Then the ablation family (same skips, with and without fusion maps) and, labelled as secondary
and descriptive, the endpoint metric on every ROI.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from colearn_pipeline.evaluation.comparison import ComparisonSettings, primary_rows
from colearn_pipeline.evaluation.statistics import paired_t_n_for_power

#: What each net is, for readers who do not know the names (TB and tb_skips are different nets).
NET_DESCRIPTIONS: dict[str, str] = {
    "tb": "the paper's two-branch baseline, decoding from the deepest level without skips",
    "tc": "the paper's two-channel baseline",
    "fs": "the paper's pixel-intermixed baseline",
    "tb_skips": "ablation: two branches with the co-learning net's skip inputs, i.e. co-learning with every "
                "fusion map fixed to 1",
    "tb_skips_conv": "ablation: TB + skips plus the co-learning unit's conv added instead of multiplied, "
                     "capacity-matched",
}


@dataclass(frozen=True)
class PowerTarget:
    """The difference (fraction, 0.02 = 2 points) a future study should detect, and with what power."""

    difference: float
    power: float


def _fmt_points(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{100 * v:.1f}"


def _effect(r: pd.Series, ref: str, metric: str, confidence: float) -> str:
    """'our method is 4.7 Dice points lower (Δ -4.7, 95 % CI -8.6 to -0.5, n = 14 studies, ...)'."""
    n = 0 if math.isnan(r["n_pairs"]) else int(r["n_pairs"])
    if n < 2:
        return f"not estimable (n = {n} paired studies)"
    d = float(r["difference"])
    size = f"{abs(100 * d):.1f} {metric.capitalize()} points {'higher' if d > 0 else 'lower'}" if d else "equal"
    holm = f", Holm p {_p(r['p_holm'])}" if not math.isnan(r["p_holm"]) else ""
    return (f"{ref} is {size} (Δ {100 * d:+.1f}, {100 * confidence:g} % CI {100 * r['ci_low']:+.1f} to "
            f"{100 * r['ci_high']:+.1f}, n = {n} studies, paired t p {_p(r['p_t_studies'])}{holm})")


def _p(v: float) -> str:
    return "n/a" if v is None or math.isnan(v) else (f"{v:.3g}" if v >= 0.001 else "< 0.001")


def _label(labels: Mapping[str, str], net: str) -> str:
    return labels.get(net, net)


def family_lines(table: pd.DataFrame, labels: Mapping[str, str], settings: ComparisonSettings) -> list[str]:
    """One line per comparison of the primary family, and the line of what survives Holm."""
    ref = _label(labels, settings.reference)
    family = primary_rows(table, settings.reference)
    lines = []
    for _, r in family.iterrows():
        what = NET_DESCRIPTIONS.get(r["net"])
        other = _label(labels, r["net"]) + (f" ({what})" if what else "")
        lines.append(f"- vs {other}: {_effect(r, ref, settings.primary_metric, settings.confidence)}.")
    survivors = family[family["significant"]]
    if family.empty:
        lines.append("- No comparison of the primary endpoint in this table.")
    elif survivors.empty:
        lines.append(f"- Surviving Holm correction over these {len(family)} comparisons (alpha {settings.alpha:g}): "
                     "none. No difference on the primary endpoint is established at this n (which is not evidence "
                     "of no difference: see the intervals).")
    else:
        parts = [f"{ref} {'better' if r['difference'] > 0 else 'worse'} than {_label(labels, r['net'])} "
                 f"(Δ {100 * r['difference']:+.1f}, Holm p {_p(r['p_holm'])})" for _, r in survivors.iterrows()]
        lines.append(f"- Surviving Holm correction over these {len(family)} comparisons (alpha {settings.alpha:g}): "
                     + "; ".join(parts) + ".")
    return lines


def power_line(table: pd.DataFrame, labels: Mapping[str, str], settings: ComparisonSettings,
               target: PowerTarget) -> str:
    """How many studies a ``target.difference`` would need, from each comparison's per-study SD."""
    family = primary_rows(table, settings.reference)
    alpha = settings.alpha / max(1, len(family))
    needs = []
    for _, r in family.iterrows():
        sd = float(r["sd_differences"])
        if math.isnan(sd) or sd <= 0:
            needs.append(f"{_label(labels, r['net'])}: SD not estimable")
            continue
        n = paired_t_n_for_power(target.difference, sd, target.power, alpha)
        needs.append(f"{_label(labels, r['net'])}: SD {_fmt_points(sd)} points, n = {n}")
    if not needs:
        return "- Power: no primary comparison to base it on."
    have = int(family["n_pairs"].max()) if family["n_pairs"].notna().any() else 0
    metric = settings.primary_metric.capitalize()
    return (f"- Power: to detect a {100 * target.difference:g}-point {metric} difference with "
            f"{100 * target.power:g} % power (two-sided paired t-test at alpha {settings.alpha:g}/{len(family)}, "
            f"Holm's first step; Guenther's formula), given the observed per-study SD of the differences, a study "
            f"would need about: {'; '.join(needs)} test studies (here: {have}).")


def secondary_lines(table: pd.DataFrame, rois: Sequence[str], metric: str, labels: Mapping[str, str],
                    reference: str, alpha: float) -> list[str]:
    """The endpoint metric on every ROI against every net: Δ [CI], n, unadjusted p (descriptive)."""
    lines = []
    for roi in rois:
        rows = table[(table["roi"] == roi) & (table["metric"] == metric) & (table["net"] != reference)]
        parts = [f"vs {_label(labels, r['net'])} {100 * r['difference']:+.1f} [{100 * r['ci_low']:+.1f}, "
                 f"{100 * r['ci_high']:+.1f}] (n {int(r['n_pairs'])}, p {_p(r['p_t_studies'])})"
                 for _, r in rows.iterrows() if not math.isnan(r["difference"])]
        if parts:
            lines.append(f"- {roi}: " + "; ".join(parts) + ".")
    tested = table[(table["net"] != reference) & table["p_t_studies"].notna()]
    if len(tested):
        lines.append(f"- Of all {len(tested)} comparisons of the table, {int((tested['p_t_studies'] < alpha).sum())} "
                     f"have an unadjusted p < {alpha:g} (about {alpha * len(tested):.0f} expected by chance alone).")
    return lines


def _same_net_note(table_ii: pd.DataFrame, ablation: pd.DataFrame | None, labels: Mapping[str, str]) -> list[str]:
    """A warning where Table II's TB and the ablation's tb_skips gave identical numbers (one net twice)."""
    if ablation is None or "tb" not in set(table_ii["net"]) or "tb_skips" not in set(ablation["net"]):
        return []
    columns = ["mean", "sd_studies", "difference", "sd_differences"]
    a = table_ii[table_ii["net"] == "tb"].set_index(["roi", "metric"])[columns]
    b = ablation[ablation["net"] == "tb_skips"].set_index(["roi", "metric"])[columns]
    common = a.index.intersection(b.index)
    if len(common) and a.loc[common].equals(b.loc[common]):
        return [f"- Note: {_label(labels, 'tb')} and {_label(labels, 'tb_skips')} gave identical numbers: here they "
                "are the same net (model.baseline_skips: true), not two comparisons."]
    return []


def answers_markdown(
    table_ii: pd.DataFrame,
    ablation: pd.DataFrame | None,
    settings: ComparisonSettings,
    labels: Mapping[str, str],
    target: PowerTarget,
    rois: Sequence[str],
    n_seeds: int,
    slices: str,
) -> str:
    """The whole ``answers.md``: primary endpoint, what survives, power, ablation, secondary rows."""
    ref = _label(labels, settings.reference)
    lines = [
        f"# Does co-learning help? ({settings.primary_metric}, study-level, {n_seeds} seed(s), "
        f"scored slices: {slices})",
        "",
        f"## Primary endpoint (pre-specified): {settings.primary_roi} {settings.primary_metric}, {ref} against "
        "each net of Table II",
        "",
        f"Per test study the mean over its scored slices and the {n_seeds} seed(s); Δ = {ref} − other, in "
        f"{settings.primary_metric.capitalize()} points; t interval of the per-study differences; Holm over this "
        "family only.",
        "",
        *family_lines(table_ii, labels, settings),
        power_line(table_ii, labels, settings, target),
    ]
    if ablation is not None and len(ablation):
        lines += ["", f"## Ablation: same skips, with and without fusion maps ({settings.primary_roi} "
                  f"{settings.primary_metric}, its own Holm family)", "", *family_lines(ablation, labels, settings),
                  *_same_net_note(table_ii, ablation, labels)]
    lines += ["", f"## Secondary and descriptive: {settings.primary_metric} on every ROI (Table II; unadjusted, "
              "not for inference)", "",
              *secondary_lines(table_ii, rois, settings.primary_metric, labels, settings.reference, settings.alpha)]
    return "\n".join(lines) + "\n"
