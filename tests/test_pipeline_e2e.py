"""The whole project end to end: ``kedro run`` (phantom -> preprocess -> train_eval) on a tiny cohort.

The project's configuration is copied to a temporary folder with a ``test`` environment that only
shrinks things (5 tiny phantom studies, 32x32 model input, width-4 nets, one epoch); the package is
the installed one. MLflow writes to a temporary SQLite store.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from test_train_eval_e2e import copy_project, kedro

pytestmark = pytest.mark.slow

N_STUDIES = 5
MODEL_SIZE = 32
TEST_ENV = f"""
phantom: {{n_studies: {N_STUDIES}, size: tiny, seed: 11, workers: 1, overrides: {{wholebody_slice_factor: 1.0}}}}
preprocess: {{executor: {{workers: 0}}, model_input: {{model_size: [{MODEL_SIZE}, {MODEL_SIZE}]}}}}
model: {{width: 4, depth: 2}}
training: {{epochs: 1, batch_size: 4, learning_rate: 0.05, l2_lambda: 0.0001, progress: false}}
evaluation: {{device: cpu}}
mlflow: {{enabled: true, experiment_name: pipeline-e2e, log_models: false}}
"""


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("project"), TEST_ENV, "parameters.yml")
    for layer in ("01_raw", "02_intermediate", "03_primary", "05_model_input", "06_models", "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    kedro(root, "run", "--env", "test", timeout=900)
    return root


def test_default_run_writes_every_stage(project):
    raw = project / "data" / "01_raw"
    assert json.loads((raw / "phantom_cohort.json").read_text())
    assert len(list((raw / "reports").glob("*.json"))) == N_STUDIES

    manifest = pd.read_csv(project / "data" / "08_reporting" / "preprocess_manifest.csv")
    ok = manifest[manifest["status"] == "ok"]
    assert len(ok) == N_STUDIES, manifest[["pseudonym", "status", "reason"]].to_string()

    npz = sorted((project / "data" / "05_model_input").glob("study-*.npz"))
    assert len(npz) == N_STUDIES
    with np.load(npz[0]) as study:
        assert study["ct_hu"].shape[1:] == (MODEL_SIZE, MODEL_SIZE)
        assert set(np.unique(study["labels"])) <= {0, 1, 2, 3}
        assert (study["labels"] == 3).any()

    table = (project / "data" / "08_reporting" / "table_ii.md").read_text()
    for row in ("lungs", "mediastinum", "tumours", "background", "overall", "TB", "TC", "FS", "our method"):
        assert row in table
    assert (project / "data" / "08_reporting" / "fig5_segmentations.png").stat().st_size > 0
    assert (project / "data" / "08_reporting" / "fig6_fusion_maps.png").stat().st_size > 0

    split = json.loads((project / "data" / "06_models" / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])

    with sqlite3.connect(project / "mlflow.db") as db:
        names = {row[0] for row in db.execute("select name from runs")}
    assert {"colearn", "tb", "tc", "fs"} <= names


def test_second_run_leaves_raw_data_untouched(project):
    raw = project / "data" / "01_raw"
    before = _tree_digest(raw)
    kedro(project, "run", "--env", "test", "--pipeline=preprocess", timeout=600)
    assert _tree_digest(raw) == before
