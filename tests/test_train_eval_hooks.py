"""MLflow hook helpers and the pipeline structure (no training)."""

from pathlib import Path

from colearn_pipeline.hooks import flatten_params, resolve_tracking_uri
from colearn_pipeline.pipelines.train_eval.pipeline import NETS, create_pipeline
from colearn_pipeline.pipelines.validate.pipeline import create_pipeline as create_validate


def test_flatten_params():
    flat = flatten_params({"training": {"lr": 0.1, "augmentation": {"pad": 10}}, "x": None, "e": {}})
    assert flat == {"training.lr": "0.1", "training.augmentation.pad": "10", "x": "None", "e": "{}"}
    assert len(flatten_params({"long": "a" * 10000})["long"]) == 6000


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == f"sqlite:///{Path(tmp_path).resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("http://server:5000", tmp_path) == "http://server:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere.db")
    assert resolve_tracking_uri("http://server:5000", tmp_path) == "sqlite:////elsewhere.db"


def test_each_net_is_its_own_namespace_with_the_same_inputs():
    p = create_pipeline()
    assert set(NETS) == {"colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv"}
    for net in NETS:
        nodes = {n.name: n for n in p.nodes if n.namespace == net}
        assert set(nodes) == {f"{net}.train_evaluate", f"{net}.plot_training_curves"}
        node = nodes[f"{net}.train_evaluate"]
        assert node.inputs == ["all_slices", "split", "model_input", "params:model", "params:training",
                               "params:evaluation", "params:protocol", "params:sampling", "params:net_overrides"]
        assert node.outputs == [f"{net}.model", f"{net}.history", f"{net}.slice_metrics", f"{net}.test_predictions",
                                f"{net}.lesion_metrics"]
    assert p.inputs() == {"model_input", "params:split", "params:model", "params:training", "params:evaluation",
                          "params:protocol", "params:sampling", "params:net_overrides", "params:figures",
                          "params:reporting"}
    assert {"table_ii_md", "table_ii_paper_protocol_md", "table_ablation_md", "answers_md", "lesion_metrics",
            "table_lesions_md"} <= set(p.datasets())


def test_validate_runs_a_grid_per_net_on_the_training_folds():
    p = create_validate()
    names = {n.name for n in p.nodes}
    for net in NETS:
        assert f"validate.{net}.validate_grid" in names
    grid = next(n for n in p.nodes if n.name == "validate.colearn.validate_grid")
    assert grid.inputs[:2] == ["validate.training_slices", "split"]
    assert "test_set" not in {i for n in p.nodes for i in n.inputs}  # never sees the test studies
    # the split node is the same as train_eval's, so the two pipelines can be combined
    assert len((p + create_pipeline()).nodes) == len(p.nodes) + len(create_pipeline().nodes) - 1
