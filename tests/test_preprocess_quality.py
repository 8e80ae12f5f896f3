"""Ground-truth quality and thorax sanity through the preprocess pipeline (issues 10, 11, 12).

- The three real limb PET-CT studies of tests/data/ibsi_sts (GE Discovery ST, BodyPartExamined
  EXTREMITY) come out quarantined "not a thorax" with the reason.
- Fixture thorax studies: a plausible one is ok with its quality figures in the manifest; a report
  finding at a cold spot (no uptake above background) and a CT that says PELVIS are quarantined
  ("needs review: ..." and "not a thorax: ...").
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_fixtures import run_preprocess_catalog, write_thorax_study
from pydicom.uid import generate_uid
from real_data import IBSI_STS_STUDIES

from colearn_pipeline.dicom import pseudonymise

STS_STUDIES = IBSI_STS_STUDIES
#: This study's copy loses BodyPartExamined, so the anatomy alone must refuse it.
BLANK_BODY_PART = "STS_003"


def _report(reports: Path, study_uid: str, position_mm) -> None:
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{generate_uid()[-12:]}.json").write_text(json.dumps({
        "study_instance_uid": study_uid,
        "findings": [{"text": "finding", "kind": "primary", "position_mm": [float(v) for v in position_mm]}],
    }))


def _blank_body_part(study: Path) -> None:
    for path in [*(study / "CT" / "image").iterdir(), *(study / "PET" / "image").iterdir()]:
        ds = pydicom.dcmread(path)
        del ds.BodyPartExamined
        ds.save_as(path)


@pytest.fixture(scope="module")
def limbs(tmp_path_factory, ibsi_sts_root):
    """The real limb studies as a raw cohort, each with a report whose finding is the CT's centre."""
    unpacked = ibsi_sts_root
    raw = tmp_path_factory.mktemp("raw")
    pseudonyms = {}
    for name in STS_STUDIES:
        shutil.copytree(unpacked / name, raw / "dicom" / name)  # image and mask (RTSTRUCT) folders, as exported
        if name == BLANK_BODY_PART:
            _blank_body_part(raw / "dicom" / name)
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted((raw / "dicom" / name / "CT" / "image").iterdir())]
        positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
        first = headers[0]
        centre = positions.mean(axis=0) + np.array([float(first.Columns) * float(first.PixelSpacing[1]),
                                                   float(first.Rows) * float(first.PixelSpacing[0]), 0.0]) / 2
        _report(raw / "reports", first.StudyInstanceUID, centre)
        pseudonyms[name] = pseudonymise(first.StudyInstanceUID)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=0, manifest={"max_quarantined_fraction": 1.0}, pipeline=_until_labels())
    rows = {r["pseudonym"]: r for r in result["manifest"]["studies"]}
    return {name: rows[p] for name, p in pseudonyms.items()}


def _until_labels():
    """The pipeline without its outcome check (no study of a limb cohort is ok, which that node refuses)."""
    from colearn_pipeline.pipelines.preprocess import create_pipeline

    pipe = create_pipeline()
    return pipe - pipe.only_nodes("check_preprocess_outcome")


@pytest.mark.slow
@pytest.mark.parametrize("name", STS_STUDIES)
def test_real_limb_pet_ct_quarantined_as_not_a_thorax(limbs, name):
    row = limbs[name]
    assert row["status"] == "quarantined", row
    assert row["stage"] == "mediastinum", row
    if name == BLANK_BODY_PART:  # no header to go by: a few mL of "lung" in a thigh is no pair of lungs
        assert row["reason"].startswith("not a thorax: lungs "), row
        assert row["reason"].endswith(" mL < 500 mL"), row
        assert row["ct_body_part_examined"] is None
    else:
        assert row["reason"] == "not a thorax: BodyPartExamined EXTREMITY", row
        assert row["ct_body_part_examined"] == "EXTREMITY"


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    keys = {}

    def study(key, **kw):
        s = write_thorax_study(raw / "dicom" / key, reports_dir=raw / "reports", with_report=key not in ("cold", "no_report"),
                               **kw)
        keys[key] = pseudonymise(s["study_uid"])
        return s

    study("good")
    s = study("cold")
    _report(raw / "reports", s["study_uid"], (0.0, -80.0, 0.0))  # soft tissue in front of the heart: SUV 1, no tumour

    def pelvis(ds, k):
        ds.BodyPartExamined = "PELVIS"

    study("pelvis", ct_extra=pelvis)
    study("no_report")
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=0)
    rows = {r["pseudonym"]: r for r in result["manifest"]["studies"]}
    included = run_preprocess_catalog(raw, out, workers=0, model_input={"include_tumours_unlabelled": True})
    rows_included = {r["pseudonym"]: r for r in included["manifest"]["studies"]}
    return {**{key: rows[p] for key, p in keys.items()}, "out": out, "pseudonyms": keys,
            "summary": result["manifest"]["summary"], "included": rows_included[keys["no_report"]]}


def test_plausible_study_ok_with_quality_figures(fixtures):
    row = fixtures["good"]
    assert row["status"] == "ok", row
    assert 800 < row["lung_ml"] < 1300 and 200 < row["mediastinum_ml"] < 600  # fixture thorax: ~1.0 L, ~0.4 L
    assert row["mediastinum_outside_hull"] <= 0.05 and row["lung_balance"] > 0.9
    assert len(row["tumour_ml"]) == 1 and 10 < row["tumour_ml"][0] < 25  # a 16 mm sphere is 17 mL
    assert row["tumour_peak_to_threshold"] == [2.5]  # peak / (40 % of peak)
    assert row["labels_source"] == "derived"


def test_cold_spot_finding_needs_review(fixtures):
    row = fixtures["cold"]
    assert row["status"] == "quarantined" and row["stage"] == "labels", row
    assert row["reason"].startswith("needs review: finding 0: "), row["reason"]


def test_body_part_other_than_thorax_is_not_a_thorax(fixtures):
    row = fixtures["pelvis"]
    assert row["status"] == "quarantined", row
    assert row["reason"] == "not a thorax: BodyPartExamined PELVIS", row


def test_study_without_report_converted_and_marked_tumours_unlabelled(fixtures):
    row = fixtures["no_report"]
    assert row["status"] == "tumours_unlabelled" and row["stage"] == "model_input", row
    assert row["has_report"] is False and row["n_findings"] == 0
    assert row["voxels_lung"] > 0 and row["voxels_mediastinum"] > 0 and row["voxels_tumour"] == 0
    assert row["suv_units"] == "BQML" and 800 < row["lung_ml"] < 1300
    assert fixtures["summary"]["tumours_unlabelled"] == 1 and fixtures["summary"]["quarantined"] == 2
    pseudonym = fixtures["pseudonyms"]["no_report"]
    for member in ("ct_hu", "suv", "lungs", "labels"):  # everything prediction needs is there
        folder = "03_primary" if member == "labels" else "02_intermediate"
        assert list((fixtures["out"] / folder / member).glob(f"{pseudonym}.nii*")), member


def test_study_without_report_gets_model_input_only_when_conf_says_so(fixtures):
    assert fixtures["included"]["status"] == "ok", fixtures["included"]
    pseudonym = fixtures["pseudonyms"]["no_report"]
    npz = dict(np.load(fixtures["out"] / "05_model_input" / f"{pseudonym}.npz"))
    assert npz["labels"].max() == 2 and npz["slice_index"].size == fixtures["included"]["slices_kept"] > 2
