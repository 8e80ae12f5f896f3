"""Study-level K-fold: every study tested exactly once, never trained on in its own partition."""

import pytest

from colearn_pipeline.training.split import check_split, make_kfold_split, make_split


@pytest.mark.parametrize("n,k", [(50, 5), (11, 3), (6, 2)])
def test_every_study_is_tested_once(n, k):
    studies = [f"s{i:02d}" for i in range(n)]
    split = make_kfold_split(reversed(studies), k=k, n_folds=2, seed=3)
    check_split(split)
    assert split["mode"] == "kfold" and len(split["outer"]) == k
    tests = [s for part in split["outer"] for s in part["test"]]
    assert sorted(tests) == studies
    for part in split["outer"]:
        assert not set(part["train"]) & set(part["test"])
        assert sorted(part["train"] + part["test"]) == studies
        assert sorted(s for f in part["folds"] for s in f) == part["train"]
    sizes = [len(p["test"]) for p in split["outer"]]
    assert max(sizes) - min(sizes) <= 1
    assert split["test"] == split["outer"][0]["test"]


def test_check_split_catches_a_study_tested_twice():
    split = make_kfold_split([f"s{i}" for i in range(8)], k=2, seed=0)
    split["outer"][1]["test"] = split["outer"][1]["test"][:-1] + [split["outer"][0]["test"][0]]
    with pytest.raises(ValueError):
        check_split(split)


def test_holdout_has_one_outer_partition():
    split = make_split([f"s{i}" for i in range(10)], test_fraction=0.2, n_folds=2, seed=1)
    assert split["mode"] == "holdout" and split["outer"] == [
        {"train": split["train"], "test": split["test"], "folds": split["folds"]}]
    with pytest.raises(ValueError, match="k must be"):
        make_kfold_split(["a", "b", "c", "d"], k=1)
