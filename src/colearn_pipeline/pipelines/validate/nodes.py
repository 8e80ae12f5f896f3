"""Thin nodes of the ``validate`` pipeline (two-fold parameter validation, supplement SI)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from colearn_pipeline.evaluation import training_curves
from colearn_pipeline.pipelines.train_eval.nodes import train_net


def train_fold(
    train_fold_set: Mapping[str, np.ndarray],
    val_fold_set: Mapping[str, np.ndarray],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    net: str,
    fold: int,
) -> pd.DataFrame:
    """Train ``net`` on one fold, validating on the other after every epoch; return the history.

    Checkpoints go to ``<checkpoint_root>/validate/<net>/fold_<k>/checkpoints`` (resumable).
    """
    _, history = train_net(
        train_fold_set, model_params, training_params, net, run_label=f"validate/{net}/fold_{fold}",
        val_set=val_fold_set,
    )
    return history.assign(net=net, fold=fold)


def fold_accuracies(validation_params: Mapping[str, Any], **histories: pd.DataFrame) -> pd.DataFrame:
    """Training and validation accuracy of each net and fold.

    ``final`` is the last epoch's value; ``mean_last_k`` the mean over the last
    ``validation.last_epochs`` epochs (smoother, like reading a TensorBoard curve's end).
    """
    k = int(validation_params.get("last_epochs", 5))
    rows = []
    for h in histories.values():
        tail = h.tail(k)
        rows.append(
            {
                "net": h["net"].iloc[0],
                "fold": int(h["fold"].iloc[0]),
                "trained_on": f"fold {int(h['fold'].iloc[0])}",
                "validated_on": f"fold {3 - int(h['fold'].iloc[0])}",
                "epochs": int(h["epoch"].iloc[-1]),
                "train_accuracy": float(h["train_accuracy"].iloc[-1]),
                "val_accuracy": float(h["val_accuracy"].iloc[-1]),
                f"train_accuracy_last_{k}": float(tail["train_accuracy"].mean()),
                f"val_accuracy_last_{k}": float(tail["val_accuracy"].mean()),
                "train_loss": float(h["train_loss"].iloc[-1]),
                "val_loss": float(h["val_loss"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows).sort_values(["net", "fold"], ignore_index=True)


def validation_markdown(table: pd.DataFrame) -> str:
    """The fold table as Markdown (accuracies in %)."""
    lines = [
        "# Two-fold parameter validation (supplement, section SI)",
        "",
        "| net | trained on | validated on | epochs | training accuracy | validation accuracy |",
        "|---|---|---|---:|---:|---:|",
    ]
    for _, r in table.iterrows():
        lines.append(
            f"| {r['net']} | {r['trained_on']} | {r['validated_on']} | {r['epochs']} "
            f"| {100 * r['train_accuracy']:.2f} | {100 * r['val_accuracy']:.2f} |"
        )
    lines += ["", "Pixel accuracy at the last epoch; training accuracy is on augmented batches."]
    return "\n".join(lines) + "\n"


def plot_validation_curves(**histories: pd.DataFrame) -> Figure:
    """Training and validation curves of every net and fold."""
    return training_curves(
        {f"{h['net'].iloc[0]} fold {int(h['fold'].iloc[0])}": h for h in histories.values()},
        title="two-fold parameter validation",
    )
