"""Strict parameter blocks: every key of conf is required, unknown keys fail with their name."""

from pathlib import Path

import pytest
import yaml

from colearn_pipeline.hooks import MlflowSettings
from colearn_pipeline.pipelines.train_eval.params import (
    EvaluationParams,
    FigureParams,
    ProtocolParams,
    ReportingParams,
    SamplingParams,
    SplitParams,
    ValidationParams,
    net_overrides,
    strict,
)
from colearn_pipeline.pipelines.validate.nodes import grid_points

CONF = Path(__file__).resolve().parents[1] / "conf/base"
BASE = {**yaml.safe_load((CONF / "parameters_train_eval.yml").read_text()),
        **yaml.safe_load((CONF / "parameters_protocol.yml").read_text())}
BLOCKS = {"split": SplitParams, "evaluation": EvaluationParams, "figures": FigureParams,
          "reporting": ReportingParams, "validation": ValidationParams, "mlflow": MlflowSettings,
          "protocol": ProtocolParams, "sampling": SamplingParams}


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_base_conf_blocks_parse_and_a_typo_or_gap_fails_by_name(block):
    cls = BLOCKS[block]
    strict(cls, BASE[block], block)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['typo_key'\]"):
        strict(cls, {**BASE[block], "typo_key": 1}, block)
    first = next(iter(BASE[block]))
    with pytest.raises(ValueError, match=rf"missing key\(s\) \['{first}'\]"):
        strict(cls, {k: v for k, v in BASE[block].items() if k != first}, block)


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="split.mode"):
        strict(SplitParams, {**BASE["split"], "mode": "loo"}, "split")
    with pytest.raises(ValueError, match="evaluation.slices"):
        strict(EvaluationParams, {**BASE["evaluation"], "slices": "everything"}, "evaluation")
    with pytest.raises(ValueError, match="duplicates"):
        strict(ProtocolParams, {**BASE["protocol"], "seeds": [1, 1]}, "protocol")
    with pytest.raises(ValueError, match="unknown key"):     # one seed list: protocol.seeds
        strict(EvaluationParams, {**BASE["evaluation"], "seeds": [1]}, "evaluation")
    with pytest.raises(ValueError, match="tumour_free_share"):
        strict(SamplingParams, {**BASE["sampling"], "tumour_free_share": -0.5}, "sampling")
    with pytest.raises(ValueError, match="grid"):
        strict(ValidationParams, {**BASE["validation"], "grid": {"momentum": [0.9]}}, "validation")
    with pytest.raises(ValueError, match="net_overrides.tb"):
        net_overrides({"tb": {"optimiser": {}}}, "tb")


def test_grid_points_use_baseline_skips_only_where_the_net_has_it():
    grid = {"learning_rate": [0.05, 0.1], "l2_lambda": [0.001], "baseline_skips": [True, False]}
    assert len(grid_points(grid, "tb")) == 4
    assert grid_points(grid, "colearn") == [{"learning_rate": 0.05, "l2_lambda": 0.001},
                                           {"learning_rate": 0.1, "l2_lambda": 0.001}]
    assert net_overrides({"tb": {"model": {"baseline_skips": True}}}, "tb") == ({"baseline_skips": True}, {})
    assert net_overrides({}, "colearn") == ({}, {})


def test_net_overrides_per_outer_partition():
    """Nested K-fold: validate's per-partition choice overrides the net's keys in that partition only."""
    over = {"tb": {"training": {"learning_rate": 0.1}, "partitions": {"2": {"training": {"learning_rate": 0.05}},
                                                                      1: {"model": {"baseline_skips": True}}}}}
    assert net_overrides(over, "tb") == ({}, {"learning_rate": 0.1})
    assert net_overrides(over, "tb", 1) == ({"baseline_skips": True}, {"learning_rate": 0.1})
    assert net_overrides(over, "tb", 2) == ({}, {"learning_rate": 0.05})  # JSON keys are strings
    assert net_overrides(over, "tb", 3) == ({}, {"learning_rate": 0.1})
    with pytest.raises(ValueError, match="partitions.1"):
        net_overrides({"tb": {"partitions": {1: {"optimiser": {}}}}}, "tb", 1)


def _scores(net, partition, lrs, means):
    import pandas as pd

    return pd.DataFrame([{"net": net, "partition": partition, "grid_point": g, "learning_rate": lr,
                          "l2_lambda": 0.001, "fold": f, "score": m + (0.01 if f == 1 else -0.01)}
                         for g, (lr, m) in enumerate(zip(lrs, means), start=1) for f in (1, 2)])


def test_choose_settings_nested_per_partition_and_flags_the_grid_edge():
    import pandas as pd

    from colearn_pipeline.pipelines.validate.nodes import choose_settings, validation_markdown

    lrs = [0.05, 0.1, 0.2]
    scores = pd.concat([_scores("colearn", 1, lrs, [0.5, 0.7, 0.6]), _scores("colearn", 2, lrs, [0.5, 0.6, 0.8])])
    table, chosen = choose_settings(BASE["validation"], colearn=scores)
    assert chosen["colearn"]["partitions"] == {1: {"model": {}, "training": {"learning_rate": 0.1, "l2_lambda": 0.001}},
                                               2: {"model": {}, "training": {"learning_rate": 0.2, "l2_lambda": 0.001}}}
    picked = table[table["chosen"]].drop_duplicates(["partition"]).set_index("partition")["on_edge"]
    assert picked[1] == "" and picked[2] == "learning_rate"  # 0.2 is the grid's upper edge
    assert "on the grid's edge: learning_rate" in validation_markdown(table, BASE["validation"])
    holdout, one = choose_settings(BASE["validation"], colearn=_scores("colearn", 1, lrs, [0.5, 0.7, 0.6]))
    assert one == {"colearn": {"model": {}, "training": {"learning_rate": 0.1, "l2_lambda": 0.001}}}


def test_validation_loads_training_studies_only():
    from colearn_pipeline.pipelines.validate.nodes import training_studies
    from colearn_pipeline.training.split import make_kfold_split, make_split

    names = [f"study-{i:010x}" for i in range(12)]
    holdout = make_split(names, seed=1)
    assert training_studies(holdout) == holdout["train"] and not set(training_studies(holdout)) & set(holdout["test"])
    assert training_studies(make_kfold_split(names, k=3, seed=1)) == names  # nested: each is trained on somewhere
