"""Every test and interval of the evaluation: study-level paired comparisons (the primary
analysis of Table II) and the paper's slice-level two-sample t-test.

Test slices of one study are not independent (about 16 per patient) and every net is scored on
the same slices, so the unit of analysis is the *study*: each metric is averaged over a study's
slices (and over training seeds), and the co-learning net is compared with another net by the
paired differences of those study means (docs/train_eval.md, "Statistics").

- :func:`paired_t_pvalues`: paired t-test (two-sided) of per-study differences, vectorised.
- :func:`t_mean_ci`: t interval of the mean per-study difference (exact for normal
  differences at any n; the interval the tables report).
- :func:`wilcoxon_pvalues`: Wilcoxon signed-rank test of the same differences (scipy).
- :func:`bootstrap_mean_ci`: CI of the mean difference from a bootstrap that resamples
  studies; the *expanded percentile* interval (Hesterberg 2015, Am. Stat. 69:371). Reported only
  from :data:`BOOTSTRAP_MIN_STUDIES` studies on, where the calibration simulation shows >= 93 %
  coverage (at n = 3 it is the min..max of the differences, about 75 %).
- :func:`holm_adjust`: Holm-Bonferroni step-down adjusted p-values (over all, or along an axis).
- :func:`slice_two_sample_t_pvalue`: the paper's protocol, two-sample t-test over slices
  (kept to reproduce Table II cell for cell; it treats correlated slices as independent).
- :func:`paired_t_power`, :func:`paired_t_n_for_power`: power of the paired t-test and the
  number of studies a given difference needs.
"""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
from scipy import stats

#: Fewest paired studies at which a bootstrap CI is reported: the calibration simulation
#: (tests/test_evaluation_calibration.py) shows >= 93 % coverage of the nominal 95 % there.
BOOTSTRAP_MIN_STUDIES = 10


def paired_t_pvalues(differences: np.ndarray) -> np.ndarray:
    """Two-sided one-sample t-test of mean zero along the last axis (= paired t-test).

    Parameters
    ----------
    differences : numpy.ndarray
        ``(..., n)`` paired differences (no NaN).

    Returns
    -------
    numpy.ndarray
        ``(...)`` p-values; NaN where ``n < 2`` or the differences are all equal.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[-1]
    if n < 2:
        return np.full(d.shape[:-1], np.nan)
    sd = d.std(axis=-1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d.mean(axis=-1) / (sd / math.sqrt(n))
    p = 2.0 * stats.t.sf(np.abs(t), df=n - 1)
    return np.where(sd > 0, p, np.nan)


def t_mean_ci(differences: np.ndarray, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """t interval of the mean along the last axis: ``mean ± t_{n-1, 1-a/2} * sd / sqrt(n)``.

    Parameters
    ----------
    differences : numpy.ndarray
        ``(..., n)`` paired per-study differences (no NaN).
    confidence : float
        Two-sided level.

    Returns
    -------
    tuple of numpy.ndarray
        ``(low, high)``, each ``(...)``; NaN where ``n < 2``. Zero width where the differences
        are all equal.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[-1]
    if n < 2:
        nan = np.full(d.shape[:-1], np.nan)
        return nan, nan.copy()
    half = stats.t.ppf(0.5 + confidence / 2, df=n - 1) * d.std(axis=-1, ddof=1) / math.sqrt(n)
    mean = d.mean(axis=-1)
    return mean - half, mean + half


def wilcoxon_pvalues(differences: np.ndarray) -> np.ndarray:
    """Two-sided Wilcoxon signed-rank p-values along the last axis (``scipy.stats.wilcoxon``).

    Zero differences are dropped (scipy's ``zero_method="wilcox"``); NaN where fewer than one
    non-zero difference remains.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.shape[-1] < 1:
        return np.full(d.shape[:-1], np.nan)
    flat = d.reshape(-1, d.shape[-1])
    out = np.full(flat.shape[0], np.nan)
    nonzero = (flat != 0).any(axis=-1)
    if nonzero.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exact distribution unavailable with ties: normal approx
            out[nonzero] = stats.wilcoxon(flat[nonzero], axis=-1).pvalue
    return out.reshape(d.shape[:-1])


def resample_weights(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of ``n`` studies as weights: ``(n_resamples, n)``, each row sums to 1.

    Row ``b`` holds how often each study was drawn in resample ``b``, divided by ``n``, so the
    resampled means of many difference vectors at once are one matrix product.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n), dtype=np.float64)
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)
    return counts / n


def bootstrap_mean_ci(
    differences: np.ndarray, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Expanded-percentile bootstrap CI of the mean along the last axis, resampling studies.

    The percentile interval of the resampled means is taken at the tail probability
    ``Phi(-sqrt(n / (n - 1)) * t_{n-1, 1 - a/2})`` instead of ``a/2``, which widens it by the
    small-sample factors the plain percentile interval lacks (Hesterberg 2015).

    Parameters
    ----------
    differences : numpy.ndarray
        ``(..., n)`` paired differences of ``n`` studies (no NaN).
    n_resamples : int
        Bootstrap resamples (10,000 in the pipeline's conf).
    seed : int
        Seed of the resampling; the same studies are drawn for every leading index.
    confidence : float
        Two-sided level.

    Returns
    -------
    tuple of numpy.ndarray
        ``(low, high)``, each ``(...)``; NaN where ``n < 2``.
    """
    d = np.asarray(differences, dtype=np.float64)
    n = d.shape[-1]
    if n < 2:
        nan = np.full(d.shape[:-1], np.nan)
        return nan, nan.copy()
    means = d @ resample_weights(n, n_resamples, seed).T  # (..., B)
    a = 1.0 - confidence
    tail = stats.norm.cdf(-math.sqrt(n / (n - 1)) * stats.t.ppf(1 - a / 2, df=n - 1))
    low, high = np.quantile(means, [tail, 1 - tail], axis=-1)
    return low, high


def holm_adjust(pvalues: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values over the non-NaN entries (NaN stay NaN).

    Sorted ascending, ``p_(i)`` becomes ``max_{j <= i} min(1, (m - j + 1) p_(j))`` with ``m`` the
    number of tests.

    Parameters
    ----------
    pvalues : numpy.ndarray
        Unadjusted p-values.
    axis : int, optional
        None: one family of all entries. An axis: one family per slice along it (e.g.
        ``(replicates, comparisons)`` with ``axis=-1`` in the calibration simulation).
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if axis is None:
        return _holm_rows(p.reshape(1, -1)).reshape(p.shape)
    moved = np.moveaxis(p, axis, -1)
    out = _holm_rows(moved.reshape(-1, moved.shape[-1])).reshape(moved.shape)
    return np.moveaxis(out, -1, axis)


def _holm_rows(p: np.ndarray) -> np.ndarray:
    """Holm along the last axis of a 2D array, each row its own family; NaN sort last and stay NaN."""
    m = (~np.isnan(p)).sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1)
    scaled = np.minimum(1.0, (m - np.arange(p.shape[-1])) * ranked)
    adjusted = np.fmax.accumulate(scaled, axis=-1)
    adjusted[np.isnan(ranked)] = np.nan
    out = np.empty_like(p)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def slice_two_sample_t_pvalue(reference: np.ndarray, other: np.ndarray, equal_var: bool = True) -> float:
    """The paper's test: two-sided two-sample t-test of two nets' values over test *slices*.

    Unpaired, every slice counted as an independent observation (``scipy.stats.ttest_ind``);
    NaN values are left out. NaN where either side has fewer than two values. Kept to reproduce
    the paper's Table II; the study-level paired test is the valid one (docs/train_eval.md).
    """
    r = np.asarray(reference, dtype=np.float64)
    o = np.asarray(other, dtype=np.float64)
    r, o = r[~np.isnan(r)], o[~np.isnan(o)]
    if r.size < 2 or o.size < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # identical constant samples: NaN
        return float(stats.ttest_ind(r, o, equal_var=equal_var).pvalue)


def paired_t_power(difference: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Exact power of the two-sided paired t-test (noncentral t, ``scipy.stats.nct``).

    Parameters
    ----------
    difference : float
        True mean per-study difference.
    sd : float
        SD of the per-study differences.
    n : int
        Paired studies.
    alpha : float
        Two-sided level.
    """
    if n < 2 or sd <= 0:
        return math.nan
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)
    shift = difference / sd * math.sqrt(n)
    return float(stats.nct.sf(crit, df, shift) + stats.nct.cdf(-crit, df, shift))


def paired_t_n_for_power(difference: float, sd: float, power: float = 0.8, alpha: float = 0.05) -> int:
    """Studies a two-sided paired t-test needs to detect ``difference`` with ``power``.

    Guenther's (1981, Am. Stat. 35:243) closed form, standard library only:
    ``n = ((z_{1-a/2} + z_{power}) * sd / difference)**2 + z_{1-a/2}**2 / 2``, rounded up (at
    least 2). The second term corrects the normal approximation for the t distribution; the
    result equals the exact noncentral-t answer (G*Power) within one study, e.g. 34 studies for
    a standardised difference of 0.5 and 10 for 1.0 at 80 % power and alpha 0.05.

    Returns
    -------
    int
        Number of paired studies; raises ``ValueError`` for a zero difference or a non-positive SD.
    """
    if difference == 0 or not sd > 0:
        raise ValueError(f"need a non-zero difference and a positive SD, got {difference} and {sd}")
    z = NormalDist()
    z_alpha, z_power = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)
    n = ((z_alpha + z_power) * sd / abs(difference)) ** 2 + z_alpha**2 / 2
    return max(2, math.ceil(n))
