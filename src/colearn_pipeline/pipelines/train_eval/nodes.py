"""Thin nodes of the ``train_eval`` pipeline; the work is in ``training`` and ``evaluation``.

Parameters are read through the strict dataclasses of :mod:`.params` (no fallback values here).
"""

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
from colearn_pipeline.evaluation.answers import PowerTarget, answers_markdown
from colearn_pipeline.evaluation.comparison import (
    ComparisonSettings,
    study_level_table,
    study_table_markdown,
)
from colearn_pipeline.evaluation.lesions import (
    LESION_METRICS,
    model_input_lesion_metrics,
)
from colearn_pipeline.evaluation.metrics import METRICS, scored_slice_mask
from colearn_pipeline.evaluation.tables import (
    NET_LABELS,
    ROI_ORDER,
    format_table_ii,
    lesion_table_markdown,
    scoring_comparison_markdown,
)
from colearn_pipeline.hooks import nested_run
from colearn_pipeline.pipelines.train_eval.params import (
    EvaluationParams,
    FigureParams,
    ProtocolParams,
    ReportingParams,
    SamplingParams,
    SplitParams,
    net_overrides,
    strict,
)
from colearn_pipeline.training import (
    assemble_slices,
    check_split,
    load_model,
    make_split,
    resolve_device,
)
from colearn_pipeline.training.data import training_slice_mask
from colearn_pipeline.training.loop import TrainConfig, train_model
from colearn_pipeline.training.split import make_kfold_split

logger = logging.getLogger(__name__)


def study_name(partition_id: str) -> str:
    """Pseudonym of a model-input partition (its file name without folders and ``.npz``)."""
    return Path(partition_id).name.removesuffix(".npz")


def _by_study(model_input: Mapping[str, Any]) -> dict[str, Any]:
    return {study_name(k): v for k, v in model_input.items()}


def study_patients(model_input: Mapping[str, Any]) -> dict[str, str]:
    """Study pseudonym -> patient pseudonym, from the model-input records (preprocess writes ``patient``).

    A study whose record has none (model input of an older preprocess run, or plain NPZ files) is
    a patient of its own; how many is logged.
    """
    out, missing = {}, 0
    for key, part in model_input.items():
        row = (getattr(part, "record", None) or {}).get("row") or {}
        name = study_name(key)
        out[name] = str(row.get("patient") or name)
        missing += not row.get("patient")
    if missing:
        logger.warning("split: %d of %d studies carry no patient pseudonym (rerun preprocess): each is split as a "
                       "patient of its own", missing, len(out))
    return out


def split_studies(model_input: Mapping[str, Any], split_params: Mapping[str, Any]) -> dict:
    """Patient-level split of the model input (``params:split``: holdout or K-fold).

    Only the partition names and records are used, so no study is loaded here.
    """
    p = strict(SplitParams, split_params, "split")
    patients = study_patients(model_input)
    names = list(patients)
    if p.mode == "kfold":
        split = make_kfold_split(names, k=p.k, n_folds=p.n_folds, seed=p.seed, patients=patients)
    else:
        split = make_split(names, test_fraction=p.test_fraction, n_folds=p.n_folds, seed=p.seed, patients=patients)
    check_split(split)
    logger.info(
        "split (%s, by patient: %d studies of %d patients): %d partition(s); test studies per partition %s",
        p.mode, len(names), len(set(patients.values())), len(split["outer"]), [len(o["test"]) for o in split["outer"]],
    )
    return split


def assemble_set(model_input: Mapping[str, Any], split: Mapping[str, Any], which: str) -> dict[str, np.ndarray]:
    """Standardised slices of ``all`` studies, the first partition's ``train`` / ``test``
    studies, or training fold ``fold_<k>`` (1-based) of the first partition."""
    if which == "all":
        studies = sorted(set(split["train"]) | set(split["test"]))
    elif which.startswith("fold_"):
        studies = split["folds"][int(which.removeprefix("fold_")) - 1]
    else:
        studies = split[which]
    return assemble_slices_of(model_input, studies, which)


def assemble_slices_of(model_input: Mapping[str, Any], studies: list[str], what: str) -> dict[str, np.ndarray]:
    """Standardised slices of some studies of the model input (only those are loaded)."""
    data = assemble_slices(_by_study(model_input), studies)
    logger.info("%s set: %d slices from %d studies", what, len(data["x"]), len(studies))
    return data


def subset(slices: Mapping[str, np.ndarray], studies: list[str], mask: np.ndarray | None = None) -> dict:
    """The slices of ``studies`` (and, if given, where ``mask`` is true), in stored order."""
    keep = np.isin(slices["study"], list(studies))
    if mask is not None:
        keep &= mask
    if not keep.any():
        raise ValueError(f"no slices for studies {sorted(studies)}")
    return {k: np.asarray(v)[keep] for k, v in slices.items()}


def test_set_of(all_slices: Mapping[str, np.ndarray], studies: list[str], evaluation: EvaluationParams) -> dict:
    """The scored slices of some test studies (``evaluation.slices``: all_thorax or tumour)."""
    return subset(all_slices, studies, scored_slice_mask(np.asarray(all_slices["y"]), evaluation.slices,
                                                         has_tumour=all_slices.get("has_tumour")))


def training_slices(train_set: Mapping[str, np.ndarray], sampling_params: Mapping[str, Any] | SamplingParams) -> dict:
    """The slices of the training studies a net trains on (``params:sampling``): the tumour slices
    (the paper) plus ``tumour_free_share`` tumour-free thorax slices per tumour slice."""
    p = sampling_params if isinstance(sampling_params, SamplingParams) else strict(SamplingParams, sampling_params,
                                                                                  "sampling")
    keep = training_slice_mask(train_set["has_tumour"], p.tumour_free_share, p.seed)
    if not keep.any():
        raise ValueError("no training slice: the training studies hold no tumour slice and "
                         "sampling.tumour_free_share is 0")
    logger.info("training on %d of %d thorax slices (%d with tumour)", int(keep.sum()), len(keep),
                int(np.count_nonzero(train_set["has_tumour"])))
    return {k: np.asarray(v)[keep] for k, v in train_set.items()}


def assemble_test_set(all_slices: Mapping[str, np.ndarray], split: Mapping[str, Any],
                      evaluation_params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The first partition's scored test slices (for Fig. 5 and Fig. 6)."""
    return test_set_of(all_slices, split["outer"][0]["test"], strict(EvaluationParams, evaluation_params, "evaluation"))


#: Table II's baselines: always the paper's skip-less TB, TC and FS (the skip variant is the ablation's tb_skips).
SKIPLESS_BASELINES = ("tb", "tc", "fs")


def _net_settings(net: str, model_params: Mapping, training_params: Mapping, overrides: Mapping,
                  partition: int | None = None) -> tuple[dict, dict]:
    model_extra, training_extra = net_overrides(overrides, net, partition)
    model = {**model_params, **model_extra}
    if net in SKIPLESS_BASELINES and model.get("baseline_skips"):
        raise ValueError(f"{net}: Table II's TB, TC and FS are the paper's skip-less baselines; model.baseline_skips "
                         "(or net_overrides) must be false. The two-branch net with skips is the ablation's tb_skips")
    return model, {**training_params, **training_extra}


def _mlflow_epoch_logger():
    """A callback logging an epoch row to the active MLflow run, or None without one."""
    import mlflow

    if mlflow.active_run() is None:
        return None

    def log(row: dict[str, float]) -> None:
        values = {k: float(v) for k, v in row.items() if k != "epoch" and np.isfinite(v)}
        mlflow.log_metrics(values, step=int(row["epoch"]))

    return log


def train_net(
    train_set: Mapping[str, np.ndarray],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    net: str,
    run_label: str | None = None,
    val_set: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """Train ``net``; checkpoints in ``<checkpoint_root>/<run_label or net>/checkpoints``.

    Per-epoch metrics go to the active MLflow run when there is one.
    """
    cfg = TrainConfig.from_params(training_params)
    label = run_label or net
    ckpt = Path(cfg.checkpoint_root) / label / "checkpoints" if cfg.checkpoint_root else None
    bundle, history = train_model(
        net, model_params, train_set, cfg, val_set=val_set, checkpoint_dir=ckpt, on_epoch_end=_mlflow_epoch_logger()
    )
    return bundle, pd.DataFrame(history)


def evaluate_bundle(bundle: Mapping[str, Any], test_set: Mapping[str, np.ndarray],
                    evaluation: EvaluationParams) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-slice, per-ROI metrics of a trained net on scored test slices, and its labels."""
    device = resolve_device(evaluation.device)
    pred = predict_labels(load_model(bundle, device), test_set["x"], evaluation.batch_size, device)
    metrics = slice_metrics(pred, test_set["y"], test_set["study"], test_set["slice_index"],
                            overall_includes_background=evaluation.overall_includes_background)
    if "has_tumour" in test_set:
        metrics["has_tumour"] = np.asarray(test_set["has_tumour"], dtype=bool)[metrics["slice"].to_numpy()]
    return metrics, pred


def _log_seed_metrics(metrics: pd.DataFrame, lesions: pd.DataFrame) -> None:
    import mlflow

    if mlflow.active_run() is None:
        return
    study = metrics.groupby(["roi", "study"])[list(METRICS)].mean().groupby("roi").mean()
    values = {f"test_{roi}_{m}": float(v) for roi, row in study.iterrows() for m, v in row.items()}
    values.update({f"test_lesion_{m}": float(v) for m, v in lesions[list(LESION_METRICS)].mean().items()})
    mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)})


def study_lesions(pred: np.ndarray, test_set: Mapping[str, np.ndarray], model_input: Mapping[str, Any]) -> pd.DataFrame:
    """Lesion-level metrics (:mod:`colearn_pipeline.evaluation.lesions`) of each study of a test set
    that holds all of its thorax slices; one row per study."""
    by_study = _by_study(model_input)
    rows = []
    for name in dict.fromkeys(test_set["study"]):
        study = by_study[name]
        study = study() if callable(study) else study
        mine = np.asarray(test_set["study"]) == name
        if not np.array_equal(np.asarray(test_set["slice_index"])[mine], np.asarray(study["slice_index"])):
            raise ValueError(f"{name}: the test slices are not the model input's slices (slice_index differs)")
        rows.append({"study": name, **model_input_lesion_metrics(pred[mine], study)})
    return pd.DataFrame(rows, columns=["study", *LESION_METRICS])


def _one_run(net, part_index, part, seed, all_slices, model_input, settings):
    """Train and evaluate one (partition, seed) in its own nested MLflow run."""
    model, training, evaluation, sampling = settings
    cfg = {**training, "seed": int(seed)}
    name = f"{net} seed {seed}" + (f" fold {part_index + 1}" if part_index is not None else "")
    run_params = {"net": net, "seed": seed, "fold": part_index + 1 if part_index is not None else "holdout",
                  "model": model, "training": cfg}
    with nested_run(name, run_params, {"net": net, "seed": str(seed)}):
        # checkpoints of every seed and partition under <root>/<net>/checkpoints/<fingerprint>:
        # the fingerprint covers seed and training data, and colearn-train writes the same path
        bundle, history = train_net(training_slices(subset(all_slices, part["train"]), sampling), model, cfg, net)
        thorax = subset(all_slices, part["test"])           # every thorax slice: the 3D lesion metrics
        metrics, pred = evaluate_bundle(bundle, thorax, evaluation)
        scored = scored_slice_mask(thorax["y"], evaluation.slices, has_tumour=thorax["has_tumour"])
        metrics = metrics[scored[metrics["slice"].to_numpy()]]
        lesions = study_lesions(pred, thorax, model_input)
        _log_seed_metrics(metrics, lesions)
    fold = part_index + 1 if part_index is not None else 1
    tags = {"net": net, "seed": seed, "fold": fold}
    return bundle, history.assign(**{k: tags[k] for k in ("seed", "fold")}), metrics.assign(**tags), \
        pred[scored], lesions.assign(**tags)


def train_evaluate_net(
    all_slices: Mapping[str, np.ndarray],
    split: Mapping[str, Any],
    model_input: Mapping[str, Any],
    model_params: Mapping[str, Any],
    training_params: Mapping[str, Any],
    evaluation_params: Mapping[str, Any],
    protocol_params: Mapping[str, Any],
    sampling_params: Mapping[str, Any],
    overrides: Mapping[str, Any],
    net: str,
) -> tuple[dict, pd.DataFrame, pd.DataFrame, dict[str, np.ndarray], pd.DataFrame]:
    """Train ``net`` once per seed (``protocol.seeds``) and split partition on the sampled training
    slices; score every partition's test slices and each test study's lesions.

    Returns
    -------
    model : dict
        Bundle of the first seed on the first partition (``data/06_models/<net>/model.pt``).
    history : pandas.DataFrame
        Per-epoch rows with ``seed`` and ``fold``.
    slice_metrics : pandas.DataFrame
        Per-slice, per-ROI metrics of every seed and partition (``net``, ``seed``, ``fold``,
        ``has_tumour``) on the scored slices (``evaluation.slices``).
    test_predictions : dict
        Labels of the first seed on the first partition's scored test slices (Fig. 5).
    lesion_metrics : pandas.DataFrame
        One row per seed, partition and test study: :data:`LESION_METRICS` on all its thorax slices.
    """
    evaluation = strict(EvaluationParams, evaluation_params, "evaluation")
    seeds = strict(ProtocolParams, protocol_params, "protocol").checked_seeds(training_params["seed"])
    sampling = strict(SamplingParams, sampling_params, "sampling")
    kfold = split["mode"] == "kfold"
    results = []
    for k, part in enumerate(split["outer"]):  # settings per outer partition: nested validation's choice
        settings = (*_net_settings(net, model_params, training_params, overrides, k + 1), evaluation, sampling)
        results += [_one_run(net, k if kfold else None, part, seed, all_slices, model_input, settings)
                    for seed in seeds]
    first = results[0]
    history = pd.concat([r[1] for r in results], ignore_index=True)
    metrics = pd.concat([r[2] for r in results], ignore_index=True)
    lesions = pd.concat([r[4] for r in results], ignore_index=True)
    return first[0], history, metrics, {"labels": first[3]}, lesions


def plot_training_curves(history: pd.DataFrame, net: str) -> Figure:
    """Training curves of one net, one line per seed and partition."""
    runs = {f"{net} seed {s} fold {f}": h for (s, f), h in history.groupby(["seed", "fold"])}
    return training_curves(runs, title=f"{net}: training")


def collect_slice_metrics(**slice_metrics_by_net: pd.DataFrame) -> pd.DataFrame:
    """One long per-slice metrics table of every net, seed and partition."""
    return pd.concat(list(slice_metrics_by_net.values()), ignore_index=True)


def _settings(evaluation: EvaluationParams) -> ComparisonSettings:
    return ComparisonSettings(reference=evaluation.reference, alpha=evaluation.alpha,
                              n_bootstrap=evaluation.n_bootstrap, bootstrap_seed=evaluation.bootstrap_seed,
                              confidence=evaluation.confidence, primary_roi=evaluation.primary_endpoint["roi"],
                              primary_metric=evaluation.primary_endpoint["metric"])


def _study_table(per_slice: pd.DataFrame, nets: list[str], evaluation_params: Mapping, title: str):
    evaluation = strict(EvaluationParams, evaluation_params, "evaluation")
    settings = _settings(evaluation)
    nets = [*nets, evaluation.reference]
    table = study_level_table(per_slice, nets, list(ROI_ORDER), list(METRICS), settings)
    return table, study_table_markdown(table, title, NET_LABELS, settings)


def build_table_ii(per_slice: pd.DataFrame, evaluation_params: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """Table II, study-level primary analysis: the reference net against the baselines."""
    baselines = list(strict(EvaluationParams, evaluation_params, "evaluation").baselines)
    return _study_table(per_slice, baselines, evaluation_params,
                        "Table II: comparison of CNNs (study-level; primary endpoint, then secondary rows)")


def build_ablation_table(per_slice: pd.DataFrame, evaluation_params: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """Ablation table: the reference net against tb_skips and the capacity-matched control."""
    ablation = list(strict(EvaluationParams, evaluation_params, "evaluation").ablation)
    return _study_table(per_slice, ablation, evaluation_params,
                        "Ablation: is it the fusion maps, or the skips and parameters? (study-level)")


def build_paper_protocol_table(
    per_slice: pd.DataFrame, evaluation_params: Mapping[str, Any], protocol_params: Mapping[str, Any]
) -> tuple[pd.DataFrame, str]:
    """The paper's protocol (slice-level two-sample t-tests, unadjusted) on the first seed and the
    tumour slices only (the slices whose ground truth holds tumour), whatever ``evaluation.slices``."""
    evaluation = strict(EvaluationParams, evaluation_params, "evaluation")
    first_seed = strict(ProtocolParams, protocol_params, "protocol").seeds[0]
    nets = [*evaluation.baselines, evaluation.reference]
    tumour = per_slice["has_tumour"].astype(bool) if "has_tumour" in per_slice else True
    first = per_slice[(per_slice["seed"] == first_seed) & per_slice["net"].isin(nets) & tumour]
    by_net = {net: df for net, df in first.groupby("net")}
    summary = summarise(by_net, reference=evaluation.reference, alpha=evaluation.alpha,
                        equal_var=evaluation.equal_var)
    one = by_net[evaluation.reference]
    n_slices = one[["study", "slice_index", "fold"]].drop_duplicates().shape[0]
    md = table_ii_markdown(summary, alpha=evaluation.alpha, n_slices=n_slices, n_studies=one["study"].nunique(),
                           overall_includes_background=evaluation.overall_includes_background)
    md += (f"Training seed {first_seed} only (the paper trained once); scored on the tumour slices only "
           "(the paper's protocol), not every thorax slice.\n")
    if "has_tumour" in per_slice:
        md += "\n" + scoring_comparison_markdown(per_slice, [*nets, *evaluation.ablation])
    table = pd.concat([format_table_ii(summary, alpha=evaluation.alpha), summary.drop(columns=["roi", "cnn"])], axis=1)
    return table, md


def write_answers(table_ii: pd.DataFrame, ablation: pd.DataFrame, evaluation_params: Mapping[str, Any]) -> str:
    """``answers.md``: the primary endpoint's effects, what survives Holm, power, ablation, secondary rows."""
    e = strict(EvaluationParams, evaluation_params, "evaluation")
    return answers_markdown(table_ii, ablation, _settings(e), NET_LABELS,
                            PowerTarget(difference=float(e.power["difference"]), power=float(e.power["power"])),
                            rois=["lungs", "mediastinum", "tumours", "overall"],
                            n_seeds=int(table_ii["n_seeds"].max()) if len(table_ii) else 0, slices=e.slices)


def collect_lesion_metrics(**lesion_metrics_by_net: pd.DataFrame) -> pd.DataFrame:
    """``lesion_metrics.csv``: one row per net, seed, partition and test study."""
    table = pd.concat(list(lesion_metrics_by_net.values()), ignore_index=True)
    return table[["net", "seed", "fold", "study", *LESION_METRICS]]


def build_lesion_table(lesions: pd.DataFrame, evaluation_params: Mapping[str, Any]) -> tuple[pd.DataFrame, str]:
    """Study-level comparison of the lesion-level metrics: the reference net against every other net."""
    e = strict(EvaluationParams, evaluation_params, "evaluation")
    settings = _settings(e)
    nets = [n for n in dict.fromkeys(lesions["net"]) if n != e.reference] + [e.reference]
    long = lesions.assign(roi="lesions")
    table = study_level_table(long, nets, ["lesions"], list(LESION_METRICS), settings)
    title = ("Lesion-level and volume metrics per test study (autoPET: 3D Dice, FPV/FNV in mL at 18-connectivity; "
             "detection; MTV, SUVmax)")
    return table, lesion_table_markdown(table, title, NET_LABELS, e.reference, e.confidence)


def plot_segmentations(
    test_set: Mapping[str, np.ndarray], figure_params: Mapping[str, Any], **predictions_by_net: Mapping[str, Any]
) -> Figure:
    """Fig. 5: fused PET-CT, ground truth and every net's labels for a few test slices."""
    f = strict(FigureParams, figure_params, "figures")
    slices = select_slices(test_set["y"], f.n_slices)
    titles = [f"{test_set['study'][i]} z={int(test_set['slice_index'][i])}" for i in slices]
    return segmentation_panels(
        test_set["x"], test_set["y"], {n: p["labels"] for n, p in predictions_by_net.items()}, slices,
        pet_cmap=f.pet_cmap, pet_alpha=float(f.pet_alpha), titles=titles,
    )


def plot_fusion_maps(
    bundle: Mapping[str, Any], test_set: Mapping[str, np.ndarray], figure_params: Mapping[str, Any]
) -> Figure:
    """Fig. 6: the first co-learning unit's fusion map on the test slice with the most tumour."""
    f = strict(FigureParams, figure_params, "figures")
    i = select_slices(test_set["y"], 1)[0]
    fmap = first_fusion_map(load_model(bundle, "cpu"), test_set["x"][i])
    return fusion_map_grid(
        fmap, columns=f.fusion_columns,
        title=f"first co-learning unit, {test_set['study'][i]} z={int(test_set['slice_index'][i])}",
    )


def report_results(table_ii_md: str, answers_md: str, reporting_params: Mapping[str, Any]) -> None:
    """Print Table II and the answers, and say where the tables, figures and MLflow runs are.

    Printed (not only logged) so the Markdown keeps its layout on the console.
    """
    r = strict(ReportingParams, reporting_params, "reporting")
    print(
        f"\n{table_ii_md}\n{answers_md}\n"
        f"Table II:  {r.folder}/table_ii.md (study-level), {r.folder}/table_ii_paper_protocol.md, "
        f"{r.folder}/table_ablation.md, {r.folder}/table_lesions.md, {r.folder}/answers.md (tables also as .csv)\n"
        f"Lesions:   {r.folder}/lesion_metrics.csv (per net, seed and test study: 3D Dice, FPV, FNV, detection)\n"
        f"Figures:   {r.folder}/fig5_segmentations.png, {r.folder}/fig6_fusion_maps.png, "
        f"{r.folder}/<net>/training_curves.png\n"
        f"Models:    data/06_models/<net>/model.pt (colearn-predict --model ...)\n"
        f"MLflow:    mlflow ui --backend-store-uri {r.mlflow_uri_hint}\n",
        flush=True,
    )
    logger.info("Table II written to %s/table_ii.md", r.folder)

