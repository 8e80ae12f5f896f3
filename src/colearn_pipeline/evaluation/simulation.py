"""Null simulation of a test set (studies x slices) to measure the tests' false-positive rates.

Used by the calibration test and by ``python -m colearn_pipeline.evaluation.simulation``, which
prints the rates quoted in docs/train_eval.md.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import stats

from colearn_pipeline.evaluation.statistics import paired_t_pvalues, wilcoxon_pvalues


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
    slice_p = stats.ttest_ind(nets[0].reshape(n_tables, -1), nets[1].reshape(n_tables, -1), axis=-1).pvalue
    return {
        "study_paired_t": float(np.mean(paired_t_pvalues(diff) < alpha)),
        "study_wilcoxon": float(np.mean(wilcoxon_pvalues(diff) < alpha)),
        "slice_two_sample_t": float(np.mean(slice_p < alpha)),
    }


def main(argv: list[str] | None = None) -> int:
    """Print the rejection rates for several interaction SDs as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--studies", type=int, default=10)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--interaction-sd", type=float, nargs="+", default=[0.0, 0.3, 0.5, 1.0])
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args(argv)
    for sd in args.interaction_sd:
        rates = simulate_null_tables(args.tables, args.studies, args.slices, sd, args.seed)
        print(json.dumps({"interaction_sd": sd, **rates}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
