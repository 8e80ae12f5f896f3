"""The way back (issue 13): a corrected label map in the corrections folder replaces the derived
ground truth of its study on the next run, and the manifest says so.

Two fixture studies run through the project's catalog; then a NIfTI correction for one and a DICOM
SEG correction (in a folder named by the pseudonym) for the other; the next run recomputes only
those labels (the correction file is part of the fingerprint) and records ``labels_source``.
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_fixtures import run_preprocess_catalog, write_thorax_study

from colearn_pipeline.dicom import pseudonymise
from colearn_pipeline.groundtruth import LABELS


def _labels(out, pseudonym):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out / "03_primary" / "labels" / f"{pseudonym}.nii.gz")))


def _rows(result):
    return {r["pseudonym"]: r for r in result["manifest"]["studies"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    raw, out = tmp_path_factory.mktemp("raw"), tmp_path_factory.mktemp("out")
    studies = {}
    for key in ("nifti", "seg"):
        s = write_thorax_study(raw / "dicom" / key, reports_dir=raw / "reports")
        studies[key] = {**s, "pseudonym": pseudonymise(s["study_uid"])}
    first = run_preprocess_catalog(raw, out, workers=0)
    derived = {k: _labels(out, s["pseudonym"]) for k, s in studies.items()}
    corrections = raw / "corrections"
    corrections.mkdir()

    # NIfTI: the reader trimmed the tumour to its lower slices (the rest given back to the lung)
    image = sitk.ReadImage(str(out / "03_primary" / "labels" / f"{studies['nifti']['pseudonym']}.nii.gz"))
    corrected = derived["nifti"].copy()
    tumour_slices = np.flatnonzero((corrected == LABELS["tumour"]).any(axis=(1, 2)))
    upper = corrected[tumour_slices[len(tumour_slices) // 2]:]
    upper[upper == LABELS["tumour"]] = LABELS["lung"]
    fixed = sitk.GetImageFromArray(corrected)
    fixed.CopyInformation(image)
    sitk.WriteImage(fixed, str(corrections / f"{studies['nifti']['pseudonym']}.nii.gz"))

    # DICOM SEG, in a folder named by the pseudonym: the mediastinum dropped from the upper half
    from colearn_pipeline.dicom.series import read_series
    from colearn_pipeline.inference.seg import build_seg, write_seg

    ct = read_series([str(p) for p in studies["seg"]["ct_files"]], studies["seg"]["pseudonym"])
    seg_labels = derived["seg"].copy()
    half = seg_labels.shape[0] // 2
    seg_labels[half:][seg_labels[half:] == LABELS["mediastinum"]] = 0
    for ds in ct.datasets:  # the patient/study attributes a SEG copies, which the fixture writer leaves out
        for keyword, value in (("StudyID", "1"), ("AccessionNumber", ""), ("ReferringPhysicianName", ""),
                               ("StudyDate", "20240101"), ("StudyTime", "100000"), ("PatientSex", "F"),
                               ("PatientBirthDate", ""), ("Manufacturer", "test")):
            if keyword not in ds:
                setattr(ds, keyword, value)
    seg = build_seg(seg_labels, ct.datasets, algorithm=None, algorithm_type="MANUAL")
    write_seg(seg, corrections / studies["seg"]["pseudonym"] / "edited.dcm")

    second = run_preprocess_catalog(raw, out, workers=0)
    return {"studies": studies, "out": out, "first": first, "second": second, "derived": derived,
            "expected": {"nifti": corrected, "seg": seg_labels}, "log": second["log"]}


def test_first_run_labels_are_derived(runs):
    for s in runs["studies"].values():
        row = _rows(runs["first"])[s["pseudonym"]]
        assert row["status"] == "ok" and row["labels_source"] == "derived", row
        assert row["labels_correction"] is None


@pytest.mark.parametrize(("key", "file"), [("nifti", "{p}.nii.gz"), ("seg", "edited.dcm")])
def test_correction_replaces_the_labels_and_the_manifest_says_so(runs, key, file):
    pseudonym = runs["studies"][key]["pseudonym"]
    row = _rows(runs["second"])[pseudonym]
    assert row["status"] == "ok", row
    assert row["labels_source"] == "corrected"
    assert row["labels_correction"] == file.format(p=pseudonym)
    labels = _labels(runs["out"], pseudonym)
    assert not np.array_equal(labels, runs["derived"][key])
    np.testing.assert_array_equal(labels, runs["expected"][key])
    assert row["voxels_tumour"] == int((runs["expected"][key] == LABELS["tumour"]).sum())
    assert f"preprocess labels: {pseudonym} ok" in runs["log"]  # recomputed, not skipped as unchanged


def test_model_input_follows_the_correction(runs):
    pseudonym = runs["studies"]["nifti"]["pseudonym"]
    npz = np.load(runs["out"] / "05_model_input" / f"{pseudonym}.npz")
    tumour = np.flatnonzero((runs["expected"]["nifti"] == LABELS["tumour"]).any(axis=(1, 2)))
    # every thorax slice of the corrected labels is kept; the corrected tumour's slices are flagged
    assert set(tumour.tolist()) <= set(npz["slice_index"].tolist())
    np.testing.assert_array_equal(npz["slice_index"][npz["has_tumour"]], tumour)
    assert f"preprocess model_input: {pseudonym} ok" in runs["log"]


def test_studies_without_correction_keep_their_labels(runs):
    """Only the corrected studies' labels are recomputed: the correction file is in the fingerprint."""
    assert "preprocess lungs: 2 studies: 0 computed ok, 2 unchanged" in runs["log"]
    assert "preprocess labels: 2 studies: 2 computed ok, 0 unchanged" in runs["log"]
