"""Thin Kedro node of the preprocess pipeline."""

from __future__ import annotations

import atexit
import csv
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colearn_pipeline.datasets._atomic import atomic_write
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.pipelines.preprocess.cohort import run_cohort

logger = logging.getLogger(__name__)

#: Timed stages of a study (``t_<stage>_s`` columns).
STAGES = ("read", "suv", "resample", "groundtruth", "qa", "write")
#: Manifest columns, in CSV order (lists are written as JSON-like text in the CSV).
MANIFEST_COLUMNS = [
    "pseudonym", "status", "reason", "file", "scanner_convention", "suv_type", "suv_units", "decay_correction",
    "reference_time_source", "suv_factor", "suv_factor_min", "suv_factor_max", "suv_notes", "series_selection",
    "ct_shape_zyx", "pet_shape_zyx", "ct_spacing_xyz_mm", "pet_spacing_xyz_mm", "n_findings", "slices_kept",
    "slice_index", *[f"voxels_{n}" for n in LABELS], "tumours_capped", "tumours_empty",
    *[f"dice_{n}" for n, v in LABELS.items() if v], "suv_median_rel_error", "suv_max_rel_error",
    "suv_voxels_compared", "seconds", "cpu_seconds", *[f"t_{t}_s" for t in STAGES], "peak_rss_mb", "worker_pid",
]

#: Integer columns (nullable in the table: quarantined studies have no value).
INT_COLUMNS = [
    "n_findings", "slices_kept", *[f"voxels_{n}" for n in LABELS], "tumours_capped", "tumours_empty",
    "suv_voxels_compared", "worker_pid",
]


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def _write_pseudonym_map(path: str, study_uids: dict[str, str]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            out = csv.writer(handle)
            out.writerow(["pseudonym", "study_instance_uid"])
            for pseudonym in sorted(study_uids):
                out.writerow([pseudonym, study_uids[pseudonym]])

    atomic_write(path, write)


def preprocess_cohort(params: dict[str, Any], *upstream: Any):
    """Turn the raw DICOM studies into NIfTI volumes, model input and a manifest.

    Parameters
    ----------
    params : dict
        ``params:preprocess`` (conf/base/parameters_preprocess.yml).
    *upstream
        Outputs of upstream pipelines used only for ordering (e.g. ``phantom_cohort``); ignored.

    Returns
    -------
    ct_hu, suv, labels : dict
        ``{pseudonym: pathlib.Path}``: NIfTI files on the CT grid staged by the workers; the
        catalog's datasets move them into place (no study is held in memory here).
    model_input : dict
        ``{pseudonym: pathlib.Path}``: staged NPZ files (docs/architecture.md contract).
    manifest_table : pandas.DataFrame
        One row per study (CSV).
    manifest : dict
        Rows plus the skipped files, report problems and a summary (JSON).
    """
    staging_parent = params.get("staging_dir") or None
    if staging_parent:
        Path(staging_parent).mkdir(parents=True, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".preprocess-staging-", dir=staging_parent)
    atexit.register(shutil.rmtree, staging, True)
    rows, extra = run_cohort(params, staging)
    outputs: dict[str, dict[str, Path]] = {"ct_hu": {}, "suv": {}, "labels": {}, "model_input": {}}
    for row in rows:
        staged = row.pop("_staged", None)
        if row["status"] == "ok" and staged:
            for key in outputs:
                outputs[key][row["pseudonym"]] = Path(staged[key])
    clean_rows = [{k: _clean(row.get(k)) for k in MANIFEST_COLUMNS} for row in rows]
    table = pd.DataFrame(clean_rows, columns=MANIFEST_COLUMNS)
    for col in ("ct_shape_zyx", "pet_shape_zyx", "ct_spacing_xyz_mm", "pet_spacing_xyz_mm", "slice_index"):
        table[col] = table[col].map(lambda v: "" if v is None else " ".join(str(x) for x in v))
    for col in INT_COLUMNS:
        table[col] = table[col].astype("Int64")
    ok = [r for r in clean_rows if r["status"] == "ok"]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    summary = {
        "studies": len(rows),
        "ok": len(ok),
        "quarantined": len(rows) - len(ok),
        "workers": int(params.get("workers", 1)),
        "seconds": extra["seconds"],
        "slices_kept": int(sum(r["slices_kept"] or 0 for r in ok)),
        **{f"mean_dice_{n}": mean(f"dice_{n}") for n, v in LABELS.items() if v},
        "max_suv_median_rel_error": max((r["suv_median_rel_error"] for r in ok if r["suv_median_rel_error"] is not None), default=None),
        "max_suv_max_rel_error": max((r["suv_max_rel_error"] for r in ok if r["suv_max_rel_error"] is not None), default=None),
    }
    manifest = {
        "summary": summary,
        "studies": clean_rows,
        "skipped_files": extra["skipped_files"],
        "report_problems": extra["report_problems"],
    }
    logger.info(
        "preprocess: %d ok, %d quarantined, %d slices in %.1f s", summary["ok"], summary["quarantined"],
        summary["slices_kept"], summary["seconds"],
    )
    map_path = params.get("pseudonym_map_path")
    if map_path:
        _write_pseudonym_map(str(map_path), extra["study_uids"])
    return outputs["ct_hu"], outputs["suv"], outputs["labels"], outputs["model_input"], table, manifest
