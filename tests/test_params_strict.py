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
