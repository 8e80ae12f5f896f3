"""Study-level split: proportions, folds, determinism, and no study on two sides."""

import numpy as np
import pytest

from colearn_pipeline.training import assemble_slices, check_split, make_split
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
