"""End to end: ``kedro run --pipeline train_eval`` (and ``validate``) on a tiny synthetic cohort.

The project is copied to a temporary folder (pyproject, conf, an empty src; the package is the
installed one) with a ``test`` environment: 5 studies x 4 slices x 32x32, width 4, 2 epochs.
MLflow writes to a temporary SQLite store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from synthetic_studies import synthetic_study

REPO = Path(__file__).resolve().parents[1]
KEDRO = str(Path(sys.executable).with_name("kedro"))

TEST_PARAMS = """
model: {width: 4, depth: 2, num_classes: 4, kernel_size: 3, fusion_kernel_size: 3, negative_slope: 0.1,
        fs_blend_weight: 0.5}
training: {seed: 1, epochs: 2, batch_size: 4, learning_rate: 0.02, momentum: 0.9, l2_lambda: 0.0001,
           progress: false, checkpoint_every: 1, keep_checkpoints: 2, checkpoint_root: data/06_models}
evaluation: {device: cpu, batch_size: 8, reference: colearn, alpha: 0.05, equal_var: true}
mlflow: {enabled: true, experiment_name: e2e, log_models: true}
"""


def copy_project(root: Path, test_parameters: str, filename: str = "parameters_train_eval.yml") -> Path:
    """A runnable copy of the project's configuration with a ``test`` environment.

    The package is the installed one (``src`` stays empty); ``test_parameters`` is the YAML of
    ``conf/test/<filename>``, soft-merged over ``conf/base``.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    (root / "conf" / "test").mkdir()
    (root / "conf" / "test" / filename).write_text(test_parameters)
    (root / "src").mkdir()
    return root


def make_project(root: Path, n_studies: int = 5, n_slices: int = 4, size: int = 32) -> Path:
    """A runnable copy of the project with a tiny model input and a ``test`` environment."""
    copy_project(root, TEST_PARAMS)
    mi = root / "data" / "05_model_input"
    mi.mkdir(parents=True)
    for i in range(n_studies):
        name = f"study-{i:010x}"
        np.savez_compressed(mi / f"{name}.npz", **synthetic_study(name, n_slices, size, seed=i))
    return root


def project_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KEDRO_DISABLE_TELEMETRY="true", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlflow.db'}",
    )
    return env


def kedro(root: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([KEDRO, *args], cwd=root, env=project_env(root), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(autouse=True)
def _tmp_tracking_uri(tmp_path, monkeypatch):
    """In-process MLflow calls of these tests never touch the repository's store."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused-mlflow.db'}")


@pytest.fixture(scope="module")
def trained_project(tmp_path_factory):
    root = make_project(tmp_path_factory.mktemp("project"))
    proc = kedro(root, "run", "--env", "test", "--pipeline", "train_eval")
    return root, proc


@pytest.mark.slow
def test_outputs_and_table_ii(trained_project):
    root, proc = trained_project
    rep = root / "data" / "08_reporting"
    for f in ["table_ii.md", "table_ii.csv", "fig5_segmentations.png", "fig6_fusion_maps.png", "test_slice_metrics.csv"]:
        assert (rep / f).stat().st_size > 0, f
    table = pd.read_csv(rep / "table_ii.csv")
    assert len(table) == 20
    assert list(table["CNN"][:4]) == ["TB", "TC", "FS", "our method"]
    assert list(dict.fromkeys(table["ROI"])) == ["lungs", "mediastinum", "tumours", "background", "overall"]
    assert "| lungs | TB |" in (rep / "table_ii.md").read_text()
    assert "Table II" in proc.stdout and "mlflow ui" in proc.stdout
    split = json.loads((root / "data" / "06_models" / "split.json").read_text())
    assert set(split["train"]).isdisjoint(split["test"]) and len(split["test"]) == 1
    per_slice = pd.read_csv(rep / "test_slice_metrics.csv")
    assert set(per_slice["study"]) == set(split["test"])  # evaluated on test studies only
    for net in ("colearn", "tb", "tc", "fs"):
        bundle = torch.load(root / "data" / "06_models" / net / "model.pt", weights_only=True)
        assert bundle["net"] == net and bundle["model_kwargs"]["width"] == 4
        hist = pd.read_csv(rep / net / "training_history.csv")
        assert list(hist["epoch"]) == [1, 2]
        assert (rep / net / "training_curves.png").exists()


@pytest.mark.slow
def test_mlflow_parent_and_nested_runs(trained_project):
    import mlflow

    root, _ = trained_project
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["training.learning_rate"] == "0.02"
    assert parent.data.params["split.n_test"] == "1"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"split.json", "table_ii.md", "table_ii.csv", "figures"} <= artifacts
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"colearn", "tb", "tc", "fs"}
    for name, run in children.items():
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert sorted(steps) == [1, 2], name
        assert "test_lungs_dice_mean" in run.data.metrics
        paths = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"state_dict", "figures", "training_history.csv"} <= paths
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert {m.source_run_id for m in models} == {r.info.run_id for r in children.values()}
    assert (root / "mlartifacts").is_dir()


@pytest.mark.slow
def test_rerun_resumes_from_final_checkpoints(trained_project):
    root, _ = trained_project
    before = {n: torch.load(root / "data/06_models" / n / "model.pt", weights_only=True) for n in ("colearn", "fs")}
    proc = kedro(root, "run", "--env", "test", "--pipelines", "train_eval",
                 "--to-nodes", "colearn.train,fs.train")
    assert "resumed from" in proc.stdout + proc.stderr
    for n, b in before.items():
        after = torch.load(root / "data/06_models" / n / "model.pt", weights_only=True)
        assert all(torch.equal(b["state_dict"][k], after["state_dict"][k]) for k in b["state_dict"])


@pytest.mark.slow
def test_predict_cli_writes_labels_on_the_ct_grid(trained_project, tmp_path):
    import SimpleITK as sitk

    from colearn_pipeline.predict import main

    root, _ = trained_project
    split = json.loads((root / "data" / "06_models" / "split.json").read_text())
    study_path = root / "data" / "05_model_input" / f"{split['test'][0]}.npz"
    out = tmp_path / "pred.nii.gz"
    assert main(["--model", str(root / "data/06_models/colearn/model.pt"), "--study", str(study_path),
                 "--out", str(out), "--device", "cpu"]) == 0
    img = sitk.ReadImage(str(out))
    with np.load(study_path) as s:
        assert img.GetSize() == tuple(int(v) for v in s["ct_shape_zyx"][::-1])
        np.testing.assert_allclose(img.GetSpacing(), s["spacing_xyz_mm"])
        np.testing.assert_allclose(img.GetOrigin(), s["origin_xyz_mm"])
        vol = sitk.GetArrayFromImage(img)
        empty = np.setdiff1d(np.arange(vol.shape[0]), s["slice_index"])
        assert vol[empty].max() == 0
        assert vol.max() <= 3


@pytest.mark.slow
def test_validate_pipeline_reports_both_folds(tmp_path):
    root = make_project(tmp_path / "p")
    params = root / "conf" / "test" / "parameters_train_eval.yml"
    params.write_text(params.read_text().replace("epochs: 2", "epochs: 1"))
    kedro(root, "run", "--env", "test", "--pipeline", "validate")
    table = pd.read_csv(root / "data" / "08_reporting" / "validation_accuracy.csv")
    assert len(table) == 8 and set(table["fold"]) == {1, 2}
    assert table["val_accuracy"].between(0, 1).all() and table["train_accuracy"].between(0, 1).all()
    md = (root / "data" / "08_reporting" / "validation_accuracy.md").read_text()
    assert "| colearn | fold 1 | fold 2 |" in md
