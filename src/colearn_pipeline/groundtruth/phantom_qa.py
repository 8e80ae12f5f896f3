"""Dice of the derived ground truth against the phantom's truth (QA only; never used for labels).

Reads a raw folder laid out as docs/architecture.md describes (``dicom/`` any tree, ``reports/*.json``,
``phantom_truth/<pseudonym>/``), derives the labels from the CT, the truth SUV resampled onto
the CT grid and the report positions, and compares them with the truth labels per class.

Command line::

    python -m colearn_pipeline.groundtruth.phantom_qa data/01_raw [--studies N]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from colearn_pipeline.groundtruth.labels import LABELS, dice
from colearn_pipeline.groundtruth.pipeline import derive_labels

_TAG_MODALITY = "0008|0060"
_TAG_STUDY_UID = "0020|000d"


def find_ct_series(dicom_dir) -> dict[str, list[str]]:
    """CT series under ``dicom_dir`` (any tree), as ``{StudyInstanceUID: sorted file names}``.

    GDCM (through SimpleITK's ImageSeriesReader) groups and sorts the files of each series.
    """
    found: dict[str, list[str]] = {}
    for folder, _, files in os.walk(dicom_dir):
        if not files:
            continue
        for series_id in sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder):
            names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, series_id)
            header = sitk.ImageFileReader()
            header.SetFileName(names[0])
            header.LoadPrivateTagsOff()
            header.ReadImageInformation()
            if header.GetMetaData(_TAG_MODALITY).strip() != "CT":
                continue
            study = header.GetMetaData(_TAG_STUDY_UID).strip()
            found.setdefault(study, []).extend(names)
    return found


def read_ct(file_names) -> sitk.Image:
    """Read a CT series as a float32 image in HU."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(file_names))
    return sitk.Cast(reader.Execute(), sitk.sitkFloat32)


def resample_onto(image: sitk.Image, reference: sitk.Image, *, nearest: bool = False) -> sitk.Image:
    """Resample ``image`` onto the grid of ``reference`` in physical space (linear or nearest)."""
    interp = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interp, 0.0, image.GetPixelID())


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
        and the per-finding tumour info.
    """
    truth_dir = Path(truth_dir)
    truth_labels = resample_onto(sitk.ReadImage(str(truth_dir / "labels.nii.gz")), ct, nearest=True)
    suv = resample_onto(sitk.Cast(sitk.ReadImage(str(truth_dir / "suv.nii.gz")), sitk.sitkFloat32), ct)
    ct_hu = sitk.GetArrayFromImage(ct)
    truth = sitk.GetArrayFromImage(truth_labels)
    seeds = report_seeds_zyx(report, ct)
    labels, info = derive_labels(ct_hu, sitk.GetArrayFromImage(suv), seeds, ct.GetSpacing(), **(params or {}))
    out: dict = {"study": truth_dir.name}
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
    for study_uid, names in sorted(find_ct_series(raw / "dicom").items()):
        if study_uid not in reports or study_uid not in truths:
            continue
        truth_dir = truths[study_uid]
        results.append(evaluate_study(read_ct(names), truth_dir, reports[study_uid], params=params))
        if max_studies is not None and len(results) >= max_studies:
            break
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", help="folder with dicom/, reports/, phantom_truth/")
    parser.add_argument("--studies", type=int, default=None, help="evaluate at most this many studies")
    parser.add_argument("--params", default=None, help="JSON file of {lungs:{}, mediastinum:{}, tumours:{}}")
    args = parser.parse_args(argv)
    params = json.loads(Path(args.params).read_text()) if args.params else None
    results = evaluate_cohort(args.raw_dir, params=params, max_studies=args.studies)
    if not results:
        print("no study with CT, report and truth found")
        return 1
    print(f"{'study':<20} {'lung':>7} {'medias':>7} {'tumour':>7}")
    for r in results:
        print(f"{r['study']:<20} {r['dice_lung']:7.3f} {r['dice_mediastinum']:7.3f} {r['dice_tumour']:7.3f}")
    means = {k: float(np.mean([r[f'dice_{k}'] for r in results])) for k in ("lung", "mediastinum", "tumour")}
    print(f"{'mean':<20} {means['lung']:7.3f} {means['mediastinum']:7.3f} {means['tumour']:7.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
