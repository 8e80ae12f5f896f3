"""Bad input: each problem quarantines its study with a clear message; the others finish.

One small cohort holds a good study and one study per problem; the preprocess pipeline runs once
over it (two workers, through the project's catalog with paths moved to a temporary folder) and
each test checks one problem. Raw files are hashed before and after.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dicom_fixtures import pet_suv_tags, run_preprocess_catalog, write_thorax_study
from pydicom.uid import generate_uid

from colearn_pipeline.dicom import pseudonymise

NAMES = {
    "good": "Qwyxa^Zorbel",
    "truncated": "Vexlo^Quimby",
    "garbage_slice": "Plorzu^Kintrap",
    "no_pet": "Drubnix^Yolvesh",
    "frame": "Wemgat^Ostruvi",
    "missing": "Jaxtol^Brimwen",
    "duplicate": "Fuzwick^Tarnopy",
    "spacing": "Glimbor^Excadu",
    "no_weight": "Hruvex^Pallint",
    "no_dose": "Krozzle^Umbrata",
    "units": "Snorvik^Delquat",
    "no_report": "Yabbix^Corvund",
}


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    dicom, reports = raw / "dicom", raw / "reports"
    studies = {}

    def study(key, **kw):
        s = write_thorax_study(
            dicom / f"export_{NAMES[key].split('^')[0]}", reports_dir=reports, patient_name=NAMES[key],
            patient_id=f"PID-{key.upper()}", study_uid=generate_uid(), **kw,
        )
        s["pseudonym"] = pseudonymise(s["study_uid"])
        studies[key] = s
        return s

    study("good")
    (dicom / "export_Qwyxa" / "ct" / "README.txt").write_text("exported by the PACS; not an image")  # non-DICOM
    (dicom / "export_Qwyxa" / "ct" / "thumbs.db").write_bytes(b"\x00\x01binary-not-dicom" * 10)
    s = study("truncated")
    data = s["ct_files"][5].read_bytes()
    s["ct_files"][5].write_bytes(data[: len(data) // 2])
    s = study("garbage_slice")
    s["pet_files"][4].write_bytes(b"\xff" * 500)  # a slice overwritten by junk: not DICOM any more
    study("no_pet", with_pet=False)
    study("frame", pet_frame_uid=generate_uid())
    s = study("missing")
    s["ct_files"][6].unlink()
    s = study("duplicate")
    shutil.copy(s["pet_files"][3], s["pet_files"][3].with_name("pt_0003_copy.dcm"))

    def uneven(ds, k):
        if k >= 7:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], ds.ImagePositionPatient[2] + 2.0]

    study("spacing", ct_extra=uneven)
    study("no_weight", pet_extra=pet_suv_tags(weight_kg=None))
    study("no_dose", pet_extra=pet_suv_tags(dose_bq=None))
    study("units", pet_extra=pet_suv_tags(units="PROPCPS"))
    study("no_report", with_report=False)
    before = _hashes(raw)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=2)
    return {"studies": studies, "raw": raw, "before": before, "out": out, **result}


def _row(cohort, key):
    rows = [r for r in cohort["manifest"]["studies"] if r["pseudonym"] == cohort["studies"][key]["pseudonym"]]
    assert len(rows) == 1
    return rows[0]


def _quarantined(cohort, key, *needles, file=None):
    row = _row(cohort, key)
    assert row["status"] == "quarantined", row
    text = f"{row['file']}: {row['reason']}"
    for needle in needles:
        assert needle in text, text
    if file is not None:
        assert row["file"].endswith(file), row["file"]
    pseudonym = row["pseudonym"]
    assert not (cohort["out"] / "05_model_input" / f"{pseudonym}.npz").exists()
    assert f"{pseudonym} quarantined" in cohort["log"]
    return row


def test_good_study_finishes_and_raw_files_unchanged(cohort):
    row = _row(cohort, "good")
    assert row["status"] == "ok", row
    pseudonym = row["pseudonym"]
    npz = np.load(cohort["out"] / "05_model_input" / f"{pseudonym}.npz")
    assert npz["ct_hu"].shape[1:] == (256, 256) and npz["labels"].max() == 3
    assert (cohort["out"] / "03_primary" / "labels" / f"{pseudonym}.nii.gz").is_file()
    assert _hashes(cohort["raw"]) == cohort["before"]
    ok = [r["pseudonym"] for r in cohort["manifest"]["studies"] if r["status"] == "ok"]
    assert ok == [pseudonym]
    assert len(cohort["manifest"]["studies"]) == len(NAMES)


def test_non_dicom_file_in_folder_is_recorded_and_skipped(cohort):
    skipped = {s["file"]: s["reason"] for s in cohort["manifest"]["skipped_files"]}
    assert skipped["export_<redacted>/ct/README.txt"] == "not a DICOM file"
    assert skipped["export_<redacted>/ct/thumbs.db"] == "not a DICOM file"
    assert "not a DICOM file" in cohort["log"] and "README.txt" in cohort["log"]


def test_truncated_file(cohort):
    _quarantined(cohort, "truncated", "truncated", file="ct/ct_0005.dcm")


def test_corrupt_slice_replaced_by_junk(cohort):
    row = _quarantined(cohort, "garbage_slice", "missing slice", "pt_0004.dcm")
    assert "skipped beside this series" in row["reason"]


def test_ct_without_pet(cohort):
    _quarantined(cohort, "no_pet", "CT series", "no PET series", file="ct/ct_0000.dcm")


def test_different_frame_of_reference(cohort):
    _quarantined(cohort, "frame", "different FrameOfReferenceUID", "pet/pt_0000.dcm")


def test_missing_slice(cohort):
    _quarantined(cohort, "missing", "missing slice", "ct_0007.dcm", file="ct/ct_0005.dcm")


def test_duplicated_slices(cohort):
    _quarantined(cohort, "duplicate", "duplicated slice", "pt_0003")


def test_non_uniform_spacing(cohort):
    _quarantined(cohort, "spacing", "non-uniform slice spacing", file="ct/ct_0006.dcm")


def test_pet_without_weight_or_dose(cohort):
    _quarantined(cohort, "no_weight", "PatientWeight", "SUV")
    _quarantined(cohort, "no_dose", "RadionuclideTotalDose", "SUV")


def test_unknown_units(cohort):
    _quarantined(cohort, "units", "Units", "PROPCPS", file="pet/pt_0000.dcm")


def test_study_without_report(cohort):
    _quarantined(cohort, "no_report", "no diagnostic report", "no tumour seeds")


def test_no_patient_identifiers_in_any_output_or_log(cohort):
    texts = [cohort["log"]]
    for path in cohort["out"].rglob("*"):
        if path.is_file():
            assert not any(n.split("^")[0] in path.name for n in NAMES.values())
            if path.suffix in (".csv", ".json"):
                texts.append(path.read_text())
    blob = "\n".join(texts)
    for key, name in NAMES.items():
        assert name.split("^")[0] not in blob, name
        assert f"PID-{key.upper()}" not in blob
    assert "19600101" not in blob
    table = pd.read_csv(cohort["out"] / "08_reporting" / "preprocess_manifest.csv")
    assert set(table["status"]) == {"ok", "quarantined"}
    manifest = json.loads((cohort["out"] / "08_reporting" / "preprocess_manifest.json").read_text())
    assert manifest["summary"]["ok"] == 1
