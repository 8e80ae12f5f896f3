"""Patient-level train/test split (holdout or K-fold) and the training folds of the parameter
validation.

A split is a JSON-serialisable dict. ``outer`` lists the train/test partitions the nets are
trained and tested on: one for ``mode: holdout`` (the paper's 40 / 10), ``k`` for
``mode: kfold`` (every study tested exactly once). Each partition carries ``folds``, the
training studies divided for the parameter validation. The top-level ``train``, ``test`` and
``folds`` repeat the first partition (what the ``validate`` pipeline uses).

Studies are assigned by *patient*: all studies of one patient (``patients``: study pseudonym ->
patient pseudonym, :func:`colearn_pipeline.dicom.pseudonym.patient_pseudonym`) go to the same
side of every partition and into the same validation fold, so a follow-up study never puts its
patient on both sides. With one study per patient the split is the study-level split of before.
``patients`` is stored in the split (pseudonyms only).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

SPLIT_FORMAT = "colearn-pipeline-split/1"


def _units(names: Sequence[str], patients: Mapping[str, str] | None) -> tuple[list[list[str]], dict[str, str]]:
    """Patients as lists of their (sorted) studies, ordered by their first study, and the full mapping.

    A study missing from ``patients`` is a patient of its own (named by its pseudonym).
    """
    mapping = {n: str((patients or {}).get(n) or n) for n in names}
    groups: dict[str, list[str]] = {}
    for name in names:  # names are sorted, so each group is sorted and groups come in first-study order
        groups.setdefault(mapping[name], []).append(name)
    return list(groups.values()), mapping


def _cut(units: Sequence[Sequence[str]], order: Sequence[int], parts: int) -> list[list[str]]:
    """Cut the units, in ``order``, into ``parts`` consecutive groups of about equal study counts.

    The cut points are those of ``numpy.array_split`` over the studies (sizes differ by at most one
    when every unit is one study), each moved to the nearest unit boundary.
    """
    sizes = np.array([len(units[i]) for i in order])
    bounds = np.cumsum([0, *sizes])
    targets = np.cumsum([len(c) for c in np.array_split(np.arange(bounds[-1]), parts)])[:-1]
    cuts = [int(np.abs(bounds - t).argmin()) for t in targets]
    edges = [0, *cuts, len(order)]
    if any(a >= b for a, b in itertools.pairwise(edges)):
        raise ValueError(f"cannot cut {len(order)} patients ({bounds[-1]} studies) into {parts} non-empty groups: "
                         "a patient's studies outweigh a group")
    return [sorted(s for i in order[a:b] for s in units[i]) for a, b in itertools.pairwise(edges)]


def make_split(
    studies: Iterable[str],
    test_fraction: float = 0.2,
    n_folds: int = 2,
    seed: int = 0,
    patients: Mapping[str, str] | None = None,
) -> dict:
    """Split patients (never studies of one patient, never slices) into training and test sets
    and the training set into folds.

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
        Seed of the random permutation (``numpy.random.default_rng``) of the patients.
    patients : mapping, optional
        Study pseudonym -> patient pseudonym; a study not in it is a patient of its own. The test
        set is the first patients of the permutation up to the study count nearest
        ``round(n * test_fraction)``.

    Returns
    -------
    dict
        JSON-serialisable: ``format``, ``seed``, ``test_fraction``, ``n_folds``, ``train`` and
        ``test`` (sorted lists of pseudonyms), ``folds`` (list of sorted lists), ``patients``.

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
    units, mapping = _units(names, patients)
    if len(units) < n_folds + 1:
        raise ValueError(f"need at least {n_folds + 1} patients for a split, got {len(units)} ({n} studies)")
    n_test = min(max(int(round(n * test_fraction)), 1), n - n_folds)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    counts = np.cumsum([len(units[i]) for i in order])
    n_test_units = int(np.clip(np.abs(counts - n_test).argmin() + 1, 1, len(units) - n_folds))
    test = sorted(s for i in order[:n_test_units] for s in units[i])
    train_units = [units[i] for i in order[n_test_units:]]
    folds = _cut(train_units, rng.permutation(len(train_units)), n_folds)
    part = {"train": sorted(s for u in train_units for s in u), "test": test, "folds": folds}
    return {
        "format": SPLIT_FORMAT,
        "mode": "holdout",
        "seed": int(seed),
        "test_fraction": float(test_fraction),
        "n_folds": int(n_folds),
        **part,
        "outer": [part],
        "patients": mapping,
    }


def make_kfold_split(studies: Iterable[str], k: int, n_folds: int = 2, seed: int = 0,
                     patients: Mapping[str, str] | None = None) -> dict:
    """Patient-level K-fold cross-validation: every study is a test study in exactly one partition,
    together with every other study of its patient.

    Parameters
    ----------
    studies : iterable of str
        Study pseudonyms (sorted first, so only the set and the seed matter).
    k : int
        Number of outer folds (test sets); sizes differ by at most one study when every patient
        has one study (otherwise by about a patient's studies).
    n_folds : int
        Folds each partition's training studies are divided into (parameter validation).
    seed : int
        Seed of the permutation (``numpy.random.default_rng``) of the patients.
    patients : mapping, optional
        Study pseudonym -> patient pseudonym (see :func:`make_split`).

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
    units, mapping = _units(names, patients)
    if len(units) < k + n_folds:
        raise ValueError(f"need at least k + n_folds = {k + n_folds} patients for K-fold, got {len(units)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(units))
    outer = []
    for test in _cut(units, order, k):
        train_units = [units[i] for i in order if units[i][0] not in set(test)]
        folds = _cut(train_units, rng.permutation(len(train_units)), n_folds)
        outer.append({"train": sorted(s for u in train_units for s in u), "test": test, "folds": folds})
    return {"format": SPLIT_FORMAT, "mode": "kfold", "seed": int(seed), "k": int(k), "n_folds": int(n_folds),
            **outer[0], "outer": outer, "patients": mapping}


def check_split(split: dict) -> None:
    """Raise ``ValueError`` if a split puts one study on two sides or folds do not cover training.

    Parameters
    ----------
    split : dict
        As returned by :func:`make_split` or :func:`make_kfold_split` (or loaded from JSON).
    """
    patients = split.get("patients") or {}
    for part in [split, *split.get("outer", [])]:
        _check_partition(part)
        _check_patients(part, patients)
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


def _check_patients(part: dict, patients: Mapping[str, str]) -> None:
    """No patient on both sides of a partition, nor in two validation folds."""
    def of(studies: Iterable[str]) -> set[str]:
        return {patients.get(s, s) for s in studies}

    both = of(part["train"]) & of(part["test"])
    if both:
        raise ValueError(f"patients with studies in both training and test sets: {sorted(both)}")
    seen: set[str] = set()
    for fold in part["folds"]:
        if seen & of(fold):
            raise ValueError(f"patients with studies in two validation folds: {sorted(seen & of(fold))}")
        seen |= of(fold)
