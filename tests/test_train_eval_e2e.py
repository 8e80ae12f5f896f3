"""End to end: ``kedro run --pipeline train_eval`` (and ``validate``) on a tiny synthetic cohort.

The project is copied to a temporary folder (pyproject, conf, an empty src; the package is the
installed one) with a ``test`` environment: 5 studies x 4 slices x 32x32, width 4, 1 epoch,
2-fold cross-validation and 2 training seeds. MLflow writes to a temporary SQLite store.
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
split: {mode: kfold, k: 2}
model: {width: 4, depth: 2, num_classes: 4, kernel_size: 3, fusion_kernel_size: 3, negative_slope: 0.1,
        fs_blend_weight: 0.5}
training: {seed: 1, epochs: 1, batch_size: 4, learning_rate: 0.02, momentum: 0.9, l2_lambda: 0.0001,
           progress: false, checkpoint_every: 1, keep_checkpoints: 2, checkpoint_root: data/06_models}
evaluation: {device: cpu, n_bootstrap: 500}
protocol: {seeds: [1, 2]}
validation: {grid: {learning_rate: [0.02], l2_lambda: [0.001], baseline_skips: [true, false]}}
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
        np.savez_compressed(mi / f"{name}.npz", **synthetic_study(name, n_slices, size, seed=i, tumour_free=1))
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
def test_outputs_and_tables(trained_project):
    root, proc = trained_project
    rep = root / "data" / "08_reporting"
    for f in ["table_ii.md", "table_ii.csv", "table_ii_paper_protocol.md", "table_ii_paper_protocol.csv",
              "table_ablation.md", "table_ablation.csv", "answers.md", "fig5_segmentations.png",
              "fig6_fusion_maps.png", "test_slice_metrics.csv"]:
        assert (rep / f).stat().st_size > 0, f
    table = pd.read_csv(rep / "table_ii.csv")
    assert len(table) == 5 * 5 * 4  # ROIs x metrics x nets
    assert list(table["net"][:4]) == ["tb", "tc", "fs", "colearn"]
    assert "Table II" in proc.stdout and "mlflow ui" in proc.stdout
    assert "Table II, paper protocol" in (rep / "table_ii_paper_protocol.md").read_text()
    ablation = pd.read_csv(rep / "table_ablation.csv")
    assert set(ablation["net"]) == {"colearn", "tb_skips", "tb_skips_conv"}
    answers = (rep / "answers.md").read_text()
    assert "## Primary endpoint (pre-specified): tumours dice" in answers and "Power:" in answers
    for label in ("TB (", "TC (", "FS (", "TB + skips (", "TB + skips + conv ("):
        assert answers.count(f"- vs {label}") == 1, label  # each net once, TB and TB + skips apart
    assert sum(line.startswith("- lungs:") for line in answers.splitlines()) == 1
    split = json.loads((root / "data" / "06_models" / "split.json").read_text())
    assert split["mode"] == "kfold" and len(split["outer"]) == 2
    per_slice = pd.read_csv(rep / "test_slice_metrics.csv")
    for (fold, seed), part in per_slice.groupby(["fold", "seed"]):  # each partition on its test studies
        assert set(part["study"]) == set(split["outer"][fold - 1]["test"]), (fold, seed)
    assert per_slice["study"].nunique() == 5  # K-fold: every study tested
    assert set(per_slice["seed"]) == {1, 2}
    # every thorax slice scored (4 per study, the last tumour-free), the paper protocol on the 3 tumour slices
    one = per_slice[(per_slice["net"] == "colearn") & (per_slice["seed"] == 1) & (per_slice["roi"] == "tumours")]
    assert len(one) == 5 * 4 and int((~one["has_tumour"]).sum()) == 5
    protocol = pd.read_csv(rep / "table_ii_paper_protocol.csv")
    assert set(protocol.loc[protocol["ROI"] == "tumours", "accuracy_n_slices"]) == {5 * 3}
    lesions = pd.read_csv(rep / "lesion_metrics.csv")
    assert len(lesions) == 6 * 2 * 5  # nets x seeds x studies (each tested once)
    assert (lesions["true_lesions"] >= 1).all() and lesions["fpv_ml"].ge(0).all()
    assert lesions["mtv_true_ml"].gt(0).all() and lesions["suvmax_true"].between(8, 10).all()
    assert "fpv_ml" in (rep / "table_lesions.md").read_text()
    for net in ("colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv"):
        bundle = torch.load(root / "data" / "06_models" / net / "model.pt", weights_only=True)
        assert bundle["net"] == net and bundle["model_kwargs"]["width"] == 4
        hist = pd.read_csv(rep / net / "training_history.csv")
        assert len(hist) == 4 and set(zip(hist["seed"], hist["fold"])) == {(1, 1), (1, 2), (2, 1), (2, 2)}


@pytest.mark.slow
def test_table_values_recomputed_from_the_per_slice_metrics(trained_project):
    from scipy import stats

    root, _ = trained_project
    rep = root / "data" / "08_reporting"
    per_slice = pd.read_csv(rep / "test_slice_metrics.csv")
    lungs = per_slice[per_slice["roi"] == "lungs"]
    study = lungs.groupby(["net", "seed", "study"])["dice"].mean().groupby(["net", "study"]).mean()
    ref, tb = study["colearn"], study["tb"].loc[study["colearn"].index]
    table = pd.read_csv(rep / "table_ii.csv").set_index(["roi", "metric", "net"])
    row = table.loc[("lungs", "dice", "tb")]
    assert row["mean"] == pytest.approx(tb.mean())
    assert row["sd_studies"] == pytest.approx(tb.std(ddof=1))
    assert row["difference"] == pytest.approx((ref - tb).mean())
    assert row["p_t_studies"] == pytest.approx(stats.ttest_rel(ref, tb).pvalue)
    assert row["ci_low"] <= row["difference"] <= row["ci_high"]
    paper = pd.read_csv(rep / "table_ii_paper_protocol.csv")
    first = lungs[lungs["seed"] == 1]
    p_paper = stats.ttest_ind(first.loc[first["net"] == "colearn", "dice"].dropna(),
                              first.loc[first["net"] == "tb", "dice"].dropna()).pvalue
    cell = paper[(paper["ROI"] == "lungs") & (paper["net"] == "tb")].iloc[0]
    assert cell["dice_p_slices"] == pytest.approx(p_paper)


@pytest.mark.slow
def test_mlflow_one_nested_run_per_net_seed_and_fold(trained_project):
    import mlflow

    root, _ = trained_project
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("e2e")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.params["training.learning_rate"] == "0.02"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"split.json", "table_ii.md", "table_ii_paper_protocol.md", "answers.md", "figures", "tables"} <= artifacts
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv"}
    assert children["tb"].data.params["model.width"] == "4" and children["tb"].data.params["net"] == "tb"
    assert "test_lungs_dice_mean" in children["tb"].data.metrics
    seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {c.info.run_id for c in children.values()}]
    assert len(seeds) == 6 * 2 * 2  # nets x seeds x folds
    for run in seeds:
        assert run.data.params["seed"] in {"1", "2"} and run.data.params["fold"] in {"1", "2"}
        assert run.data.params["training.seed"] == run.data.params["seed"]
        assert "test_lungs_dice" in run.data.metrics
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]
    models = client.search_logged_models(experiment_ids=[exp.experiment_id])
    assert {m.source_run_id for m in models} == {r.info.run_id for r in children.values()}


@pytest.mark.slow
def test_rerun_resumes_from_final_checkpoints(trained_project):
    root, _ = trained_project
    before = {n: torch.load(root / "data/06_models" / n / "model.pt", weights_only=True) for n in ("colearn", "fs")}
    proc = kedro(root, "run", "--env", "test", "--pipelines", "train_eval",
                 "--to-nodes", "colearn.train_evaluate,fs.train_evaluate")
    assert "resumed from" in proc.stdout + proc.stderr
    for n, b in before.items():
        after = torch.load(root / "data/06_models" / n / "model.pt", weights_only=True)
        assert all(torch.equal(b["state_dict"][k], after["state_dict"][k]) for k in b["state_dict"])


@pytest.mark.slow
def test_predict_cli_writes_labels_on_the_ct_grid(trained_project, tmp_path):
    import SimpleITK as sitk

    from colearn_pipeline.inference.cli import main

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
def test_validate_pipeline_chooses_settings_on_the_training_folds(tmp_path):
    """K-fold (k = 2): nested, every outer partition chooses on its own training folds."""
    root = make_project(tmp_path / "p")
    kedro(root, "run", "--env", "test", "--pipeline", "validate")
    rep = root / "data" / "08_reporting"
    table = pd.read_csv(rep / "validation_scores.csv")
    # colearn-type nets: 1 grid point; tb, tc, fs: 2 (baseline_skips true/false); 2 folds; 2 outer partitions
    assert len(table) == (3 * 1 + 3 * 2) * 2 * 2 and set(table["fold"]) == {1, 2} and set(table["partition"]) == {1, 2}
    assert table["score"].between(0, 1).all()
    chosen = json.loads((rep / "validation_chosen_settings.json").read_text())
    assert set(chosen) == {"colearn", "tb", "tc", "fs", "tb_skips", "tb_skips_conv"}
    for net in ("tb", "tc", "fs"):
        for k in (1, 2):
            part = table[(table["net"] == net) & (table["partition"] == k)]
            best = part.groupby("baseline_skips")["score"].mean().idxmax()
            assert chosen[net]["partitions"][str(k)]["model"]["baseline_skips"] == bool(best)
    assert chosen["colearn"]["partitions"]["1"] == {"model": {}, "training": {"learning_rate": 0.02, "l2_lambda": 0.001}}
    split = json.loads((root / "data" / "06_models" / "split.json").read_text())
    for part in split["outer"]:
        assert not set(part["test"]) & set(part["folds"][0] + part["folds"][1])
    assert "| colearn | 2 | 1 |" in (rep / "validation.md").read_text()
