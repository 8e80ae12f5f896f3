"""The researcher's first notebook, ``notebooks/first_look.ipynb``, executed headless.

The slow tests copy the project (``copy_project``: pyproject, conf and an empty src; the package is
the installed one) with the tiny ``test`` environment of ``test_pipeline_e2e`` (tiny phantom, 32x32
model input, width-4 nets, one epoch) and 3 studies; ``kedro run --to-outputs colearn.model`` writes
the phantom, preprocesses it and trains only the co-learning net, tracked in a SQLite MLflow store of
the copy. nbclient then executes the notebook from the copy's ``notebooks/`` folder in a kernel of
this Python (a kernelspec in a temporary folder, nothing registered globally), and the tests read
the outputs of its cells.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from matplotlib.image import imread
from nbclient import NotebookClient

from colearn_pipeline.training import load_model
from test_pipeline_e2e import MODEL_SIZE, TEST_ENV
from test_train_eval_e2e import copy_project, kedro, project_env

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "first_look.ipynb"
N_STUDIES = 3  # the fewest a study-level split with two training folds takes
KERNEL_NAME = "colearn-notebook-test"


def _code_cell(nb: nbformat.NotebookNode, marker: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``marker``."""
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"{len(cells)} code cells contain {marker!r}"
    return cells[0]


def _text(cell: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _images(cell: nbformat.NotebookNode) -> list[np.ndarray]:
    return [imread(io.BytesIO(base64.b64decode(o.data["image/png"])))
            for o in cell.outputs if o.output_type == "display_data" and "image/png" in o.data]


def _kernel_manager(folder: Path, env: dict[str, str]) -> KernelManager:
    """A kernel of this Python with ``env``, from a kernelspec in ``folder`` (nothing installed globally)."""
    spec = folder / KERNEL_NAME
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "colearn-pipeline test kernel", "language": "python", "env": env,
    }))
    specs = KernelSpecManager(kernel_dirs=[str(folder)], ensure_native_kernel=False)
    return KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_notebook_is_committed_cleared_and_says_how_to_run():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "make demo" in first.source and "jupyter" in first.source
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> tuple[Path, nbformat.NotebookNode]:
    root = copy_project(tmp_path_factory.mktemp("project"), TEST_ENV, "parameters.yml")
    for layer in ("01_raw", "02_intermediate", "03_primary", "05_model_input", "06_models", "07_model_output",
                  "08_reporting"):
        (root / "data" / layer).mkdir(parents=True)
    (root / "notebooks").mkdir()
    kedro(root, "run", "--env", "test", "--params", f"phantom.n_studies={N_STUDIES}", "--to-outputs", "colearn.model",
          timeout=600)

    env = project_env(root)
    kernel_env = {key: env[key] for key in ("KEDRO_DISABLE_TELEMETRY", "OMP_NUM_THREADS", "MLFLOW_TRACKING_URI")}
    kernel_env["KEDRO_ENV"] = "test"
    nb = nbformat.read(NOTEBOOK, as_version=4)
    km = _kernel_manager(tmp_path_factory.mktemp("kernels"), kernel_env)
    NotebookClient(nb, km=km, timeout=300, resources={"metadata": {"path": str(root / "notebooks")}}).execute()
    return root, nb


@pytest.mark.slow
def test_notebook_shows_a_study_from_the_catalog(executed):
    root, nb = executed
    first_study = sorted(p.stem for p in (root / "data" / "05_model_input").glob("study-*.npz"))[0]
    assert len(list((root / "data" / "05_model_input").glob("study-*.npz"))) == N_STUDIES
    assert re.fullmatch(r"study-[0-9a-f]{10}", first_study)

    loaded = _text(_code_cell(nb, 'catalog.load("model_input")'))
    assert f"study: {first_study}" in loaded
    with np.load(root / "data" / "05_model_input" / f"{first_study}.npz") as study:
        n_slices = study["ct_hu"].shape[0]
        tumour_pixels = int((study["labels"] == 3).sum())
    assert f"{n_slices} slices of {MODEL_SIZE}x{MODEL_SIZE}" in loaded
    assert re.search(rf"label 3 tumours +{tumour_pixels} pixels", loaded)

    (panels,) = _images(_code_cell(nb, "ground truth over CT"))
    assert panels.shape[1] > 2 * panels.shape[0]  # four panels side by side
    assert panels[..., :3].std() > 0.05


@pytest.mark.slow
def test_notebook_shows_the_fusion_maps_of_the_trained_net(executed):
    root, nb = executed
    bundle = torch.load(root / "data" / "06_models" / "colearn" / "model.pt", weights_only=True)
    with torch.no_grad():
        _, maps = load_model(bundle)(torch.zeros(1, 2, MODEL_SIZE, MODEL_SIZE), return_fusion_maps=True)
    assert maps[0].shape[1] == 2 * bundle["model_kwargs"]["width"]  # CT and PET weights per channel

    printed = _text(_code_cell(nb, "return_fusion_maps=True"))
    assert f"fingerprint {bundle['fingerprint']}" in printed
    for unit, fusion_map in enumerate(maps, start=1):
        assert f"fusion map {unit}: shape {tuple(fusion_map.shape)}" in printed
    assert f"fusion map {len(maps) + 1}:" not in printed

    grid, truth_and_prediction = _images(_code_cell(nb, "fusion_map_grid("))
    assert grid[..., :3].std() > 0.05 and truth_and_prediction[..., :3].std() > 0.05


@pytest.mark.slow
def test_notebook_opens_the_mlflow_run_of_the_net(executed):
    from mlflow import MlflowClient

    root, nb = executed
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="attributes.run_name = 'colearn'")
    assert len(runs) == 1
    run = runs[0]

    printed = _text(_code_cell(nb, "mlflow.search_runs("))
    assert f"run id: {run.info.run_id} " in printed
    assert "logged this bundle: True" in printed
    for key, value in run.data.params.items():
        assert f"  {key} = {value}\n" in printed
    assert run.data.metrics and all(f"  {key} = " in printed for key in run.data.metrics)
    assert "  training.epochs = 1\n" in printed
    assert f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000" in printed
