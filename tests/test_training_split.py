"""Study-level split: proportions, folds, determinism, and no study on two sides."""

import numpy as np
import pytest

from colearn_pipeline.training import assemble_slices, check_split, make_split
from colearn_pipeline.training.split import make_kfold_split
from synthetic_studies import synthetic_study


def _names(n):
    return [f"study-{i:010x}" for i in range(n)]


def test_paper_proportions_for_50_studies():
    split = make_split(_names(50), test_fraction=0.2, n_folds=2, seed=3)
    assert len(split["train"]) == 40 and len(split["test"]) == 10
    assert [len(f) for f in split["folds"]] == [20, 20]
    assert set(split["train"]).isdisjoint(split["test"])
    assert set().union(*map(set, split["folds"])) == set(split["train"])
    check_split(split)


def test_split_depends_on_seed_and_set_only():
    a = make_split(_names(20), seed=1)
    b = make_split(list(reversed(_names(20))), seed=1)
    c = make_split(_names(20), seed=2)
    assert a == b
    assert a["test"] != c["test"] or a["folds"] != c["folds"]


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_small_cohorts_keep_one_test_study_and_two_folds(n):
    split = make_split(_names(n), seed=0)
    assert len(split["test"]) >= 1
    assert all(len(f) >= 1 for f in split["folds"])
    assert abs(len(split["folds"][0]) - len(split["folds"][1])) <= 1


def test_too_few_or_duplicate_studies_raise():
    with pytest.raises(ValueError):
        make_split(_names(2))
    with pytest.raises(ValueError):
        make_split(["a", "a", "b", "c"])


def test_check_split_detects_overlap():
    split = make_split(_names(10), seed=0)
    bad = dict(split, test=split["test"] + [split["train"][0]])
    with pytest.raises(ValueError, match="both"):
        check_split(bad)


def test_no_study_contributes_slices_to_train_and_test():
    names = _names(6)
    model_input = {n: synthetic_study(n, n_slices=3, size=16, seed=i) for i, n in enumerate(names)}
    split = make_split(names, seed=5)
    train = assemble_slices(model_input, split["train"])
    test = assemble_slices(model_input, split["test"])
    assert set(train["study"]).isdisjoint(set(test["study"]))
    assert len(train["x"]) == 3 * len(split["train"]) and len(test["x"]) == 3 * len(split["test"])
    f1 = assemble_slices(model_input, split["folds"][0])
    f2 = assemble_slices(model_input, split["folds"][1])
    assert set(f1["study"]).isdisjoint(set(f2["study"]))
    # the slices are the studies' own, in order
    first = split["train"][0]
    np.testing.assert_array_equal(train["y"][:3], model_input[first]["labels"])


def _patients(n_studies, follow_ups):
    """Study -> patient: study i belongs to patient i, except the follow-ups {study: study of the same patient}."""
    names = _names(n_studies)
    patients = {s: f"patient-{i:010x}" for i, s in enumerate(names)}
    for study, first in follow_ups.items():
        patients[names[study]] = patients[names[first]]
    return names, patients


def _sides(part, patients):
    return {patients[s] for s in part["train"]}, {patients[s] for s in part["test"]}


@pytest.mark.parametrize("seed", range(8))
def test_two_studies_of_one_patient_land_on_one_side_holdout(seed):
    """The paper's 40 / 10 with follow-ups: every patient's studies in train or in test, and in one fold."""
    names, patients = _patients(50, {40: 3, 41: 17, 42: 29, 43: 3, 44: 8})  # patient 3 has three studies
    split = make_split(names, test_fraction=0.2, n_folds=2, seed=seed, patients=patients)
    check_split(split)
    train, test = _sides(split, patients)
    assert not train & test
    assert len(split["test"]) in (9, 10, 11) and len(split["train"]) + len(split["test"]) == 50
    assert not {patients[s] for s in split["folds"][0]} & {patients[s] for s in split["folds"][1]}
    assert split["patients"] == patients and all(v.startswith("patient-") for v in split["patients"].values())


@pytest.mark.parametrize("seed", range(8))
def test_two_studies_of_one_patient_land_on_one_side_kfold(seed):
    names, patients = _patients(31, {30: 0, 29: 5, 28: 5})
    split = make_kfold_split(names, k=5, n_folds=2, seed=seed, patients=patients)
    check_split(split)
    for part in split["outer"]:
        train, test = _sides(part, patients)
        assert not train & test
        assert not {patients[s] for s in part["folds"][0]} & {patients[s] for s in part["folds"][1]}
    tests = sorted(s for part in split["outer"] for s in part["test"])
    assert tests == sorted(names)  # every study tested once
    sizes = [len(p["test"]) for p in split["outer"]]
    assert max(sizes) - min(sizes) <= 3  # a patient of three studies moves a cut by at most its size


def test_one_study_per_patient_gives_the_study_level_split():
    names = _names(14)
    own = {s: s for s in names}
    assert make_split(names, seed=4, patients=own) == make_split(names, seed=4)
    assert make_kfold_split(names, k=5, seed=4, patients=None) == make_kfold_split(names, k=5, seed=4, patients=own)


def test_check_split_catches_a_patient_on_both_sides():
    names, patients = _patients(10, {})
    split = make_split(names, seed=0, patients=patients)
    split["patients"][split["test"][0]] = patients[split["train"][0]]  # the test study is the same patient
    with pytest.raises(ValueError, match="patients with studies in both"):
        check_split(split)


def test_patient_pseudonym_keyed_and_falls_back_to_the_study():
    from colearn_pipeline.dicom.pseudonym import patient_pseudonym, pseudonymise

    study = pseudonymise("1.2.3.4")
    a = patient_pseudonym("PH1234567", study)
    assert a.startswith("patient-") and len(a) == len("patient-") + 10 and "PH1234567" not in a
    assert patient_pseudonym(" PH1234567 ", pseudonymise("1.2.3.5")) == a  # same patient, another study
    assert patient_pseudonym("PH1234567", study, key="site-secret") != a
    assert patient_pseudonym("PH7654321", study) != a
    assert patient_pseudonym(None, study) == study and patient_pseudonym("  ", study) == study
    assert patient_pseudonym("1.2.3.4", study)[len("patient-"):] != study[len("study-"):]  # hashes kept apart


def test_a_patient_too_big_for_a_partition_is_an_error_not_an_empty_test_set():
    names = _names(12)
    patients = {s: "patient-big" if i < 9 else f"patient-{i}" for i, s in enumerate(names)}
    raised = 0
    for seed in range(12):
        try:
            split = make_kfold_split(names, k=3, n_folds=1, seed=seed, patients=patients)
        except ValueError as exc:
            assert "non-empty groups" in str(exc)
            raised += 1
            continue
        check_split(split)
        assert all(part["test"] and part["train"] for part in split["outer"])
    assert 0 < raised < 12  # where the big patient comes first or last in the permutation
