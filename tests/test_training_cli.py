"""colearn-train: the plan (--dry-run), several seeds trained concurrently, one MLflow run per job."""

from __future__ import annotations

import subprocess
import sys

import mlflow
import pandas as pd
import pytest
import torch
import yaml
from test_train_eval_e2e import TEST_PARAMS, make_project, project_env

EPOCHS = int(yaml.safe_load(TEST_PARAMS)["training"]["epochs"])  # the test env's training length


def _train_cli(root, *args):
    proc = subprocess.run([sys.executable, "-m", "colearn_pipeline.training.cli", "--env", "test", *args],
                          cwd=root, env=project_env(root), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_plan_then_concurrent_seeds_with_own_folders_and_mlflow_runs(tmp_path):
    root = make_project(tmp_path / "p", n_studies=4, n_slices=3, size=16)
    plan = _train_cli(root, "--dry-run", "--nets", "tc", "--seeds", "1", "2").stdout
    assert "device      cpu" in plan and "total" in plan
    assert [line.split()[:3] for line in plan.splitlines() if line.startswith("tc ")] == [
        ["tc", "1", f"0/{EPOCHS}"], ["tc", "2", f"0/{EPOCHS}"]]  # nothing done yet
    assert not (root / "data" / "06_models" / "tc").exists()  # a dry run trains nothing

    _train_cli(root, "--concurrent", "--nets", "tc", "--seeds", "1", "2")
    models = root / "data" / "06_models"
    first = torch.load(models / "tc" / "model.pt", weights_only=True)  # seed 1 = training.seed: the catalog's
    second = torch.load(models / "tc-seed2" / "model.pt", weights_only=True)
    assert first["fingerprint"] != second["fingerprint"]
    assert len(pd.read_csv(models / "tc-seed2" / "history.csv")) == EPOCHS
    assert (models / "tc" / "history.csv").exists() and (models / "tc-seed2" / "checkpoints").is_dir()

    again = _train_cli(root, "--dry-run", "--nets", "tc", "--seeds", "1", "2").stdout
    assert [line.split()[2] for line in again.splitlines() if line.startswith("tc ")] == [f"{EPOCHS}/0", f"{EPOCHS}/0"]

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("e2e").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["training.seed"] for r in children) == ["1", "2"]
    assert all(r.info.status == "FINISHED" for r in runs) and len(runs) == 3
    assert all(len(client.get_metric_history(r.info.run_id, "train_loss")) == EPOCHS for r in children)
