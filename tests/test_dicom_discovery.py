"""discover / select_ct_pet: grouping by tags, series choice, skipped files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from dicom_fixtures import write_series, write_study
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from colearn_pipeline.dicom import DicomStudyError, file_label, pseudonymise
from colearn_pipeline.dicom.discovery import discover, select_ct_pet


def _flatten(src: Path, dst: Path) -> None:
    """Move every file into one folder under meaningless names (order scrambled)."""
    dst.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    rng = np.random.default_rng(0)
    for i, p in enumerate(rng.permutation(len(files))):
        shutil.copy(files[p], dst / f"IM{i:05d}")


def _structured_report(path: Path, study_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "SR"
    ds.save_as(path, enforce_file_format=True)


def test_groups_by_tags_not_folders(tmp_path):
    a = write_study(tmp_path / "src" / "a")
    b = write_study(tmp_path / "src" / "b", seed=1)
    _flatten(tmp_path / "src", tmp_path / "flat")
    _structured_report(tmp_path / "flat" / "SR0001", a["study_uid"])
    (tmp_path / "flat" / "notes.txt").write_text("hello")
    found = discover(tmp_path / "flat")
    assert set(found.studies) == {pseudonymise(a["study_uid"]), pseudonymise(b["study_uid"])}
    study = found.studies[pseudonymise(a["study_uid"])]
    assert sorted(len(s.files) for s in study.series.values()) == [6, 8]
    reasons = dict(found.skipped)
    assert reasons[file_label("notes.txt")] == "not a DICOM file"
    assert "Modality 'SR'" in reasons[file_label("SR0001")]
    assert found.file_map[file_label("SR0001")] == "SR0001"
    ct, pet, note = select_ct_pet(study)
    assert ct.modality == "CT" and pet.modality == "PT" and len(ct.files) == 8
    assert "Doe" not in note


def test_prefers_volume_ct_and_attenuation_corrected_pet(tmp_path):
    study = write_study(tmp_path / "s")
    uid, frame = study["study_uid"], study["frame_uid"]

    def scout(ds, k):
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    # a localizer with more "slices" than the CT, and a non-attenuation-corrected PET
    write_series(tmp_path / "s" / "scout", np.zeros((12, 8, 8)), modality="CT", study_uid=uid, frame_uid=frame, extra=scout)

    def nac(ds, k):
        from dicom_fixtures import pet_suv_tags

        pet_suv_tags()(ds, k)
        ds.CorrectedImage = ["DECY"]

    write_series(tmp_path / "s" / "nac", np.ones((9, 6, 6)), modality="PT", study_uid=uid, frame_uid=frame, extra=nac)
    found = discover(tmp_path)
    ct, pet, note = select_ct_pet(found.studies[pseudonymise(uid)], str(tmp_path))
    assert len(ct.files) == 8 and "ATTN" in pet.corrected and len(pet.files) == 6
    assert "ImageType LOCALIZER" in note and "CorrectedImage lacks ATTN: not attenuation/decay corrected" in note


def test_study_level_errors(tmp_path):
    only_ct = write_study(tmp_path / "a", with_pet=False)
    other_frame = write_study(tmp_path / "b", pet_frame_uid=generate_uid())
    found = discover(tmp_path)
    with pytest.raises(DicomStudyError, match="no PET series") as err:
        select_ct_pet(found.studies[pseudonymise(only_ct["study_uid"])], str(tmp_path))
    assert err.value.file == file_label("a/ct/ct_0000.dcm") and err.value.study == pseudonymise(only_ct["study_uid"])
    with pytest.raises(DicomStudyError, match="different FrameOfReferenceUID"):
        select_ct_pet(found.studies[pseudonymise(other_frame["study_uid"])], str(tmp_path))


@pytest.mark.parametrize("keep_bytes", [400, 800])
def test_truncated_header_is_never_dropped_silently(tmp_path, keep_bytes):
    """A header cut before the UIDs is skipped as truncated; cut later, it quarantines its study."""
    study = write_study(tmp_path)
    path = study["ct_files"][2]
    path.write_bytes(path.read_bytes()[:keep_bytes])
    found = discover(tmp_path)
    info = found.studies[pseudonymise(study["study_uid"])]
    if keep_bytes == 400:
        assert dict(found.skipped)[file_label("ct/ct_0002.dcm")].startswith("truncated or corrupt DICOM")
    else:
        assert info.corrupt == [(
            file_label("ct/ct_0002.dcm"),
            "truncated or corrupt DICOM header: Rows, ImagePositionPatient, ImageOrientationPatient missing",
        )]
    assert all(str(path) not in s.files for s in info.series.values())


def test_redact_replaces_identifiers(tmp_path):
    study = write_study(tmp_path)
    found = discover(tmp_path)
    info = found.studies[pseudonymise(study["study_uid"])]
    assert info.redact("/exports/Doe^Jane/PID-0001/19600101/x.dcm") == "/exports/<redacted>/<redacted>/<redacted>/x.dcm"
    assert info.redact("Jane_Doe") == "<redacted>_<redacted>"


def test_pet_beside_a_ct_it_does_not_overlap_or_without_frame_of_reference_names_the_cause(tmp_path):
    """Issue 11: PET and CT that do not overlap along z, and a CT without FrameOfReferenceUID, are
    refused with that cause named, not as a generic selection failure."""
    def corrected(ds, k):
        ds.CorrectedImage = ["ATTN", "DECY"]

    uid, frame = generate_uid(), generate_uid()
    write_series(tmp_path / "far" / "ct", np.zeros((8, 6, 6)), modality="CT", study_uid=uid, frame_uid=frame)
    write_series(tmp_path / "far" / "pt", np.ones((6, 6, 6)), modality="PT", study_uid=uid, frame_uid=frame,
                 origin_xyz_mm=(0.0, 0.0, 500.0), extra=corrected)  # 50 cm above the CT: no overlap
    uid2, frame2 = generate_uid(), generate_uid()

    def no_frame(ds, k):
        del ds.FrameOfReferenceUID

    write_series(tmp_path / "nofor" / "ct", np.zeros((8, 6, 6)), modality="CT", study_uid=uid2, frame_uid=frame2,
                 extra=no_frame)
    write_series(tmp_path / "nofor" / "pt", np.ones((6, 6, 6)), modality="PT", study_uid=uid2, frame_uid=frame2,
                 extra=corrected)
    found = discover(tmp_path)
    with pytest.raises(DicomStudyError, match="no CT series covers at least 50% of the PET's z range"):
        select_ct_pet(found.studies[pseudonymise(uid)], str(tmp_path))
    with pytest.raises(DicomStudyError, match=r"no axial CT volume: series-\S+: no FrameOfReferenceUID"):
        select_ct_pet(found.studies[pseudonymise(uid2)], str(tmp_path))
