"""One study from DICOM files to model input (paper section III-A), run inside a worker process.

:func:`process_study` never raises for bad input: every problem of the study becomes a
quarantined manifest row naming the study (pseudonym), the file and the problem, so the rest of
the cohort goes on. Outputs are written, in their final format, to a staging folder by the worker
(so compression runs in parallel); the Kedro node hands the staged files to the catalog's
datasets, which move them atomically into the data layers.
"""

from __future__ import annotations

import copy
import logging
import os
import resource
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.grid import inside, physical_to_index_zyx, resample_to_reference, resize_slices
from colearn_pipeline.dicom.series import SeriesVolume, read_series
from colearn_pipeline.groundtruth import LABELS, derive_labels, dice, select_slices
from colearn_pipeline.suv import SuvError, suv_conversion

logger = logging.getLogger(__name__)

#: The groundtruth sections passed to :func:`colearn_pipeline.groundtruth.derive_labels`.
GROUNDTRUTH_SECTIONS = ("lungs", "mediastinum", "tumours")
#: Staged file names, per output.
STAGED = {"ct_hu": "ct_hu.nii.gz", "suv": "suv.nii.gz", "labels": "labels.nii.gz", "model_input": "model_input.npz"}


@dataclass
class StudyJob:
    """Everything a worker needs for one study (plain data, picklable).

    Attributes
    ----------
    pseudonym : str
    root : str
        The raw DICOM folder (files are named relative to it in messages).
    ct_files, pet_files : list of str
    selection : str
        How the CT and PET series were chosen (for the manifest).
    findings : list of dict or None
        The report's findings (``position_mm``, ``kind``, ``text``); None when there is no report.
    truth_dir : str or None
        ``phantom_truth/<pseudonym>`` when it exists (QA only).
    staging_dir : str
        Where this study's outputs are staged.
    params : dict
        The ``preprocess`` parameters.
    corrupt : list of (str, str)
        Files of the study whose header is damaged, with reasons.
    identifiers : list of str
        Patient identifiers to redact from messages (never written).
    skipped_beside : list of str
        Unreadable or non-DICOM files in the folders of this study's series (named in the reason
        when the study is quarantined: one of them may be the missing slice).
    """

    pseudonym: str
    root: str
    ct_files: list[str]
    pet_files: list[str]
    selection: str
    findings: list[dict] | None
    truth_dir: str | None
    staging_dir: str
    params: dict
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    identifiers: list[str] = field(default_factory=list, repr=False)
    skipped_beside: list[str] = field(default_factory=list)

    def redact(self, text: str) -> str:
        """Replace patient identifiers in ``text``."""
        out = str(text)
        for ident in sorted(self.identifiers, key=len, reverse=True):
            if ident:
                out = out.replace(ident, "<redacted>")
        return out


class StudyError(ValueError):
    """A study-level problem found while processing (no seeds, finding outside the CT, ...)."""

    def __init__(self, study: str, file: str, problem: str) -> None:
        self.study, self.file, self.problem = study, file, problem
        super().__init__(f"{study}: {file}: {problem}")

    def __reduce__(self):
        return (type(self), (self.study, self.file, self.problem))


def merge_params(base: Mapping, override: Mapping | None) -> dict:
    """Recursive dictionary merge: ``override``'s leaves replace ``base``'s."""
    out = copy.deepcopy(dict(base))
    for key, value in (override or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def groundtruth_params(params: Mapping, pseudonym: str) -> dict:
    """The ``groundtruth`` sections for one study, with its overrides merged in.

    Parameters
    ----------
    params : mapping
        The ``preprocess`` parameters; ``groundtruth.overrides.<pseudonym>`` holds the study's
        changes (the paper's "minor manual adjustments of the thresholding parameters").
    pseudonym : str

    Returns
    -------
    dict
        ``{"lungs": {...}, "mediastinum": {...}, "tumours": {...}}``.
    """
    gt = dict(params.get("groundtruth") or {})
    base = {name: dict(gt.get(name) or {}) for name in GROUNDTRUTH_SECTIONS}
    override = (gt.get("overrides") or {}).get(pseudonym) or {}
    unknown = set(override) - set(GROUNDTRUTH_SECTIONS)
    if unknown:
        raise StudyError(pseudonym, "parameters_preprocess.yml", f"unknown groundtruth override sections {sorted(unknown)}")
    return merge_params(base, override)


def findings_to_seeds(findings: Sequence[Mapping], ct_image: sitk.Image, pseudonym: str, report: str = "report") -> np.ndarray:
    """Report findings (patient LPS mm) -> continuous CT voxel indices ``(n, 3)`` in ``(z, y, x)``.

    Raises
    ------
    StudyError
        A finding without a three-number ``position_mm`` or outside the CT volume.
    """
    points = []
    for i, finding in enumerate(findings):
        pos = finding.get("position_mm") if isinstance(finding, Mapping) else None
        try:
            point = [float(v) for v in pos]  # type: ignore[union-attr]
            if len(point) != 3 or not np.all(np.isfinite(point)):
                raise ValueError
        except (TypeError, ValueError):
            raise StudyError(pseudonym, report, f"finding {i} has no valid position_mm [x, y, z]: {pos!r}") from None
        points.append(point)
    if not points:
        return np.zeros((0, 3))
    idx = physical_to_index_zyx(points, ct_image)
    ok = inside(idx, ct_image.GetSize()[::-1])
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        raise StudyError(
            pseudonym, report,
            f"finding {i} ({findings[i].get('kind', '?')}) at {points[i]} mm lies outside the CT volume",
        )
    return idx


def _rel_error_stats(ours: np.ndarray, truth: np.ndarray, min_suv: float) -> tuple[float, float, int]:
    mask = truth > min_suv
    if not mask.any():
        return float("nan"), float("nan"), 0
    rel = np.abs(ours[mask].astype(np.float64) - truth[mask]) / truth[mask]
    return float(np.median(rel)), float(np.max(rel)), int(mask.sum())


def phantom_qa(
    truth_dir: str, labels: np.ndarray, suv_pet: SeriesVolume, suv_pet_array: np.ndarray, min_suv: float
) -> dict:
    """Dice per class of the derived labels and SUV relative error against the phantom's truth.

    Parameters
    ----------
    truth_dir : str
        ``phantom_truth/<pseudonym>`` with ``labels.nii.gz`` (CT grid) and ``suv.nii.gz`` (PET grid).
    labels : numpy.ndarray
        Derived labels on the CT grid.
    suv_pet : SeriesVolume
        The PET series (its grid).
    suv_pet_array : numpy.ndarray
        Our SUV on the PET grid.
    min_suv : float
        Only voxels whose true SUV exceeds it count in the SUV error.

    Returns
    -------
    dict
        ``dice_<class>`` per non-background class, ``suv_median_rel_error``,
        ``suv_max_rel_error``, ``suv_voxels_compared``.
    """
    out: dict[str, Any] = {}
    lab_path = Path(truth_dir) / "labels.nii.gz"
    if lab_path.is_file():
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(lab_path)))
        if truth.shape != labels.shape:
            raise StudyError(suv_pet.study, "phantom_truth/labels.nii.gz", f"shape {truth.shape} != CT {labels.shape}")
        for name, value in LABELS.items():
            if value:
                out[f"dice_{name}"] = dice(labels == value, truth == value)
    suv_path = Path(truth_dir) / "suv.nii.gz"
    if suv_path.is_file():
        truth_img = sitk.ReadImage(str(suv_path), sitk.sitkFloat32)
        truth = sitk.GetArrayFromImage(truth_img)
        if truth.shape != suv_pet_array.shape or not np.allclose(truth_img.GetOrigin(), suv_pet.origin_xyz_mm, atol=1e-3):
            truth = sitk.GetArrayFromImage(resample_to_reference(truth_img, suv_pet.to_sitk(suv_pet_array)))
        med, mx, n = _rel_error_stats(suv_pet_array, truth, min_suv)
        out.update(suv_median_rel_error=med, suv_max_rel_error=mx, suv_voxels_compared=n)
    return out


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0**2


def ct_storage_array(ct_hu: np.ndarray) -> np.ndarray:
    """CT as int16 when that is lossless (integer HU within int16), else unchanged (float32).

    CT rescale slopes are 1 and intercepts integers on every scanner we know, so the NIfTI is
    stored as int16: half the bytes and about 5x faster to gzip than float32.
    """
    info = np.iinfo(np.int16)
    if ct_hu.size and ct_hu.min() >= info.min and ct_hu.max() <= info.max and np.array_equal(np.rint(ct_hu), ct_hu):
        return ct_hu.astype(np.int16)
    return ct_hu


def _write_staged(job: StudyJob, ct: SeriesVolume, suv_ct: np.ndarray, labels: np.ndarray, model_input: dict) -> dict:
    """Write the study's outputs, in their final format, to its staging folder (in the worker)."""
    from colearn_pipeline.datasets import NiftiDataset, NpzDataset

    out = Path(job.staging_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: str(out / v) for k, v in STAGED.items()}
    NiftiDataset(paths["ct_hu"]).save(ct.to_sitk(ct_storage_array(ct.array)))
    NiftiDataset(paths["suv"]).save(ct.to_sitk(suv_ct))
    NiftiDataset(paths["labels"]).save(ct.to_sitk(labels.astype(np.uint8)))
    NpzDataset(paths["model_input"], compress=bool(job.params.get("model_input_compress", False))).save(model_input)
    return paths


def build_model_input(
    ct: SeriesVolume, suv_ct: np.ndarray, labels: np.ndarray, slice_index: np.ndarray, model_size: Sequence[int]
) -> dict[str, np.ndarray]:
    """The model-input arrays of docs/architecture.md (keys and dtypes exactly as the contract)."""
    idx = np.asarray(slice_index, dtype=np.int32)
    return {
        "ct_hu": resize_slices(ct.array[idx], model_size, "image").astype(np.float32),
        "suv": resize_slices(suv_ct[idx], model_size, "image").astype(np.float32),
        "labels": resize_slices(labels[idx].astype(np.uint8), model_size, "label").astype(np.uint8),
        "slice_index": idx,
        "ct_shape_zyx": np.asarray(ct.shape_zyx, dtype=np.int64),
        "spacing_xyz_mm": np.asarray(ct.spacing_xyz_mm, dtype=np.float64),
        "origin_xyz_mm": np.asarray(ct.origin_xyz_mm, dtype=np.float64),
        "direction": np.asarray(ct.direction, dtype=np.float64),
        "study": np.array(ct.study),
    }


def _base_row(job: StudyJob) -> dict[str, Any]:
    return {
        "pseudonym": job.pseudonym,
        "status": "quarantined",
        "reason": "",
        "file": "",
        "series_selection": job.selection,
        "n_findings": None if job.findings is None else len(job.findings),
    }


class _Clock:
    """Per-stage wall times written into the manifest row as ``t_<stage>_s``."""

    def __init__(self, row: dict) -> None:
        self.row, self.last = row, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.row[f"t_{stage}_s"] = round(now - self.last, 3)
        self.last = now


def _run(job: StudyJob, row: dict[str, Any]) -> dict[str, str]:
    p = job.params
    tol = dict(p.get("series_validation") or {})
    if job.corrupt:
        rel, why = job.corrupt[0]
        raise DicomSeriesError(job.pseudonym, rel, why)
    if job.findings is None and not p.get("allow_missing_report", False):
        raise StudyError(job.pseudonym, "reports/", "no diagnostic report for this study: no tumour seeds")
    clock = _Clock(row)
    ct = read_series(job.ct_files, job.pseudonym, root=job.root, **tol)
    pet = read_series(job.pet_files, job.pseudonym, root=job.root, **tol)
    clock.lap("read")
    row.update(
        ct_shape_zyx=list(ct.shape_zyx), pet_shape_zyx=list(pet.shape_zyx),
        ct_spacing_xyz_mm=[round(v, 4) for v in ct.spacing_xyz_mm],
        pet_spacing_xyz_mm=[round(v, 4) for v in pet.spacing_xyz_mm],
    )
    # -- SUV (QIBA vendor-neutral, via colearn_pipeline.suv)
    try:
        conv = suv_conversion(pet.datasets, suv_type=p.get("suv_type", "bw"), source=job.pseudonym)
    except SuvError as exc:
        by_name = {os.path.basename(f): os.path.relpath(f, job.root) for f in pet.files}
        file = by_name.get(exc.file, exc.file) if exc.file else os.path.relpath(pet.files[0], job.root)
        problem = f"SUV: {exc.tag}: {exc.problem}" if exc.tag else f"SUV: {exc.problem}"
        raise StudyError(job.pseudonym, file, problem) from exc
    factors = np.asarray(conv.slice_factors, dtype=np.float64)
    suv_pet = (pet.array.astype(np.float64) * factors[:, None, None]).astype(np.float32)
    row.update(
        scanner_convention=conv.convention, suv_type=conv.suv_type, suv_units=conv.units,
        decay_correction=conv.decay_correction, reference_time_source=conv.reference_time_source,
        suv_factor=float(np.median(factors)), suv_factor_min=float(factors.min()), suv_factor_max=float(factors.max()),
        suv_notes="; ".join(str(n) for n in conv.details.get("notes", [])),
    )
    pet.array = suv_pet  # the PET grid now holds SUV; the Bq/mL array is released
    # -- one grid: SUV onto the CT grid in physical space
    clock.lap("suv")
    ct_img = ct.to_sitk()
    suv_ct = sitk.GetArrayFromImage(
        resample_to_reference(pet.to_sitk(), ct_img, p.get("pet_interpolator", "linear"), p.get("pet_outside_value", 0.0))
    ).astype(np.float32)
    # -- ground truth from the report's findings
    seeds = findings_to_seeds(job.findings or [], ct_img, job.pseudonym)
    if len(seeds) == 0 and not p.get("allow_missing_report", False):
        raise StudyError(job.pseudonym, "reports/", "the report lists no findings: no tumour seeds")
    gt = groundtruth_params(p, job.pseudonym)
    gt["lungs"].setdefault("superior_at_high_z", bool(ct.direction[8] >= 0))  # LPS: +z is superior
    clock.lap("resample")
    labels, info = derive_labels(ct.array, suv_ct, seeds, ct.spacing_xyz_mm, **gt)
    clock.lap("groundtruth")
    for name in LABELS:
        row[f"voxels_{name}"] = int(info["voxels"][name])
    tum_info = info.get("tumours") or []
    row["tumours_capped"] = int(sum(bool(t.get("capped")) for t in tum_info))
    row["tumours_empty"] = int(sum(int(t.get("voxels", 0)) == 0 for t in tum_info))
    sel = p.get("slice_selection") or {}
    classes = sel.get("classes", ["tumour"])
    slice_index = select_slices(labels, classes, min_voxels=int(sel.get("min_voxels", 1)))
    if slice_index.size == 0:
        raise StudyError(job.pseudonym, "-", f"no axial slice contains the classes {list(classes)}")
    row["slices_kept"] = int(slice_index.size)
    row["slice_index"] = [int(i) for i in slice_index]
    # -- QA against the phantom's truth (never used to derive anything)
    if job.truth_dir:
        row.update(phantom_qa(job.truth_dir, labels, pet, suv_pet, float(p.get("qa_min_suv", 0.5))))
    clock.lap("qa")
    model_input = build_model_input(ct, suv_ct, labels, slice_index, p.get("model_size", (256, 256)))
    staged = _write_staged(job, ct, suv_ct, labels, model_input)
    clock.lap("write")
    return staged


def process_study(job: StudyJob) -> dict[str, Any]:
    """Process one study; return its manifest row (and staged output paths under ``"_staged"``).

    Parameters
    ----------
    job : StudyJob

    Returns
    -------
    dict
        The manifest row: ``status`` ``"ok"`` or ``"quarantined"`` with ``reason`` and ``file``;
        never raises for a problem of the input.
    """
    start = time.perf_counter()
    cpu_start = _cpu_seconds()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(max(1, int(job.params.get("threads_per_worker", 1))))
    row = _base_row(job)
    try:
        row["_staged"] = _run(job, row)
        row["status"] = "ok"
    except (DicomSeriesError, StudyError) as exc:
        row.update(reason=job.redact(exc.problem), file=job.redact(exc.file))
    except SuvError as exc:
        row.update(reason=job.redact(f"SUV: {exc.tag}: {exc.problem}" if exc.tag else f"SUV: {exc.problem}"),
                   file=job.redact(exc.file or "PET series"))
    except Exception as exc:  # an unexpected failure of one study must not stop the cohort
        logger.debug("study %s failed", job.pseudonym, exc_info=True)
        row.update(reason=job.redact(f"unexpected {type(exc).__name__}: {exc}"), file="-")
    if row["status"] != "ok" and job.skipped_beside:
        row["reason"] += f" (skipped beside this series: {', '.join(job.skipped_beside[:3])})"
    row["seconds"] = round(time.perf_counter() - start, 3)
    row["cpu_seconds"] = round(_cpu_seconds() - cpu_start, 3)
    row["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    row["worker_pid"] = os.getpid()
    return row
