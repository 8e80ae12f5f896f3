"""Thin Kedro node of the predict pipeline."""

from __future__ import annotations

import atexit
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from colearn_pipeline.inference.cohort import manifest_table, predict_folder
from colearn_pipeline.inference.models import load_ensemble
from colearn_pipeline.inference.segment import (
    InferenceOptions,
    apply_threads,
    prepare_model,
)
from colearn_pipeline.training.loop import resolve_device

logger = logging.getLogger(__name__)


def predict_cohort(params: dict[str, Any]):
    """Segment every study under ``params["studies_dir"]`` with the net(s) ``params["model"]``.

    Parameters
    ----------
    params : dict
        ``params:predict`` (conf/base/parameters_predict.yml).

    Returns
    -------
    labels, seg, sr, rtstruct : dict
        ``{pseudonym: pathlib.Path}``: staged NIfTI label maps, DICOM SEG, DICOM SR (TID 1500) and RTSTRUCT
        files (RTSTRUCT where ``params["formats"]`` names it, else empty), moved into place by the catalog's datasets.
    summary : dict
        ``{pseudonym: dict}`` (JSON).
    summary_table : dict
        ``{pseudonym: pandas.DataFrame}`` (CSV).
    manifest_table : pandas.DataFrame
        One row per study found: ``ok`` or ``quarantined`` with the file and the reason.
    uncertainty, disagreement : dict
        ``{pseudonym: pathlib.Path}``: staged NIfTI maps on the CT grid (entropy of the ensemble mean / ln 4,
        the share of members and views disagreeing with the ensemble label).
    """
    studies_dir = Path(str(params["studies_dir"]))
    if not studies_dir.is_dir():
        raise FileNotFoundError(f"predict: studies_dir {studies_dir} does not exist (parameters_predict.yml)")
    options = InferenceOptions.from_mapping(params.get("inference"), batch_size=params.get("batch_size"))
    apply_threads(options)
    device = resolve_device(params.get("device", "auto"))
    ensemble = load_ensemble(params["model"], device, lambda m, b: prepare_model(m, options, b["input_hw"], device))
    staging_parent = Path(str(params.get("staging_dir") or tempfile.gettempdir()))
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".predict-staging-", dir=staging_parent)
    atexit.register(shutil.rmtree, staging, True)  # the datasets move the files out first
    rows, found = predict_folder(studies_dir, ensemble, {**params, "_device": device}, staging)
    ok = [r for r in rows if r["status"] == "ok"]
    logger.info("predict: %d studies found, %d segmented, %d quarantined, %d files skipped",
                len(rows), len(ok), len(rows) - len(ok), len(found.skipped))
    labels = {r["pseudonym"]: r["_paths"]["labels"] for r in ok}
    seg = {r["pseudonym"]: r["_paths"]["seg"] for r in ok}
    sr = {r["pseudonym"]: r["_paths"]["sr"] for r in ok}
    rtstruct = {r["pseudonym"]: r["_paths"]["rtstruct"] for r in ok if "rtstruct" in r["_paths"]}
    uncertainty = {r["pseudonym"]: r["_paths"]["uncertainty"] for r in ok}
    disagreement = {r["pseudonym"]: r["_paths"]["disagreement"] for r in ok}
    summary = {r["pseudonym"]: json.loads(r["_paths"]["summary_json"].read_text()) for r in ok}
    tables = {r["pseudonym"]: pd.read_csv(r["_paths"]["summary_csv"]) for r in ok}
    return labels, seg, sr, rtstruct, summary, tables, manifest_table(rows), uncertainty, disagreement
