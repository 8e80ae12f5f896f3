"""The TID 1500 DICOM SR of the tumours' PET figures: valid (dciodvfy), and read back with pydicom alone.

A tiny phantom study's true labels and a known SUV field: the SR's values must equal
``quantify_tumours``, each group must reference the SEG's Tumour segment and the CT slices it lies
on, and the patient and study must be the CT's.
"""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_validators import dciodvfy_errors, sr_measurement_groups
from scipy import ndimage as ndi

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.evaluation.quantification import quantify_tumours
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.seg import build_seg, seg_sources, write_seg
from colearn_pipeline.inference.sr import SUV_CODES, UNCERTAINTY_MEAN, build_sr
from colearn_pipeline.phantom.generate import generate_cohort

TUMOUR = LABELS["tumour"]
ALGORITHM = {"name": "colearn-pipeline test", "version": "1", "parameters": {"net": "colearn"}}
#: (concept, derivation) of each summary figure in the SR.
CONCEPTS = {"volume_ml": ("126032", None), "suv_max": ("126401", "56851009"), "suv_peak": ("126401", "126031"),
            "suv_mean": ("126401", "373098007"), "tlg_g": ("126033", None),
            "uncertainty_mean": (UNCERTAINTY_MEAN.value, None)}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    raw = tmp_path_factory.mktemp("phantom")
    generate_cohort(raw, n_studies=1, seed=11, size="tiny", progress=False)
    (pseudonym, files), = discover(raw / "dicom").studies.items()
    ct_info, _, _ = select_ct_pet(files, str(raw / "dicom"))
    ct = read_series(ct_info.files, pseudonym)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "phantom_truth" / pseudonym / "labels.nii.gz")))
    labels = labels.astype(np.uint8)
    z, y, x = np.indices(labels.shape)
    suv = (1.0 + 0.05 * z + 0.01 * x + 3.0 * (labels == TUMOUR)).astype(np.float32)
    uncertainty = (0.1 + 0.001 * y).astype(np.float32)
    seg = build_seg(labels, ct.datasets, algorithm=ALGORITHM)
    return ct, labels, suv, uncertainty, seg


def _sr(study, tmp_path, labels=None, **kwargs):
    ct, truth, suv, uncertainty, seg = study
    labels = truth if labels is None else labels
    figures = quantify_tumours(labels, suv, ct.spacing_xyz_mm, tumour_label=TUMOUR, uncertainty=uncertainty)
    geometry = (ct.spacing_xyz_mm, ct.origin_xyz_mm, ct.direction)
    sr = build_sr(seg, seg_sources(ct.datasets), figures, tumour_segment=TUMOUR, algorithm=ALGORITHM,
                  geometry=geometry, **kwargs)
    return write_seg(sr, tmp_path / "study.sr.dcm"), figures


def test_sr_is_valid_and_holds_each_components_figures(study, tmp_path):
    path, figures = _sr(study, tmp_path)
    assert dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.Modality == "SR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    groups = sr_measurement_groups(ds)
    assert len(figures["components"]) >= 2, "the phantom study should hold several tumour components"
    expected = [(f"Tumour component {c['component']}", c) for c in figures["components"]]
    expected.append(("All tumour components", figures["totals"]))
    assert [g["tracking_id"] for g in groups] == [e[0] for e in expected]
    for group, (_, fig) in zip(groups, expected):
        assert set(group["values"]) == set(CONCEPTS.values())
        for key, concept in CONCEPTS.items():
            assert group["values"][concept][0] == pytest.approx(fig[key], rel=1e-9), key
        assert group["values"][CONCEPTS["suv_max"]][1] == "g/ml{SUVbw}" and group["values"][("126032", None)][1] == "ml"


def test_sr_references_the_tumour_segment_and_its_ct_slices(study, tmp_path):
    ct, labels, _, _, seg = study
    path, _ = _sr(study, tmp_path)
    ds = pydicom.dcmread(path)
    tumour_slices = {ct.datasets[z].SOPInstanceUID for z in np.flatnonzero((labels == TUMOUR).any(axis=(1, 2)))}
    components, _ = ndi.label(labels == TUMOUR, structure=np.ones((3, 3, 3), bool))
    sizes = np.bincount(components.ravel())[1:]
    groups = sr_measurement_groups(ds)
    for rank, group in enumerate(groups[:-1]):  # each component: the CT images it lies on
        assert group["segment"] == (seg.SOPInstanceUID, TUMOUR)
        component = 1 + np.argsort(-sizes, kind="stable")[rank]
        on = np.flatnonzero((components == component).any(axis=(1, 2)))
        assert set(group["source_images"]) == {ct.datasets[z].SOPInstanceUID for z in on}, group["tracking_id"]
    assert groups[-1]["segment"] == (seg.SOPInstanceUID, TUMOUR)
    assert set(groups[-1]["source_images"]) == tumour_slices  # all components: every tumour slice
    evidence = {s.SeriesInstanceUID: {i.ReferencedSOPInstanceUID for i in s.ReferencedSOPSequence}
                for s in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence}
    assert seg.SOPInstanceUID in evidence[seg.SeriesInstanceUID]
    assert tumour_slices <= evidence[ct.datasets[0].SeriesInstanceUID]
    first = ct.datasets[0]
    assert (ds.StudyInstanceUID, ds.PatientID, ds.PatientName) == (first.StudyInstanceUID, first.PatientID,
                                                                    first.PatientName)
    assert ds.SeriesInstanceUID not in (seg.SeriesInstanceUID, first.SeriesInstanceUID)


def test_sr_of_a_study_without_tumour_and_other_suv_types(study, tmp_path):
    labels = study[1]
    no_tumour = np.where(labels == TUMOUR, 0, labels).astype(np.uint8)
    path, figures = _sr(study, tmp_path, labels=no_tumour)
    assert figures["components"] == [] and dciodvfy_errors(path) == []
    assert "126010" in {i.ConceptNameCodeSequence[0].CodeValue for i in pydicom.dcmread(path).ContentSequence}
    (group,) = sr_measurement_groups(pydicom.dcmread(path))
    assert group["tracking_id"] == "All tumour components" and group["segment"] is None
    assert group["values"] == {("126032", None): (0.0, "ml"), ("126033", None): (0.0, "g")}
    lbm, _ = _sr(study, tmp_path, suv_type="lbm")
    values = sr_measurement_groups(pydicom.dcmread(lbm))[0]["values"]
    assert values[(SUV_CODES["lbm"][0].value, "56851009")][1] == SUV_CODES["lbm"][1].value
    with pytest.raises(ValueError, match="suv_type"):
        _sr(study, tmp_path, suv_type="sul")
