"""``kedro viz build`` runs headless and its export holds the lineage of preprocess and train_eval."""

from __future__ import annotations

import json
import subprocess

import pytest

from test_train_eval_e2e import KEDRO, make_project, project_env


@pytest.fixture(scope="module")
def viz_api(tmp_path_factory):
    """The ``build/api`` folder of one ``kedro viz build`` of the project, shared by the tests below."""
    root = make_project(tmp_path_factory.mktemp("viz") / "p", n_studies=0)
    proc = subprocess.run([KEDRO, "viz", "build"], cwd=root, env=project_env(root), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return root / "build" / "api"


@pytest.mark.slow
def test_kedro_viz_build_exports_train_eval_nodes(viz_api):
    api = viz_api
    pipelines = {p.name for p in (api / "pipelines").iterdir()}
    assert {"phantom", "preprocess", "train_eval", "validate", "__default__"} <= pipelines
    data = json.loads((api / "pipelines" / "train_eval").read_text())
    tasks = {n["name"] for n in data["nodes"] if n["type"] == "task"}
    assert {"split_studies", "assemble_all_slices", "assemble_test_set", "train_evaluate",
            "plot_training_curves", "build_table_ii", "build_paper_protocol_table", "build_ablation_table",
            "write_answers", "plot_segmentations", "plot_fusion_maps", "report_results"} <= tasks
    datasets = {n["name"] for n in data["nodes"] if n["type"] == "data"}
    for net in ("colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv"):
        assert {f"{net}.model", f"{net}.history", f"{net}.slice_metrics"} <= datasets
    assert {"colearn", "tb", "tc", "fs"} <= set(data["modular_pipelines"])
    default = json.loads((api / "pipelines" / "__default__").read_text())
    default_tasks = {n["name"] for n in default["nodes"] if n["type"] == "task"}
    assert "build_table_ii" in default_tasks
    assert {"generate_phantom_cohort", "discover_studies", "build_model_input"} <= default_tasks


@pytest.mark.slow
def test_kedro_viz_build_shows_the_preprocess_stages_with_their_parameters(viz_api):
    from test_preprocess_stages import STAGE_NODES

    data = json.loads((viz_api / "pipelines" / "preprocess").read_text())
    by_id = {n["id"]: n for n in data["nodes"]}
    tasks = {n["name"] for n in data["nodes"] if n["type"] == "task"}
    assert set(STAGE_NODES) <= tasks, set(STAGE_NODES) - tasks
    params = {n["name"] for n in data["nodes"] if n["type"] == "parameters"}
    for stage in ("executor", "discover_studies", "read_series", "suv", "pet_to_ct", "lungs", "mediastinum",
                  "tumours", "model_input", "manifest"):
        assert any(p.endswith(f"preprocess.{stage}") for p in params), (stage, params)
    datasets = {n["name"] for n in data["nodes"] if n["type"] == "data"}
    assert {"raw_dicom", "raw_reports", "preprocess_lungs", "preprocess_tumours", "model_input"} <= datasets
    tumour_node = next(n for n in data["nodes"] if n["type"] == "task" and n["name"] == "segment_tumours")
    feeding = {by_id[e["source"]]["name"] for e in data["edges"] if e["target"] == tumour_node["id"]}
    assert any(name.endswith("preprocess.tumours") for name in feeding), feeding
    assert "preprocess_suv" in feeding
