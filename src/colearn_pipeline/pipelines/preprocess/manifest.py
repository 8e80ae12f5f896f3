"""The manifest nodes: one row per study from the stored records of every stage, and the run's verdict."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colearn_pipeline.datasets._atomic import atomic_write
from colearn_pipeline.datasets.study_partitions import (
    FAILED,
    OK,
    QUARANTINED,
    StudyPartitions,
)
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.pipelines.preprocess.params import ManifestParams, build
from colearn_pipeline.pipelines.preprocess.study import TUMOURS_UNLABELLED

logger = logging.getLogger(__name__)

#: Stages in pipeline order (``t_<stage>_s`` columns: wall seconds of the run that computed them).
STAGES = ("read_series", "suv", "pet_to_ct", "lungs", "mediastinum", "tumours", "labels", "model_input")
#: Ground-truth quality figures (labels stage; docs/preprocess.md "Ground-truth quality").
QUALITY_COLUMNS = ["lung_ml", "mediastinum_ml", "mediastinum_outside_hull", "lung_balance", "tumour_ml",
                   "tumour_peak_to_threshold", "tumour_in_aerated_lung_ml"]
#: Expert contours (labels stage; docs/groundtruth.md "Expert contours"): the files used, the classes from
#: the expert and from the derived labels, ROI names no rule mapped, and the derived labels scored against them.
EXPERT_LIST_COLUMNS = ("expert_files", "expert_classes", "labels_from_derived", "expert_unmapped_rois")
EXPERT_COLUMNS = [*EXPERT_LIST_COLUMNS, "expert_notes",
                  *[f"expert_{m}_{n}" for n, v in LABELS.items() if v for m in ("dice", "volume_ratio", "msd_mm")]]
#: Manifest columns, in CSV order (lists are written as space-separated text in the CSV).
MANIFEST_COLUMNS = [
    "pseudonym", "patient", "status", "reason", "file", "stage", "scanner_convention", "suv_type", "suv_units",
    "decay_correction", "reference_time_source", "suv_factor", "suv_factor_min", "suv_factor_max", "suv_notes",
    "series_selection", "ct_series", "pet_series", "n_skipped_files", "n_corrupt_files", "ct_shape_zyx", "pet_shape_zyx", "ct_spacing_xyz_mm", "pet_spacing_xyz_mm", "n_findings",
    "thorax_extent", "pet_covered_slices", "ct_slices_without_pet", "series_notes", "n_findings_not_followed",
    "slices_kept", "slice_index", *[f"voxels_{n}" for n in LABELS], "tumours_capped", "tumours_empty",
    "has_report", "ct_body_part_examined", "labels_source", "labels_correction", *EXPERT_COLUMNS, *QUALITY_COLUMNS,
    *[f"dice_{n}" for n, v in LABELS.items() if v], "suv_median_rel_error", "suv_max_rel_error",
    "suv_voxels_compared", "seconds", *[f"t_{s}_s" for s in STAGES], "peak_rss_mb",
]
#: Fields of the JSON manifest's study rows only (lists of dicts: every series' selection reason,
#: the skipped and corrupt files by label); the CSV has their summary columns above.
JSON_ONLY_COLUMNS = ["series_records", "skipped_files", "corrupt_files", "findings_not_followed", "expert_agreement"]
#: Integer columns (nullable in the table: quarantined studies have no value).
INT_COLUMNS = [
    "n_findings", "n_findings_not_followed", "ct_slices_without_pet",
    "n_skipped_files", "n_corrupt_files", "slices_kept", *[f"voxels_{n}" for n in LABELS], "tumours_capped", "tumours_empty",
    "suv_voxels_compared",
]
LIST_COLUMNS = ("thorax_extent", "pet_covered_slices",
                "ct_shape_zyx", "pet_shape_zyx", "ct_spacing_xyz_mm", "pet_spacing_xyz_mm", "slice_index", "tumour_ml",
                "tumour_peak_to_threshold", *EXPERT_LIST_COLUMNS)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


def study_row(pseudonym: str, records: dict[str, dict | None]) -> dict[str, Any]:
    """One manifest row: the stages' fields merged; status and reason of the first stage that was not ok.

    The row has :data:`MANIFEST_COLUMNS` (the CSV) and :data:`JSON_ONLY_COLUMNS` (JSON only).
    """
    row: dict[str, Any] = {"pseudonym": pseudonym, "status": OK, "reason": "", "file": "", "stage": ""}
    for stage, record in records.items():
        if record is None:
            row.update(status=FAILED, reason="not processed by this stage", stage=stage, file="-")
            break
        fields = dict(record.get("row") or {})
        if record.get("status") == FAILED and record.get("previous"):
            fields = dict(record["previous"].get("row") or {})  # the earlier outputs kept on disk
        row.update({k: v for k, v in fields.items() if k in MANIFEST_COLUMNS or k in JSON_ONLY_COLUMNS})
        if record.get("status") != OK:
            row.update(status=record.get("status"), reason=record.get("reason", ""), file=record.get("file", ""),
                       stage=stage)
            if row["status"] == QUARANTINED and stage == "model_input" and row["reason"].startswith(TUMOURS_UNLABELLED):
                row["status"] = TUMOURS_UNLABELLED  # converted, no tumour label: for prediction, not training
            break
    times = [row.get(f"t_{s}_s") for s in STAGES]
    row["seconds"] = round(sum(t for t in times if t is not None), 3) if any(t is not None for t in times) else None
    peaks = [v for s in STAGES for k, v in ((records.get(s) or {}).get("row") or {}).items() if k == f"peak_rss_{s}_mb"]
    row["peak_rss_mb"] = max(peaks) if peaks else None
    return {k: _clean(row.get(k)) for k in [*MANIFEST_COLUMNS, *JSON_ONLY_COLUMNS]}


def write_manifest(discovery: dict, studies: StudyPartitions, series: StudyPartitions, suv_pet: StudyPartitions,
                   suv: StudyPartitions, lungs: StudyPartitions, mediastinum: StudyPartitions,
                   tumours: StudyPartitions, labels: StudyPartitions, model_input: StudyPartitions):
    """The manifest of the cohort as the stored records say it is (so it matches what is on disk).

    Returns
    -------
    table : pandas.DataFrame
        One row per study (CSV).
    manifest : dict
        ``summary``, ``studies`` (rows), ``skipped_files``, ``report_problems`` (JSON).
    """
    stages = {"discover_studies": studies, "read_series": series, "suv": suv_pet, "pet_to_ct": suv, "lungs": lungs,
              "mediastinum": mediastinum, "tumours": tumours, "labels": labels, "model_input": model_input}
    rows = [study_row(p, {s: d.records.get(p) for s, d in stages.items()}) for p in sorted(studies.records)]
    table = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    for col in LIST_COLUMNS:
        table[col] = table[col].map(lambda v: "" if v is None else " ".join(str(x) for x in v))
    for col in INT_COLUMNS:
        table[col] = table[col].astype("Int64")
    ok = [r for r in rows if r["status"] == OK]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    summary = {
        "studies": len(rows), "ok": len(ok),
        "quarantined": sum(r["status"] == QUARANTINED for r in rows),
        "failed": sum(r["status"] == FAILED for r in rows),
        TUMOURS_UNLABELLED: sum(r["status"] == TUMOURS_UNLABELLED for r in rows),
        "slices_kept": int(sum(r["slices_kept"] or 0 for r in ok)),
        **{f"mean_dice_{n}": mean(f"dice_{n}") for n, v in LABELS.items() if v},
        "labels_expert": sum(r.get("labels_source") == "expert" for r in ok),
        **{f"mean_expert_dice_{n}": mean(f"expert_dice_{n}") for n, v in LABELS.items() if v},
        "max_suv_median_rel_error": max((r["suv_median_rel_error"] for r in ok if r["suv_median_rel_error"] is not None), default=None),
        "max_suv_max_rel_error": max((r["suv_max_rel_error"] for r in ok if r["suv_max_rel_error"] is not None), default=None),
    }
    logger.info("preprocess: %d ok, %d quarantined, %d failed, %d %s, %d slices", summary["ok"], summary["quarantined"],
                summary["failed"], summary[TUMOURS_UNLABELLED], TUMOURS_UNLABELLED, summary["slices_kept"])
    manifest = {"summary": summary, "studies": rows, **discovery}
    return table, manifest


class PreprocessRunError(RuntimeError):
    """The run produced no usable study, or a study failed for a reason other than its input."""


def check_outcome(manifest: dict, params: dict) -> None:
    """Fail the run when a study ``failed`` or none is ok; warn loudly above the quarantined fraction."""
    settings = build(ManifestParams, params, "preprocess.manifest")
    summary = manifest["summary"]
    failed = [r["pseudonym"] for r in manifest["studies"] if r["status"] == FAILED]
    if summary["studies"] and summary["quarantined"] / summary["studies"] > settings.max_quarantined_fraction:
        logger.warning("preprocess: !!! %d of %d studies quarantined (above %.0f %%): check the manifest !!!",
                       summary["quarantined"], summary["studies"], 100 * settings.max_quarantined_fraction)
    if failed:
        raise PreprocessRunError(f"preprocess: {len(failed)} studies failed (not their input's fault): "
                                 f"{', '.join(failed)}; earlier outputs of them were kept; see the manifest")
    if summary["ok"] == 0:
        raise PreprocessRunError(f"preprocess: no study came out ok ({summary['studies']} studies); see the manifest")


#: The preprocess run's status file, beside the manifest: ``running``, ``complete`` or ``failed``.
RUN_STATUS_NAME = "preprocess_run_status.json"
#: The manifest's catalog datasets (JSON and CSV) and the node that writes them.
MANIFEST_DATASETS = ("preprocess_manifest", "preprocess_manifest_table")
MANIFEST_NODE = "write_manifest"
#: What the manifest of the run before is renamed to while a run is under way: never left looking current.
PREVIOUS_INFIX = ".previous"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def previous_path(path: str | os.PathLike) -> Path:
    """``preprocess_manifest.json`` -> ``preprocess_manifest.previous.json``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{PREVIOUS_INFIX}{path.suffix}")


@dataclass
class RunStatus:
    """The status file of one preprocess run and the manifests it makes stale until it completes."""

    path: Path
    manifests: list[Path]
    started: str

    def write(self, status: str, **fields: Any) -> None:
        """Write the status atomically; a disk that cannot take it is logged, not raised (the run's error wins)."""
        record = {"status": status, "started": self.started, "pid": os.getpid(), **fields}
        try:
            atomic_write(self.path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2)))
        except OSError as exc:
            logger.error("preprocess: the run status %s could not be written (%s)", self.path.name, exc.strerror)

    def finish(self) -> None:
        """The run completed: its manifest is current, the previous one is removed."""
        for path in self.manifests:
            previous_path(path).unlink(missing_ok=True)
        self.write("complete", ended=_now(), manifest=[p.name for p in self.manifests])

    def fail(self, problem: str, environment: bool) -> None:
        """The run failed. A manifest this run wrote whole (the run failed after it, e.g. no study ok) is current;
        otherwise -- or after an environment failure, which may have cut it short -- any new manifest is removed
        and the one of the run before stays renamed ``*.previous.*``, not current."""
        if not environment and all(p.is_file() for p in self.manifests):
            for path in self.manifests:
                previous_path(path).unlink(missing_ok=True)
            self.write("failed", ended=_now(), problem=problem, manifest=[p.name for p in self.manifests],
                       note="the manifest is this run's: it says which studies were not ok and why")
            return
        for path in self.manifests:
            path.unlink(missing_ok=True)
        kept = [previous_path(p).name for p in self.manifests if previous_path(p).exists()]
        self.write("failed", ended=_now(), problem=problem, previous_manifest=kept,
                   note="the manifest is not current; run again after fixing the problem: the run resumes")


def _dataset_path(catalog, name: str) -> Path | None:
    try:
        dataset = catalog.get(name)
    except Exception:  # noqa: BLE001 - a catalog without the dataset (a test catalog): nothing to mark
        return None
    path = getattr(dataset, "_filepath", None)
    return Path(str(path)) if path else None


def begin_run(catalog, pipeline) -> RunStatus | None:
    """Before a run that writes the manifest: rename the current manifest ``*.previous.*`` and record ``running``.

    Renaming needs no free space, so even on a full disk no earlier manifest is left looking
    current; :meth:`RunStatus.finish` or :meth:`RunStatus.fail` ends the record. None for a
    pipeline that does not write the manifest.
    """
    if MANIFEST_NODE not in {node.name for node in pipeline.nodes}:
        return None
    paths = [p for p in (_dataset_path(catalog, name) for name in MANIFEST_DATASETS) if p is not None]
    if not paths:
        return None
    for path in paths:
        if path.is_file():
            os.replace(path, previous_path(path))
    status = RunStatus(paths[0].parent / RUN_STATUS_NAME, paths, _now())
    status.write("running", note="the manifest is being rewritten; the previous one is *.previous.* until then")
    return status
