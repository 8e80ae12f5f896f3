"""Study-level train/test split (holdout or K-fold) and the training folds of the parameter
validation.

A split is a JSON-serialisable dict. ``outer`` lists the train/test partitions the nets are
trained and tested on: one for ``mode: holdout`` (the paper's 40 / 10), ``k`` for
``mode: kfold`` (every study tested exactly once). Each partition carries ``folds``, the
training studies divided for the parameter validation. The top-level ``train``, ``test`` and
``folds`` repeat the first partition (what the ``validate`` pipeline uses).
"""

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
    part = {"train": sorted(train_unsorted), "test": test, "folds": folds}
    return {
        "format": SPLIT_FORMAT,
        "mode": "holdout",
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "n_folds": int(n_folds),
        **part,
        "outer": [part],
    }


def make_kfold_split(studies: Iterable[str], k: int, n_folds: int = 2, seed: int = 0) -> dict:
    """Study-level K-fold cross-validation: every study is a test study in exactly one partition.

    Parameters
    ----------
    studies : iterable of str
        Study pseudonyms (sorted first, so only the set and the seed matter).
    k : int
        Number of outer folds (test sets); sizes differ by at most one study.
    n_folds : int
        Folds each partition's training studies are divided into (parameter validation).
    seed : int
        Seed of the permutation (``numpy.random.default_rng``).

    Returns
    -------
    dict
        As :func:`make_split` with ``mode: "kfold"``, ``k`` and ``k`` entries in ``outer``.
    """
    names = sorted(str(s) for s in studies)
    if len(set(names)) != len(names):
        raise ValueError("study names are not unique")
    if k < 2:
        raise ValueError(f"k must be >= 2 for K-fold, got {k}")
    if len(names) < k + n_folds:
        raise ValueError(f"need at least k + n_folds = {k + n_folds} studies for K-fold, got {len(names)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(names))
    outer = []
    for chunk in np.array_split(order, k):
        test = sorted(names[i] for i in chunk)
        train = [names[i] for i in order if names[i] not in set(test)]
        inner = rng.permutation(len(train))
        folds = [sorted(train[i] for i in part) for part in np.array_split(inner, n_folds)]
        outer.append({"train": sorted(train), "test": test, "folds": folds})
    return {"format": SPLIT_FORMAT, "mode": "kfold", "seed": int(seed), "k": int(k), "n_folds": int(n_folds),
            **outer[0], "outer": outer}


def check_split(split: dict) -> None:
    """Raise ``ValueError`` if a split puts one study on two sides or folds do not cover training.

    Parameters
    ----------
    split : dict
        As returned by :func:`make_split` or :func:`make_kfold_split` (or loaded from JSON).
    """
    for part in [split, *split.get("outer", [])]:
        _check_partition(part)
    if split.get("mode") == "kfold":
        tests = [s for part in split["outer"] for s in part["test"]]
        if len(tests) != len(set(tests)):
            raise ValueError("K-fold: a study is a test study in two partitions")
        if set(tests) != set(split["outer"][0]["train"]) | set(split["outer"][0]["test"]):
            raise ValueError("K-fold: the test sets do not cover every study")


def _check_partition(split: dict) -> None:
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
