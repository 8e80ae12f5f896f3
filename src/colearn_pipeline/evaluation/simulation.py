"""Calibration simulations of the evaluation's statistics.

- :func:`simulate_null_tables`: false-positive rates of the study-level tests against the paper's
  slice-level test on null tables (studies x slices).
- :func:`simulate_per_slice` and :func:`calibrate`: the whole path of the study-level Table II
  (per-slice table -> study means -> seed average -> pivot -> paired t interval, tests -> Holm
  over the primary family) through the pipeline's own functions, for many replicates at once:
  coverage of the t and bootstrap intervals, family-wise error, power.

Used by tests/test_evaluation_calibration.py and by ``python -m colearn_pipeline.evaluation.simulation``,
which prints the figures quoted in docs/train_eval.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from colearn_pipeline.evaluation.comparison import (
    KEYS,
    ComparisonSettings,
    paired_statistics,
    seed_averaged,
    study_means,
    study_pivot,
)
from colearn_pipeline.evaluation.statistics import (
    bootstrap_mean_ci,
    holm_adjust,
    paired_t_pvalues,
    slice_two_sample_t_pvalue,
    wilcoxon_pvalues,
)


def simulate_null_tables(
    n_tables: int, n_studies: int, n_slices: int, interaction_sd: float, seed: int,
    study_sd: float = 1.0, alpha: float = 0.05,
) -> dict[str, float]:
    """Rejection rates of three tests on tables where two nets do not differ on average.

    The score of net ``j`` on slice ``s`` of study ``i`` is ``u_i + v_ij + e_ijs``: ``u_i`` a
    study effect (SD ``study_sd``), ``v_ij`` a net-by-study interaction (SD ``interaction_sd``),
    ``e_ijs`` slice noise (SD 1). No net effect, so every rejection is a false positive.

    Returns
    -------
    dict
        ``study_paired_t``, ``study_wilcoxon`` (paired tests of the per-study means) and
        ``slice_two_sample_t`` (the paper's protocol: two-sample t-test over slices).
    """
    rng = np.random.default_rng(seed)
    shape = (n_tables, n_studies, 1)
    study = study_sd * rng.standard_normal(shape)
    nets = [study + interaction_sd * rng.standard_normal(shape)
            + rng.standard_normal((n_tables, n_studies, n_slices)) for _ in range(2)]
    diff = nets[0].mean(-1) - nets[1].mean(-1)
    slice_p = np.array([slice_two_sample_t_pvalue(a, b) for a, b in
                        zip(nets[0].reshape(n_tables, -1), nets[1].reshape(n_tables, -1))])
    return {
        "study_paired_t": float(np.mean(paired_t_pvalues(diff) < alpha)),
        "study_wilcoxon": float(np.mean(wilcoxon_pvalues(diff) < alpha)),
        "slice_two_sample_t": float(np.mean(slice_p < alpha)),
    }


@dataclass(frozen=True)
class ScoreModel:
    """SDs of the simulated per-slice score ``mu_net + u_study + v_net,study + w_net,seed,study + e``.

    ``study``: between-study SD (cancels in the paired differences); ``interaction``: net-by-study
    SD (how differently two nets fare on one patient); ``seed``: training-seed SD per study;
    ``slice``: slice noise. All in score units (Dice fractions).
    """

    study: float
    interaction: float
    seed: float
    slice: float


def simulate_per_slice(n_replicates: int, n_studies: int, n_seeds: int, n_slices: int, reference: str,
                       differences: Mapping[str, float], model: ScoreModel, seed: int, base: float = 0.6,
                       roi: str = "tumours", metric: str = "dice") -> pd.DataFrame:
    """Long per-slice tables of many replicate test sets, as the train_eval pipeline writes them.

    Parameters
    ----------
    n_replicates, n_studies, n_seeds, n_slices : int
        Replicate test sets; studies, training seeds and slices per study in each.
    reference : str
        The reference net (mean ``base``).
    differences : mapping
        ``{other net: true reference - other difference}``.
    model : ScoreModel
        Variance components.
    seed : int
        Random seed.

    Returns
    -------
    pandas.DataFrame
        Columns ``replicate``, ``net``, ``seed``, ``study``, ``roi``, ``slice``, ``metric``.
    """
    rng = np.random.default_rng(seed)
    nets = [reference, *differences]
    mu = np.array([base, *(base - d for d in differences.values())])
    r, k = n_replicates, len(nets)
    score = (mu[None, :, None, None, None]
             + model.study * rng.standard_normal((r, 1, 1, n_studies, 1))
             + model.interaction * rng.standard_normal((r, k, 1, n_studies, 1))
             + model.seed * rng.standard_normal((r, k, n_seeds, n_studies, 1))
             + model.slice * rng.standard_normal((r, k, n_seeds, n_studies, n_slices)))
    idx = np.indices(score.shape).reshape(5, -1)
    return pd.DataFrame({
        "replicate": idx[0], "net": np.asarray(nets)[idx[1]], "seed": idx[2],
        "study": np.char.add("s", idx[3].astype(str)), "roi": roi, "slice": idx[4], metric: score.ravel(),
    })


def calibrate(per_slice: pd.DataFrame, settings: ComparisonSettings, differences: Mapping[str, float],
              bootstrap_resamples: int = 2000) -> dict[str, float]:
    """Run the Table II path on every replicate; compare with the true differences.

    The per-slice table goes through :func:`study_means`, :func:`seed_averaged`, :func:`study_pivot`,
    :func:`paired_statistics` and Holm over the family (the reference against every other net on
    ``settings.primary_roi`` / ``primary_metric``), as :func:`study_level_table` does for one test
    set, with ``replicate`` as an extra key.

    Returns
    -------
    dict
        ``coverage_t`` and ``coverage_bootstrap`` (share of intervals, over replicates and
        comparisons, that hold the true difference), ``fwer`` (share of replicates where Holm
        rejects a comparison whose true difference is 0; NaN if there is none), and per net
        ``reject_holm_<net>`` and ``reject_unadjusted_<net>`` (rejection rates at alpha).
    """
    metric = settings.primary_metric
    per_seed = study_means(per_slice, [metric], keys=("replicate", *KEYS))
    wide = study_pivot(seed_averaged(per_seed), index=("replicate", "roi", "metric"))
    ref = wide[settings.reference]
    covered_t, covered_boot, p_t = [], [], []
    for net, true in differences.items():
        d = (ref - wide[net]).unstack("study").to_numpy(dtype=np.float64)  # (replicates, studies)
        stats = paired_statistics(d, settings)
        covered_t.append((stats["ci_low"] <= true) & (true <= stats["ci_high"]))
        low, high = bootstrap_mean_ci(d, bootstrap_resamples, settings.bootstrap_seed, settings.confidence)
        covered_boot.append((low <= true) & (true <= high))
        p_t.append(stats["p_t_studies"])
    p = np.stack(p_t, axis=-1)
    reject = holm_adjust(p, axis=-1) < settings.alpha
    null = np.array([true == 0 for true in differences.values()])
    out = {
        "coverage_t": float(np.mean(covered_t)),
        "coverage_bootstrap": float(np.mean(covered_boot)),
        "fwer": float(np.mean(reject[:, null].any(axis=-1))) if null.any() else float("nan"),
    }
    for j, net in enumerate(differences):
        out[f"reject_holm_{net}"] = float(np.mean(reject[:, j]))
        out[f"reject_unadjusted_{net}"] = float(np.mean(p[:, j] < settings.alpha))
    return out


def calibration_settings(alpha: float = 0.05, confidence: float = 0.95, seed: int = 2026) -> ComparisonSettings:
    """Settings of the calibration runs (primary endpoint: the simulated tumour Dice)."""
    return ComparisonSettings(reference="colearn", alpha=alpha, n_bootstrap=2000, bootstrap_seed=seed,
                              confidence=confidence, primary_roi="tumours", primary_metric="dice")


def main(argv: list[str] | None = None) -> int:
    """Print the rejection rates for several interaction SDs as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--interaction-sd", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--replicates", type=int, default=2000)
    args = parser.parse_args(argv)
    for sd in args.interaction_sd:
        rates = simulate_null_tables(args.tables, args.studies, args.slices, sd, args.seed)
        print(json.dumps({"interaction_sd": sd, **rates}))
    model = ScoreModel(study=0.1, interaction=0.05, seed=0.03, slice=0.15)
    for n in (3, 5, 10, 20):
        diffs = {"tb": 0.0, "tc": 0.0, "fs": 0.05}
        table = simulate_per_slice(args.replicates, n, 2, 4, "colearn", diffs, model, args.seed + n)
        print(json.dumps({"n_studies": n, **calibrate(table, calibration_settings(seed=args.seed), diffs)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
