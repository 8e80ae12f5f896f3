"""Thin nodes of the ``validate`` pipeline: choose each net's settings on the training folds.

For every net and every point of ``validation.grid`` (learning rate, lambda, baseline skips),
the net is trained on one training fold and scored on the other, and vice versa (supplement,
SI). The grid point with the best mean validation score is the net's choice, written as a
``net_overrides`` block. Holdout: the test studies are never loaded here. K-fold: the same is
done inside every outer partition on that partition's training folds (nested cross-validation),
so no partition's settings have seen its test studies; the choice goes to
``net_overrides.<net>.partitions``. A chosen value on the edge of its grid is flagged.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from colearn_pipeline.evaluation import training_curves
from colearn_pipeline.hooks import nested_run
from colearn_pipeline.pipelines.train_eval.nodes import (
    assemble_slices_of,
    evaluate_bundle,
    subset,
    train_net,
)
from colearn_pipeline.pipelines.train_eval.nodes import training_slices as sampled_training_slices
from colearn_pipeline.pipelines.train_eval.params import EvaluationParams, ValidationParams, strict
from colearn_pipeline.evaluation.metrics import scored_slice_mask

logger = logging.getLogger(__name__)

#: Nets whose architecture has the ``baseline_skips`` switch.
SKIP_SWITCH_NETS = ("tb", "tc", "fs")
#: Grid keys whose chosen value must lie inside the grid, not on its edge.
NUMERIC_KEYS = ("learning_rate", "l2_lambda")
GRID_KEYS = ("learning_rate", "l2_lambda", "baseline_skips")


def training_studies(split: Mapping[str, Any]) -> list[str]:
    """Every study that is a training study of some outer partition (holdout: the training set)."""
    return sorted({s for part in split["outer"] for s in part["train"]})


def assemble_training_slices(model_input: Mapping[str, Any], split: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The slices of :func:`training_studies`; a holdout split's test studies are never loaded."""
    return assemble_slices_of(model_input, training_studies(split), "validation (training studies)")


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
    scored = subset(val_set, sorted(set(val_set["study"])), scored_slice_mask(val_set["y"], evaluation.slices,
                                                                                has_tumour=val_set.get("has_tumour")))
    metrics, _ = evaluate_bundle(bundle, scored, evaluation)
    overall = metrics[metrics["roi"] == "overall"]
    return float(overall.groupby("study")["dice"].mean().mean())


def validate_grid(
    training_slices: Mapping[str, np.ndarray],
    split: Mapping[str, Any],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    evaluation_params: Mapping[str, Any],
    validation_params: Mapping[str, Any],
    sampling_params: Mapping[str, Any],
    net: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per outer partition, train ``net`` at every grid point on each training fold, score it on the other.

    A net trains on its fold's slices as train_eval samples them (``params:sampling``) and is scored
    on the other fold's ``evaluation.slices``.

    Returns
    -------
    scores : pandas.DataFrame
        ``net``, ``partition`` (1-based), ``grid_point``, the grid keys, ``fold`` (trained on), ``score``.
    histories : pandas.DataFrame
        Per-epoch rows (with validation loss and accuracy) with ``partition``, ``grid_point`` and ``fold``.
    """
    evaluation = strict(EvaluationParams, evaluation_params, "evaluation")
    validation = strict(ValidationParams, validation_params, "validation")
    nested = split["mode"] == "kfold"
    rows, histories = [], []
    for k, part in enumerate(split["outer"], start=1):
        f1, f2 = (subset(training_slices, fold) for fold in part["folds"][:2])
        for g, point in enumerate(grid_points(validation.grid, net), start=1):
            model_extra, training_extra = _split_point(point)
            model, training = {**model_params, **model_extra}, {**training_params, **training_extra}
            for fold, (train, val) in {1: (f1, f2), 2: (f2, f1)}.items():
                where = f"partition_{k}/" if nested else ""
                label = f"validate/{net}/{where}grid_{g}/fold_{fold}"
                name = f"{net} {f'partition {k} ' if nested else ''}grid {g} fold {fold}"
                with nested_run(name, {"net": net, "partition": k, "fold": fold, "grid_point": g, "model": model,
                                       "training": training}, {"net": net}):
                    bundle, history = train_net(sampled_training_slices(train, sampling_params), model, training, net,
                                                run_label=label, val_set=val)
                    score = _score(bundle, history, val, evaluation, validation.score)
                rows.append({"net": net, "partition": k, "grid_point": g, **point, "fold": fold, "score": score})
                histories.append(history.assign(net=net, partition=k, grid_point=g, fold=fold))
    return pd.DataFrame(rows), pd.concat(histories, ignore_index=True)


def _on_edge(table: pd.DataFrame, row: pd.Series) -> list[str]:
    """The numeric grid keys whose chosen value is the smallest or largest of its (>= 2-point) grid."""
    out = []
    for key in NUMERIC_KEYS:
        if key in table.columns and pd.notna(row[key]):
            values = sorted(table.loc[table["net"] == row["net"], key].dropna().unique())
            if len(values) >= 2 and row[key] in (values[0], values[-1]):
                out.append(key)
    return out


def choose_settings(validation_params: Mapping[str, Any], **scores: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """The scores of every net, and per net and outer partition the grid point with the best mean over folds.

    Returns
    -------
    table : pandas.DataFrame
        All scores, with ``mean_score`` per grid point, ``chosen`` (bool) and ``on_edge`` (the
        chosen point's numeric keys that sit on the edge of their grid, comma-separated).
    chosen : dict
        ``{net: {model: {...}, training: {...}}}`` (one partition: holdout), or
        ``{net: {model: {}, training: {}, partitions: {k: {model, training}}}}`` (K-fold, nested),
        ready for ``params:net_overrides``.
    """
    strict(ValidationParams, validation_params, "validation")
    table = pd.concat(list(scores.values()), ignore_index=True)
    keys = ["net", "partition", "grid_point"]
    table["mean_score"] = table.groupby(keys)["score"].transform("mean")
    best = table.loc[table.groupby(["net", "partition"])["mean_score"].idxmax(), keys]
    table["chosen"] = table.set_index(keys).index.isin(list(best.itertuples(index=False, name=None)))
    table["on_edge"] = ""
    grid_keys = [c for c in table.columns if c in GRID_KEYS]
    nested = table["partition"].nunique() > 1
    chosen: dict[str, dict] = {}
    for net, k, g in best.itertuples(index=False, name=None):
        sel = (table["net"] == net) & (table["partition"] == k) & (table["grid_point"] == g)
        row = table[sel].iloc[0]
        edge = _on_edge(table, row)
        table.loc[sel, "on_edge"] = ",".join(edge)
        if edge:
            logger.warning("validate: %s%s chose %s on the edge of its grid: widen the grid", net,
                           f" partition {k}" if nested else "", {e: _plain(row[e]) for e in edge})
        model, training = _split_point({key: _plain(row[key]) for key in grid_keys if pd.notna(row[key])})
        if nested:
            chosen.setdefault(net, {"model": {}, "training": {}, "partitions": {}})["partitions"][int(k)] = {
                "model": model, "training": training}
        else:
            chosen[net] = {"model": model, "training": training}
    return table, chosen


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def validation_markdown(table: pd.DataFrame, validation_params: Mapping[str, Any]) -> str:
    """The grid scores as Markdown, the chosen point of each net (and partition) marked."""
    v = strict(ValidationParams, validation_params, "validation")
    keys = [c for c in table.columns if c in GRID_KEYS]
    lines = [
        "# Settings chosen on the training folds (validate pipeline)",
        "",
        f"Score: {v.score} of the held-out training fold (in %); the test studies are never used"
        + (" (K-fold: per outer partition, on its own training folds: nested)." if table["partition"].nunique() > 1
           else "."),
        "",
        "| net | partition | grid point | " + " | ".join(keys)
        + " | trained on fold 1 | trained on fold 2 | mean | chosen |",
        "|---|---:|---:|" + "---|" * len(keys) + "---:|---:|---:|---|",
    ]
    for (net, k, g), rows in table.groupby(["net", "partition", "grid_point"], sort=False):
        by_fold = dict(zip(rows["fold"], rows["score"]))
        first = rows.iloc[0]
        mark = ("yes" + (f" (on the grid's edge: {first['on_edge']})" if first["on_edge"] else "")) if first["chosen"] else ""
        lines.append(
            f"| {net} | {k} | {g} | " + " | ".join("" if pd.isna(first[c]) else str(first[c]) for c in keys)
            + f" | {100 * by_fold.get(1, np.nan):.2f} | {100 * by_fold.get(2, np.nan):.2f} "
            f"| {100 * first['mean_score']:.2f} | {mark} |"
        )
    return "\n".join(lines) + "\n"


def plot_validation_curves(**histories: pd.DataFrame) -> Figure:
    """Training and validation curves of every net, partition, grid point and fold."""
    runs = {}
    for h in histories.values():
        for (k, g, f), part in h.groupby(["partition", "grid_point", "fold"]):
            runs[f"{part['net'].iloc[0]} p{k} grid {g} fold {f}"] = part
    return training_curves(runs, title="parameter validation on the training folds")
