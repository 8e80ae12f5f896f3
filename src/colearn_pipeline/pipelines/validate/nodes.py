"""Thin nodes of the ``validate`` pipeline: choose each net's settings on the training folds.

For every net and every point of ``validation.grid`` (learning rate, lambda, baseline skips),
the net is trained on one training fold and scored on the other, and vice versa (supplement,
SI). The grid point with the best mean validation score is the net's choice, written as a
``net_overrides`` block. Test studies are never loaded here.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from colearn_pipeline.evaluation import training_curves
from colearn_pipeline.hooks import nested_run
from colearn_pipeline.pipelines.train_eval.nodes import evaluate_bundle, subset, train_net
from colearn_pipeline.pipelines.train_eval.params import EvaluationParams, ValidationParams, strict
from colearn_pipeline.evaluation.metrics import scored_slice_mask

#: Nets whose architecture has the ``baseline_skips`` switch.
SKIP_SWITCH_NETS = ("tb", "tc", "fs")


def grid_points(grid: Mapping[str, list], net: str) -> list[dict[str, Any]]:
    """Every combination of the grid for ``net`` (``baseline_skips`` only where the net has it)."""
    keys = [k for k in grid if k != "baseline_skips" or net in SKIP_SWITCH_NETS]
    return [dict(zip(keys, values)) for values in itertools.product(*(list(grid[k]) for k in keys))]


def _split_point(point: Mapping[str, Any]) -> tuple[dict, dict]:
    model = {k: v for k, v in point.items() if k == "baseline_skips"}
    return model, {k: v for k, v in point.items() if k != "baseline_skips"}


def _score(bundle, history: pd.DataFrame, val_set, evaluation: EvaluationParams, score: str) -> float:
    if score == "val_accuracy":
        return float(history["val_accuracy"].iloc[-1])
    scored = subset(val_set, sorted(set(val_set["study"])), scored_slice_mask(val_set["y"], evaluation.slices))
    metrics, _ = evaluate_bundle(bundle, scored, evaluation)
    overall = metrics[metrics["roi"] == "overall"]
    return float(overall.groupby("study")["dice"].mean().mean())


def validate_grid(
    fold_1_set: Mapping[str, np.ndarray],
    fold_2_set: Mapping[str, np.ndarray],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    evaluation_params: Mapping[str, Any],
    validation_params: Mapping[str, Any],
    net: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train ``net`` at every grid point on each fold, score it on the other fold.

    Returns
    -------
    scores : pandas.DataFrame
        ``net``, ``grid_point``, the grid keys, ``fold`` (trained on), ``score``.
    histories : pandas.DataFrame
        Per-epoch rows (with validation loss and accuracy) with ``grid_point`` and ``fold``.
    """
    evaluation = strict(EvaluationParams, evaluation_params, "evaluation")
    validation = strict(ValidationParams, validation_params, "validation")
    folds = {1: (fold_1_set, fold_2_set), 2: (fold_2_set, fold_1_set)}
    rows, histories = [], []
    for g, point in enumerate(grid_points(validation.grid, net), start=1):
        model_extra, training_extra = _split_point(point)
        model, training = {**model_params, **model_extra}, {**training_params, **training_extra}
        for fold, (train, val) in folds.items():
            label = f"validate/{net}/grid_{g}/fold_{fold}"
            with nested_run(f"{net} grid {g} fold {fold}", {"net": net, "fold": fold, "grid_point": g,
                                                            "model": model, "training": training}, {"net": net}):
                bundle, history = train_net(train, model, training, net, run_label=label, val_set=val)
                score = _score(bundle, history, val, evaluation, validation.score)
            rows.append({"net": net, "grid_point": g, **point, "fold": fold, "score": score})
            histories.append(history.assign(net=net, grid_point=g, fold=fold))
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True)


def choose_settings(validation_params: Mapping[str, Any], **scores: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The scores of every net, and per net the grid point with the best mean over folds.

    Returns
    -------
    table : pandas.DataFrame
        All scores, with ``mean_score`` per grid point and ``chosen`` (bool).
    chosen : dict
        ``{net: {model: {...}, training: {...}}}``, ready for ``params:net_overrides``.
    """
    strict(ValidationParams, validation_params, "validation")
    table = pd.concat(list(scores.values()), ignore_index=True)
    table["mean_score"] = table.groupby(["net", "grid_point"])["score"].transform("mean")
    best = table.loc[table.groupby("net")["mean_score"].idxmax(), ["net", "grid_point"]]
    table["chosen"] = table.set_index(["net", "grid_point"]).index.isin(list(best.itertuples(index=False, name=None)))
    chosen = {}
    grid_keys = [c for c in table.columns if c in ("learning_rate", "l2_lambda", "baseline_skips")]
    for net, g in best.itertuples(index=False, name=None):
        row = table[(table["net"] == net) & (table["grid_point"] == g)].iloc[0]
        point = {k: _plain(row[k]) for k in grid_keys if pd.notna(row[k])}
        model, training = _split_point(point)
        chosen[net] = {"model": model, "training": training}
    return table, chosen


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def validation_markdown(table: pd.DataFrame, validation_params: Mapping[str, Any]) -> str:
    """The grid scores as Markdown, the chosen point of each net marked."""
    v = strict(ValidationParams, validation_params, "validation")
    keys = [c for c in table.columns if c in ("learning_rate", "l2_lambda", "baseline_skips")]
    lines = [
        "# Settings chosen on the training folds (validate pipeline)",
        "",
        f"Score: {v.score} of the held-out training fold (in %); the test studies are never used.",
        "",
        "| net | grid point | " + " | ".join(keys) + " | trained on fold 1 | trained on fold 2 | mean | chosen |",
        "|---|---:|" + "---|" * len(keys) + "---:|---:|---:|---|",
    ]
    for (net, g), rows in table.groupby(["net", "grid_point"], sort=False):
        by_fold = dict(zip(rows["fold"], rows["score"]))
        first = rows.iloc[0]
        lines.append(
            f"| {net} | {g} | " + " | ".join("" if pd.isna(first[k]) else str(first[k]) for k in keys)
            + f" | {100 * by_fold.get(1, np.nan):.2f} | {100 * by_fold.get(2, np.nan):.2f} "
            f"| {100 * first['mean_score']:.2f} | {'yes' if first['chosen'] else ''} |"
        )
    return "\n".join(lines) + "\n"


def plot_validation_curves(**histories: pd.DataFrame) -> Figure:
    """Training and validation curves of every net, grid point and fold."""
    runs = {}
    for h in histories.values():
        for (g, f), part in h.groupby(["grid_point", "fold"]):
            runs[f"{part['net'].iloc[0]} grid {g} fold {f}"] = part
    return training_curves(runs, title="parameter validation on the training folds")
