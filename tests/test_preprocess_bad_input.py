"""Bad input: each problem quarantines its study with a clear message; the others finish.

One small cohort holds a good study and one study per problem; the preprocess pipeline runs once
over it (two workers, through the project's catalog with paths moved to a temporary folder) and
each test checks one problem. Raw files are hashed before and after. Raw files are named by their
labels (a hash of the relative path, :func:`colearn_pipeline.dicom.file_label`) in every message.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from dicom_fixtures import pet_suv_tags, run_preprocess_catalog, write_thorax_study
from pydicom.uid import generate_uid

from colearn_pipeline.dicom import file_label, pseudonymise

NAMES = {
    "good": "Qwyxa^Zorbel",
    "truncated": "Vexlo^Quimby",
    "garbage_slice": "Plorzu^Kintrap",
    "no_pet": "Drubnix^Yolvesh",
    "frame": "Wemgat^Ostruvi",
    "missing": "Jaxtol^Brimwen",
    "duplicate": "Fuzwick^Tarnopy",
    "duplicate_position": "Zentrak^Mollvi",
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
    s = study("duplicate")  # the same slice exported twice: kept once
    s["copy"] = s["pet_files"][3].with_name("pt_0003_copy.dcm")
    shutil.copy(s["pet_files"][3], s["copy"])
    s = study("duplicate_position")  # a second, different slice (another SOPInstanceUID) at a slice's position
    extra = pydicom.dcmread(s["pet_files"][3])
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    extra.PixelData = (extra.pixel_array // 2).astype(extra.pixel_array.dtype).tobytes()
    s["extra"] = s["pet_files"][3].with_name("pt_0003_b.dcm")
    extra.save_as(s["extra"])

    def uneven(ds, k):
        if k >= 7:
            ds.ImagePositionPatient = [ds.ImagePositionPatient[0], ds.ImagePositionPatient[1], ds.ImagePositionPatient[2] + 2.0]

    study("spacing", ct_extra=uneven)
    study("no_weight", pet_extra=pet_suv_tags(weight_kg=None))
    study("no_dose", pet_extra=pet_suv_tags(dose_bq=None))
    study("units", pet_extra=pet_suv_tags(units="PROPCPS"))
    study("no_report", with_report=False)
    (reports / "orphan.json").write_text(json.dumps({"study_instance_uid": generate_uid(), "findings": []}))
    before = _hashes(raw)
    out = tmp_path_factory.mktemp("out")
    result = run_preprocess_catalog(raw, out, workers=2)
    return {"studies": studies, "raw": raw, "before": before, "out": out, **result}


def _label(cohort, path) -> str:
    return file_label(os.path.relpath(path, cohort["raw"] / "dicom"))


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
        assert row["file"] == file, row["file"]
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
    assert sorted(ok) == sorted([pseudonym, cohort["studies"]["duplicate"]["pseudonym"]])
    assert len(cohort["manifest"]["studies"]) == len(NAMES)


def test_non_dicom_file_in_folder_is_recorded_and_skipped(cohort):
    folder = cohort["raw"] / "dicom" / "export_Qwyxa" / "ct"
    readme, thumbs = _label(cohort, folder / "README.txt"), _label(cohort, folder / "thumbs.db")
    skipped = {s["file"]: s["reason"] for s in cohort["manifest"]["skipped_files"]}
    assert skipped[readme] == "not a DICOM file" and skipped[thumbs] == "not a DICOM file"
    assert f"skipped {readme}: not a DICOM file" in cohort["log"]
    assert "README.txt" not in cohort["log"] and "thumbs.db" not in cohort["log"]
    row = _row(cohort, "good")  # beside the good study's CT: recorded with it, the study still ok
    assert {readme, thumbs} <= {s["file"] for s in row["skipped_files"]} and row["n_skipped_files"] == 2
    assert row["corrupt_files"] == [] and row["n_corrupt_files"] == 0
    table = pd.read_csv(cohort["out"] / "08_reporting" / "preprocess_manifest.csv")
    assert "skipped_files" not in table.columns  # the CSV has the count, the JSON the list
    assert table.set_index("pseudonym").loc[row["pseudonym"], "n_skipped_files"] == 2
    file_map = pd.read_csv(cohort["out"] / "local" / "file_map.csv").set_index("file")["relative_path"]
    assert file_map[readme] == "export_Qwyxa/ct/README.txt"  # the map back lives in conf/local only


def test_truncated_file(cohort):
    s = cohort["studies"]["truncated"]
    row = _quarantined(cohort, "truncated", "truncated", file=_label(cohort, s["ct_files"][5]))
    assert ".dcm" not in row["reason"]


def test_corrupt_slice_replaced_by_junk(cohort):
    s = cohort["studies"]["garbage_slice"]
    junk = _label(cohort, s["pet_files"][4])
    row = _quarantined(cohort, "garbage_slice", "missing slice", _label(cohort, s["pet_files"][5]),
                       f"skipped beside this series: {junk}", file=_label(cohort, s["pet_files"][3]))
    assert "pt_0004" not in row["reason"] and ".dcm" not in row["reason"]
    assert {"file": junk, "reason": "not a DICOM file"} in row["skipped_files"]


def test_ct_without_pet(cohort):
    s = cohort["studies"]["no_pet"]
    _quarantined(cohort, "no_pet", "CT series", "no PET series", file=_label(cohort, s["ct_files"][0]))


def test_different_frame_of_reference(cohort):
    s = cohort["studies"]["frame"]
    _quarantined(cohort, "frame", "different FrameOfReferenceUID", file=_label(cohort, s["pet_files"][0]))


def test_missing_slice(cohort):
    s = cohort["studies"]["missing"]
    _quarantined(cohort, "missing", "missing slice", _label(cohort, s["ct_files"][7]),
                 file=_label(cohort, s["ct_files"][5]))


def test_identical_duplicate_export_is_kept_once(cohort):
    s = cohort["studies"]["duplicate"]
    row = _row(cohort, "duplicate")
    assert row["status"] == "ok", row
    copy, original = _label(cohort, s["copy"]), _label(cohort, s["pet_files"][3])
    reasons = {item["file"]: item["reason"] for item in row["skipped_files"]}
    assert reasons[copy].startswith(f"identical duplicate export of {original}")
    assert copy in {item["file"] for item in cohort["manifest"]["skipped_files"]}


def test_duplicated_slice_position_is_refused(cohort):
    s = cohort["studies"]["duplicate_position"]
    labels = {_label(cohort, s["pet_files"][3]), _label(cohort, s["extra"])}
    row = _quarantined(cohort, "duplicate_position", "duplicated slice", "differs in pixel data")
    assert row["file"] in labels and any(label in row["reason"] for label in labels - {row["file"]}), row


def test_non_uniform_spacing(cohort):
    s = cohort["studies"]["spacing"]
    _quarantined(cohort, "spacing", "non-uniform slice spacing", file=_label(cohort, s["ct_files"][6]))


def test_pet_without_weight_or_dose(cohort):
    _quarantined(cohort, "no_weight", "PatientWeight", "SUV")
    _quarantined(cohort, "no_dose", "RadionuclideTotalDose", "SUV")


def test_unknown_units(cohort):
    s = cohort["studies"]["units"]
    _quarantined(cohort, "units", "Units", "PROPCPS", file=_label(cohort, s["pet_files"][0]))


def test_study_without_report_is_converted_but_tumours_unlabelled(cohort):
    """Issue 10: no report -> CT, SUV, lungs and mediastinum still derived; no tumour label, so no model input."""
    row = _row(cohort, "no_report")
    assert row["status"] == "tumours_unlabelled", row
    assert "no diagnostic report" in row["reason"]
    pseudonym = row["pseudonym"]
    assert not (cohort["out"] / "05_model_input" / f"{pseudonym}.npz").exists()


def test_no_patient_identifiers_in_any_output_or_log(cohort):
    texts = [cohort["log"]]
    local = cohort["out"] / "local"  # stands for the git-ignored conf/local: the maps back live there only
    assert sorted(p.name for p in local.iterdir()) == ["file_map.csv", "pseudonym_map.csv"]
    for path in cohort["out"].rglob("*"):
        if path.is_file() and local not in path.parents:
            assert not any(n.split("^")[0] in path.name for n in NAMES.values())
            if path.suffix in (".csv", ".json"):
                texts.append(path.read_text())
    blob = "\n".join(texts)
    for key, name in NAMES.items():
        assert name.split("^")[0] not in blob, name
        assert f"PID-{key.upper()}" not in blob
    assert "19600101" not in blob
    table = pd.read_csv(cohort["out"] / "08_reporting" / "preprocess_manifest.csv")
    assert set(table["status"]) == {"ok", "quarantined", "tumours_unlabelled"}
    manifest = json.loads((cohort["out"] / "08_reporting" / "preprocess_manifest.json").read_text())
    assert manifest["summary"]["ok"] == 2


def test_report_of_no_study_is_listed_by_label(cohort):
    """Issue 11: a report whose StudyInstanceUID matches no study is listed (by label), not silently dropped."""
    problems = cohort["manifest"]["report_problems"]
    orphans = [p for p in problems if "matches no study" in p["reason"]]
    assert len(orphans) == 1 and orphans[0]["file"].startswith("report-"), problems
