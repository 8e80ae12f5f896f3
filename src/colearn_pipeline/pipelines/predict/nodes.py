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
from colearn_pipeline.inference.models import load_bundle
from colearn_pipeline.training.loop import load_model, resolve_device

logger = logging.getLogger(__name__)


def predict_cohort(params: dict[str, Any]):
    """Segment every study under ``params["studies_dir"]`` with the net ``params["model"]``.

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
    """
    studies_dir = Path(str(params["studies_dir"]))
    if not studies_dir.is_dir():
        raise FileNotFoundError(f"predict: studies_dir {studies_dir} does not exist (parameters_predict.yml)")
    bundle, provenance = load_bundle(params["model"])
    device = resolve_device(params.get("device", "auto"))
    model = load_model(bundle, device)
    staging_parent = Path(str(params.get("staging_dir") or tempfile.gettempdir()))
    staging_parent.mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".predict-staging-", dir=staging_parent)
    atexit.register(shutil.rmtree, staging, True)  # the datasets move the files out first
    rows, found = predict_folder(studies_dir, model, bundle, provenance, {**params, "_device": device}, staging)
    ok = [r for r in rows if r["status"] == "ok"]
    logger.info("predict: %d studies found, %d segmented, %d quarantined, %d files skipped",
                len(rows), len(ok), len(rows) - len(ok), len(found.skipped))
    labels = {r["pseudonym"]: r["_paths"]["labels"] for r in ok}
    seg = {r["pseudonym"]: r["_paths"]["seg"] for r in ok}
    sr = {r["pseudonym"]: r["_paths"]["sr"] for r in ok}
    rtstruct = {r["pseudonym"]: r["_paths"]["rtstruct"] for r in ok if "rtstruct" in r["_paths"]}
    summary = {r["pseudonym"]: json.loads(r["_paths"]["summary_json"].read_text()) for r in ok}
    tables = {r["pseudonym"]: pd.read_csv(r["_paths"]["summary_csv"]) for r in ok}
    return labels, seg, sr, rtstruct, summary, tables, manifest_table(rows)
