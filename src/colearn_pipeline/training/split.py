"""Study-level train/test split and the two training folds of the parameter validation."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

SPLIT_FORMAT = "colearn-pipeline-split/1"


def make_split(
    studies: Iterable[str],
    test_fraction: float = 0.2,
    n_folds: int = 2,
    seed: int = 0,
) -> dict:
    """Split studies (never slices) into training and test sets and the training set into folds.

    Parameters
    ----------
    studies : iterable of str
        Study pseudonyms. Order does not matter: they are sorted first so the split depends on
        the set of studies and the seed only.
    test_fraction : float
        Fraction of studies held out for testing; 0.2 gives the paper's 40 / 10 for 50 studies.
        The number of test studies is ``round(n * test_fraction)``, at least 1, and leaves at
        least ``n_folds`` training studies.
    n_folds : int
        Number of folds the training studies are divided into (2 in the paper's supplement, SI).
        Fold sizes differ by at most one study (equal when the training count divides evenly).
    seed : int
        Seed of the random permutation (``numpy.random.default_rng``).

    Returns
    -------
    dict
        JSON-serialisable: ``format``, ``seed``, ``test_fraction``, ``n_folds``, ``train`` and
        ``test`` (sorted lists of pseudonyms) and ``folds`` (list of sorted lists).

    Raises
    ------
    ValueError
        If the studies are not unique, or too few to give one test study and ``n_folds``
        training studies.
    """
    names = sorted(str(s) for s in studies)
    if len(set(names)) != len(names):
        raise ValueError("study names are not unique")
    n = len(names)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if n < n_folds + 1:
        raise ValueError(f"need at least {n_folds + 1} studies for a split, got {n}")
    n_test = int(round(n * test_fraction))
    n_test = min(max(n_test, 1), n - n_folds)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    test = sorted(names[i] for i in order[:n_test])
    train_unsorted = [names[i] for i in order[n_test:]]
    fold_order = rng.permutation(len(train_unsorted))
    folds = [
        sorted(train_unsorted[i] for i in chunk)
        for chunk in np.array_split(fold_order, n_folds)
    ]
    return {
        "format": SPLIT_FORMAT,
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "n_folds": int(n_folds),
        "train": sorted(train_unsorted),
        "test": test,
        "folds": folds,
    }


def check_split(split: dict) -> None:
    """Raise ``ValueError`` if a split puts one study on two sides or folds do not cover training.

    Parameters
    ----------
    split : dict
        As returned by :func:`make_split` (or loaded from its JSON).
    """
    train, test = set(split["train"]), set(split["test"])
    if train & test:
        raise ValueError(f"studies in both training and test sets: {sorted(train & test)}")
    seen: set[str] = set()
    for fold in split["folds"]:
        if seen & set(fold):
            raise ValueError("a study is in two folds")
        seen |= set(fold)
    if seen != train:
        raise ValueError("the folds do not partition the training studies")
