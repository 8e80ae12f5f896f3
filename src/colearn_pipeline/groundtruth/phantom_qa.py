"""Dice of the derived ground truth against the phantom's truth (QA only; never used for labels).

Reads a raw folder laid out as docs/architecture.md describes (``dicom/`` any tree, ``reports/*.json``,
``phantom_truth/<pseudonym>/``), derives the labels from the CT, the truth SUV resampled onto
the CT grid and the report positions, and compares them with the truth labels per class.

Command line (:mod:`colearn_pipeline.groundtruth.cli`)::

    python -m colearn_pipeline.groundtruth data/01_raw [--studies N]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.dicom import StudyFiles, choose_series, discover, read_series, resample_to_reference
from colearn_pipeline.groundtruth.labels import LABELS, dice
from colearn_pipeline.groundtruth.pipeline import derive_labels

def find_ct_studies(dicom_dir) -> dict[str, StudyFiles]:
    """Studies under ``dicom_dir`` (any tree) that have a CT series, as ``{StudyInstanceUID: StudyFiles}``.

    :func:`colearn_pipeline.dicom.discover` groups the files, as preprocess does.
    """
    found = discover(dicom_dir)
    return {study.study_uid: study for study in found.studies.values()
            if any(series.modality == "CT" for series in study.series.values())}


def read_ct(study: StudyFiles, dicom_dir) -> sitk.Image:
    """The study's CT (chosen by :func:`colearn_pipeline.dicom.choose_series`) as a float32 image in HU."""
    ct = choose_series(study).ct
    volume = read_series(list(ct.files), study.pseudonym, root=dicom_dir, file_labels=study.file_labels)
    return volume.to_sitk(volume.array.astype(np.float32, copy=False))


def report_seeds_zyx(report: dict, ct: sitk.Image) -> list[tuple[float, float, float]]:
    """Report finding positions (LPS mm) as continuous CT indices in ``(z, y, x)`` order."""
    seeds = []
    for finding in report.get("findings", []):
        x, y, z = ct.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in finding["position_mm"]))
        seeds.append((z, y, x))
    return seeds


def truth_folders(raw_dir) -> dict[str, Path]:
    """``{StudyInstanceUID: phantom_truth/<pseudonym>}`` from each truth folder's ``study.json``.

    ``study.json`` names the study's report (``"report"``, relative to the raw folder), and the
    report holds the StudyInstanceUID; a ``study_instance_uid`` key in ``study.json`` is used
    directly when present.
    """
    raw = Path(raw_dir)
    found: dict[str, Path] = {}
    root = raw / "phantom_truth"
    if not root.is_dir():
        return found
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        meta = folder / "study.json"
        if not meta.is_file():
            continue
        data = json.loads(meta.read_text())
        uid = data.get("study_instance_uid")
        if uid is None and data.get("report") and (raw / data["report"]).is_file():
            uid = json.loads((raw / data["report"]).read_text()).get("study_instance_uid")
        if uid:
            found[uid] = folder
    return found


def evaluate_study(ct: sitk.Image, truth_dir, report: dict, *, params: dict | None = None) -> dict:
    """Derive labels for one phantom study and return Dice per class against its truth.

    Parameters
    ----------
    ct : SimpleITK.Image
        CT in HU.
    truth_dir : path
        ``phantom_truth/<pseudonym>`` with ``labels.nii.gz`` and ``suv.nii.gz``.
    report : dict
        The study's report (findings with ``position_mm``).
    params : dict, optional
        ``{"lungs": {...}, "mediastinum": {...}, "tumours": {...}}`` keyword arguments.

    Returns
    -------
    dict
        ``dice_<class>`` for lung, mediastinum and tumour, ``voxels_<class>`` of truth and derived,
        the per-finding tumour info, and ``scored`` (False for a study whose truth holds no lung,
        e.g. a phantom pelvis: every Dice there is 1.0 of two empty masks and must not count).
    """
    truth_dir = Path(truth_dir)
    truth_labels = resample_to_reference(sitk.ReadImage(str(truth_dir / "labels.nii.gz")), ct, "nearest")
    suv = resample_to_reference(sitk.Cast(sitk.ReadImage(str(truth_dir / "suv.nii.gz")), sitk.sitkFloat32), ct)
    ct_hu = sitk.GetArrayFromImage(ct)
    truth = sitk.GetArrayFromImage(truth_labels)
    seeds = report_seeds_zyx(report, ct)
    sizes = [f.get("size_mm") for f in report.get("findings", [])]
    labels, info = derive_labels(ct_hu, sitk.GetArrayFromImage(suv), seeds, ct.GetSpacing(), sizes_mm=sizes,
                                 **(params or {}))
    # A non-thorax phantom study (no truth lung) has nothing to score: preprocess refuses it.
    out: dict = {"study": truth_dir.name, "scored": bool((truth == LABELS["lung"]).any())}
    for name in ("lung", "mediastinum", "tumour"):
        value = LABELS[name]
        out[f"dice_{name}"] = dice(labels == value, truth == value)
        out[f"truth_voxels_{name}"] = int((truth == value).sum())
        out[f"derived_voxels_{name}"] = int((labels == value).sum())
    out["tumours"] = info["tumours"]
    out["lungs"] = info["lungs"]
    out["n_mediastinum_seeds"] = info["mediastinum"]["n_seeds"]
    return out


def evaluate_cohort(raw_dir, *, params: dict | None = None, max_studies: int | None = None) -> list[dict]:
    """Run :func:`evaluate_study` on every study of a phantom raw folder that has truth."""
    raw = Path(raw_dir)
    reports = {}
    for path in sorted((raw / "reports").glob("*.json")):
        rep = json.loads(path.read_text())
        reports[rep["study_instance_uid"]] = rep
    truths = truth_folders(raw)
    results = []
    for study_uid, study in sorted(find_ct_studies(raw / "dicom").items()):
        if study_uid not in reports or study_uid not in truths:
            continue
        truth_dir = truths[study_uid]
        results.append(evaluate_study(read_ct(study, raw / "dicom"), truth_dir, reports[study_uid], params=params))
        if max_studies is not None and len(results) >= max_studies:
            break
    return results
