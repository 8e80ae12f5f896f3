"""Thin nodes of the ``train_eval`` pipeline; the work is in ``training`` and ``evaluation``."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from colearn_pipeline.evaluation import (
    first_fusion_map,
    fusion_map_grid,
    predict_labels,
    segmentation_panels,
    select_slices,
    slice_metrics,
    summarise,
    table_ii_markdown,
    training_curves,
)
from colearn_pipeline.evaluation.tables import format_table_ii
from colearn_pipeline.training import assemble_slices, check_split, load_model, make_split, resolve_device
from colearn_pipeline.training.loop import TrainConfig, train_model

logger = logging.getLogger(__name__)


def study_name(partition_id: str) -> str:
    """Pseudonym of a model-input partition (its file name without folders and ``.npz``)."""
    return Path(partition_id).name.removesuffix(".npz")


def _by_study(model_input: Mapping[str, Any]) -> dict[str, Any]:
    return {study_name(k): v for k, v in model_input.items()}


def split_studies(model_input: Mapping[str, Any], split_params: Mapping[str, Any]) -> dict:
    """Study-level split of the model input (``params:split``: seed, test_fraction, n_folds).

    Only the partition names are used, so no study is loaded here.
    """
    split = make_split(
        _by_study(model_input).keys(),
        test_fraction=float(split_params.get("test_fraction", 0.2)),
        n_folds=int(split_params.get("n_folds", 2)),
        seed=int(split_params.get("seed", 0)),
    )
    check_split(split)
    logger.info(
        "split: %d training studies (folds of %s), %d test studies",
        len(split["train"]), [len(f) for f in split["folds"]], len(split["test"]),
    )
    return split


def assemble_set(model_input: Mapping[str, Any], split: Mapping[str, Any], which: str) -> dict[str, np.ndarray]:
    """Standardised slices of the ``train`` / ``test`` studies, or of fold ``fold_<k>`` (1-based)."""
    if which.startswith("fold_"):
        studies = split["folds"][int(which.removeprefix("fold_")) - 1]
    else:
        studies = split[which]
    data = assemble_slices(_by_study(model_input), studies)
    logger.info("%s set: %d slices from %d studies", which, len(data["x"]), len(studies))
    return data


def train_net(
    train_set: Mapping[str, np.ndarray],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    net: str,
    run_label: str | None = None,
    val_set: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Train ``net``; checkpoints in ``<checkpoint_root>/<run_label or net>/checkpoints``.

    Per-epoch metrics go to the active MLflow run when there is one (the project's hooks open
    a nested run per net around this node).
    """
    cfg = TrainConfig.from_params(training_params)
    label = run_label or net
    ckpt = Path(cfg.checkpoint_root) / label / "checkpoints" if cfg.checkpoint_root else None
    bundle, history = train_model(
        net, model_params, train_set, cfg, val_set=val_set, checkpoint_dir=ckpt, on_epoch_end=_mlflow_epoch_logger()
    )
    return bundle, pd.DataFrame(history)


def _mlflow_epoch_logger():
    """A callback logging an epoch row to the active MLflow run, or None without one."""
    try:
        import mlflow
    except ImportError:  # pragma: no cover - mlflow is a dependency
        return None
    if mlflow.active_run() is None:
        return None

    def log(row: dict[str, float]) -> None:
        step = int(row["epoch"])
        values = {k: float(v) for k, v in row.items() if k != "epoch" and np.isfinite(v)}
        mlflow.log_metrics(values, step=step)

    return log


def evaluate_net(
    bundle: Mapping[str, Any], test_set: Mapping[str, np.ndarray], evaluation_params: Mapping[str, Any]
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Predict the test slices and compute the per-slice, per-ROI metrics."""
    device = resolve_device(evaluation_params.get("device", "auto"))
    model = load_model(bundle, device)
    pred = predict_labels(model, test_set["x"], int(evaluation_params.get("batch_size", 8)), device)
    metrics = slice_metrics(pred, test_set["y"], test_set["study"], test_set["slice_index"])
    return metrics, {"labels": pred, "study": np.asarray(test_set["study"]), "slice_index": test_set["slice_index"]}


def plot_training_curves(history: pd.DataFrame, net: str) -> Figure:
    """Training curves of one net."""
    return training_curves({net: history}, title=f"{net}: training")


def build_table_ii(
    split: Mapping[str, Any],
    test_set: Mapping[str, np.ndarray],
    evaluation_params: Mapping[str, Any],
    **slice_metrics_by_net: pd.DataFrame,
) -> tuple[pd.DataFrame, str, pd.DataFrame]:
    """Table II (CSV table, Markdown) and the long per-slice metrics of every net."""
    alpha = float(evaluation_params.get("alpha", 0.05))
    summary = summarise(
        slice_metrics_by_net,
        reference=evaluation_params.get("reference", "colearn"),
        alpha=alpha,
        equal_var=bool(evaluation_params.get("equal_var", True)),
    )
    md = table_ii_markdown(summary, alpha=alpha, n_slices=len(test_set["y"]), n_studies=len(split["test"]))
    table = pd.concat([format_table_ii(summary, alpha=alpha), summary.drop(columns=["roi", "cnn"])], axis=1)
    per_slice = pd.concat([df.assign(net=net) for net, df in slice_metrics_by_net.items()], ignore_index=True)
    return table, md, per_slice


def plot_segmentations(
    test_set: Mapping[str, np.ndarray], figure_params: Mapping[str, Any], **predictions_by_net: Mapping[str, Any]
) -> Figure:
    """Fig. 5: fused PET-CT, ground truth and every net's labels for a few test slices."""
    slices = select_slices(test_set["y"], int(figure_params.get("n_slices", 3)))
    titles = [f"{test_set['study'][i]} z={int(test_set['slice_index'][i])}" for i in slices]
    return segmentation_panels(
        test_set["x"], test_set["y"], {n: p["labels"] for n, p in predictions_by_net.items()}, slices,
        pet_cmap=figure_params.get("pet_cmap", "hot"), pet_alpha=float(figure_params.get("pet_alpha", 0.8)),
        titles=titles,
    )


def plot_fusion_maps(
    bundle: Mapping[str, Any], test_set: Mapping[str, np.ndarray], figure_params: Mapping[str, Any]
) -> Figure:
    """Fig. 6: the first co-learning unit's fusion map on the test slice with the most tumour."""
    i = select_slices(test_set["y"], 1)[0]
    fmap = first_fusion_map(load_model(bundle, "cpu"), test_set["x"][i])
    return fusion_map_grid(
        fmap, columns=int(figure_params.get("fusion_columns", 8)),
        title=f"first co-learning unit, {test_set['study'][i]} z={int(test_set['slice_index'][i])}",
    )


def report_results(table_ii_md: str, reporting_params: Mapping[str, Any]) -> None:
    """Print Table II and say where the tables, figures and MLflow runs are.

    Printed (not only logged) so the Markdown table keeps its layout on the console.
    """
    folder = reporting_params.get("folder", "data/08_reporting")
    print(
        f"\n{table_ii_md}\n"
        f"Table II:  {folder}/table_ii.md, {folder}/table_ii.csv\n"
        f"Figures:   {folder}/fig5_segmentations.png, {folder}/fig6_fusion_maps.png, {folder}/<net>/training_curves.png\n"
        f"Models:    data/06_models/<net>/model.pt (colearn-predict --model ...)\n"
        f"MLflow:    mlflow ui --backend-store-uri {reporting_params.get('mlflow_uri_hint', 'sqlite:///mlflow.db')}\n",
        flush=True,
    )
    logger.info("Table II written to %s/table_ii.md", folder)
