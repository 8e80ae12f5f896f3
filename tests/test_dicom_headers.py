"""Any real header: the patient and study modules of what we write, from sources that lack, break or encode them.

Every object written here (SEG and SR) must pass dciodvfy with 0 errors.

:func:`copy_patient_study` alone (hand-made headers), then every DICOM object the project writes
(SEG, SR) validated by dciodvfy and read back by dcmqi for: each phantom vendor (classic slices
and one enhanced multi-frame CT), a header-stripped copy (type 2 attributes deleted), two other
character sets, and a real de-identified chest CT (tests/data/lung_ct).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_validators import dciodvfy_errors, dcmqi_segments, sr_measurement_groups
from pydicom.dataset import Dataset
from real_data import lung_ct_root

from colearn_pipeline.dicom.discovery import discover, select_ct_pet
from colearn_pipeline.dicom.series import read_series
from colearn_pipeline.evaluation.quantification import quantify_tumours
from colearn_pipeline.inference.dicom_headers import (
    TYPE2,
    UNSTATED_DEIDENTIFICATION,
    HeaderError,
    copy_patient_study,
    source_header,
)
from colearn_pipeline.inference.seg import (
    LABEL_OF_CODE,
    build_seg,
    read_label_map,
    seg_sources,
    write_seg,
)
from colearn_pipeline.inference.sr import build_sr
from colearn_pipeline.phantom.generate import generate_cohort

#: A real de-identified chest CT (Philips; PatientIdentityRemoved YES, a ReferencedStudySequence item without
#: its SOP class) and three real de-identified limb PET-CT studies (GE; StudyID longer than SH allows).
#: Header variants written over a copy of a phantom study's files.
NAMES = {"latin1": ("ISO_IR 100", "Müller^Jörg"), "utf8": ("ISO_IR 192", "山田^太郎=やまだ^たろう")}
#: A partial Clinical Trial Subject module as some research exports carry it (type 2 attributes missing).
TRIAL = {"ClinicalTrialSponsorName": "NCI", "ClinicalTrialProtocolID": "PROTO-1", "ClinicalTrialSubjectID": "S-01"}


# ---- copy_patient_study on hand-made headers ----------------------------------------------------------------------


def _source(**tags) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3.4"
    ds.PatientName, ds.PatientID, ds.PatientSex = "Doe^Jane", "P1", "F"
    for k, v in tags.items():
        setattr(ds, k, v)
    return ds


def test_missing_and_invalid_type2_attributes_are_written_empty():
    source = _source(PatientSex="female", PatientBirthDate="N/A", StudyDate="20240230X")
    target = copy_patient_study(source, Dataset())
    for keyword in TYPE2:
        assert keyword in target, keyword
    assert target.PatientName == "Doe^Jane" and target.PatientID == "P1"
    assert (target.PatientSex, target.PatientBirthDate, target.StudyDate, target.AccessionNumber) == ("", "", "", "")
    assert target.StudyInstanceUID == "1.2.3.4"
    assert "PatientSex" in source and source.PatientSex == "female"  # the source is left as it was


def test_target_values_are_replaced_and_elements_not_shared():
    source = _source(AccessionNumber="A1", StudyID="S1")
    target = Dataset()
    target.AccessionNumber, target.PatientAge = "OLD", "040Y"  # what a library copied before
    copy_patient_study(source, target)
    assert target.AccessionNumber == "A1" and "PatientAge" not in target
    header = source_header(source)
    header.AccessionNumber = "changed"
    assert source.AccessionNumber == "A1"


def test_deidentification_method_is_copied_or_stated():
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "113100", "DCM", "Basic Application Confidentiality Profile"
    with_code = copy_patient_study(_source(PatientIdentityRemoved="YES", DeidentificationMethodCodeSequence=[code]),
                                   Dataset())
    assert with_code.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "DeidentificationMethod" not in with_code
    bare = copy_patient_study(_source(PatientIdentityRemoved="YES"), Dataset())
    assert bare.DeidentificationMethod == UNSTATED_DEIDENTIFICATION and len(UNSTATED_DEIDENTIFICATION) <= 64
    assert "DeidentificationMethod" not in copy_patient_study(_source(PatientIdentityRemoved="NO"), Dataset())
    broken = Dataset()
    broken.CodeValue = "113100"  # no scheme, no meaning: dropped, so the method is stated instead
    dropped = copy_patient_study(_source(PatientIdentityRemoved="YES", DeidentificationMethodCodeSequence=[broken]),
                                 Dataset())
    assert "DeidentificationMethodCodeSequence" not in dropped and dropped.DeidentificationMethod


def test_incomplete_sequence_items_and_bad_optional_values_are_dropped():
    half = Dataset()
    half.ReferencedSOPInstanceUID = "1.2.3.9"  # no ReferencedSOPClassUID (a de-identified export)
    whole = Dataset()
    whole.ReferencedSOPClassUID, whole.ReferencedSOPInstanceUID = "1.2.840.10008.3.1.2.3.1", "1.2.3.8"
    target = copy_patient_study(_source(ReferencedStudySequence=[half, whole], PatientAge="58 years",
                                        StudyDescription="Chest", SpecificCharacterSet="ISO_IR 100"), Dataset())
    assert [i.ReferencedSOPInstanceUID for i in target.ReferencedStudySequence] == ["1.2.3.8"]
    assert "PatientAge" not in target and target.StudyDescription == "Chest"
    assert target.SpecificCharacterSet == "ISO_IR 100"


def test_clinical_trial_modules_are_completed_or_left_out():
    whole = copy_patient_study(_source(ClinicalTrialSponsorName="TCIA", ClinicalTrialProtocolID="LUNG-PET-CT-DX",
                                       ClinicalTrialSubjectID="A0001", ClinicalTrialTimePointDescription="baseline"),
                               Dataset())
    assert (whole.ClinicalTrialProtocolID, whole.ClinicalTrialSubjectID) == ("LUNG-PET-CT-DX", "A0001")
    for keyword in ("ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName",
                    "ClinicalTrialTimePointID"):
        assert whole[keyword].value in ("", None), keyword
    partial = copy_patient_study(_source(ClinicalTrialProtocolName="a trial", ResponsiblePerson="Smith^J"), Dataset())
    assert not [e.keyword for e in partial if e.keyword.startswith(("ClinicalTrial", "Responsible"))]


def test_no_study_instance_uid_is_an_error():
    source = _source()
    del source.StudyInstanceUID
    with pytest.raises(HeaderError, match="StudyInstanceUID"):
        copy_patient_study(source, Dataset())


# ---- every object written, validated: phantom vendors, enhanced CT, stripped headers, character sets -------------


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Six tiny phantom studies: Siemens, Philips and GE conventions; the last one's CT is one enhanced object."""
    raw = tmp_path_factory.mktemp("phantom")
    summary = generate_cohort(raw, n_studies=6, seed=3, size="tiny", progress=False, archive_enhanced_every=6)
    found = discover(raw / "dicom")
    studies = {}  # in generation order: study i has convention CONVENTIONS[i]
    for pseudonym in [s["pseudonym"] for s in summary["studies"]]:
        files = found.studies[pseudonym]
        ct_info, _, _ = select_ct_pet(files, str(raw / "dicom"))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "phantom_truth" / pseudonym / "labels.nii.gz")))
        studies[pseudonym] = (list(ct_info.files), truth.astype(np.uint8))
    return studies


def rewrite_headers(files, folder: Path, variant: str) -> list[Path]:
    """Copies of ``files`` with their headers changed: ``stripped`` (type 2 attributes deleted), a charset, a trial."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        if variant == "stripped":
            for keyword in TYPE2:
                if keyword in ds and keyword not in ("PatientID", "PatientName"):
                    delattr(ds, keyword)
        elif variant == "trial":
            for keyword, value in TRIAL.items():
                setattr(ds, keyword, value)
        elif variant in NAMES:
            ds.SpecificCharacterSet, ds.PatientName = NAMES[variant]
            ds.StudyDescription = "Thorax, Lunge (Tumorsuche)" if variant == "latin1" else "胸部 PET-CT"
        out.append(folder / f"{i:04d}.dcm")
        ds.save_as(out[-1])
    return out


def _cases():
    studies = range(6)
    return ([(i, "as_written") for i in studies] + [(i, "stripped") for i in studies]
            + [(i, v) for i in (0, 5) for v in [*NAMES, "trial"]])


def _write_valid_sr(seg, ct, labels, path: Path) -> pydicom.Dataset:
    """The SR of ``labels`` (SUV 1 + 2 in tumour) beside ``seg``: dciodvfy-clean, patient and study of the SEG."""
    suv = 1.0 + 2.0 * (labels == LABEL_OF_CODE["108369006"])
    figures = quantify_tumours(labels, suv, ct.spacing_xyz_mm, tumour_label=LABEL_OF_CODE["108369006"])
    sr = build_sr(seg, seg_sources(ct.datasets, ct.files), figures, tumour_segment=LABEL_OF_CODE["108369006"],
                  geometry=(ct.spacing_xyz_mm, ct.origin_xyz_mm, ct.direction))
    write_seg(sr, path)
    assert dciodvfy_errors(path) == []
    written = pydicom.dcmread(path)
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber", "SpecificCharacterSet"):
        assert written.get(keyword) == seg.get(keyword), keyword
    return written


def _assert_seg_valid_and_read_back(seg_path, ct, labels):
    assert dciodvfy_errors(seg_path) == []
    masks = dcmqi_segments(seg_path, ct.to_sitk(np.zeros(ct.shape_zyx, np.uint8)))
    assert set(masks) <= set(LABEL_OF_CODE)
    for code, label in LABEL_OF_CODE.items():
        mask = masks[code] if (labels == label).any() else masks.get(code, np.zeros(labels.shape, bool))
        np.testing.assert_array_equal(mask, labels == label, err_msg=code)


@pytest.mark.parametrize(("index", "variant"), _cases())
def test_every_object_written_is_valid_for_each_vendor_and_header(cohort, tmp_path, index, variant):
    pseudonym = list(cohort)[index]
    files, labels = cohort[pseudonym]
    if variant != "as_written":
        files = rewrite_headers(files, tmp_path / "ct", variant)
    ct = read_series(files, pseudonym)
    seg = build_seg(labels, ct.datasets, algorithm={"name": "colearn-pipeline test", "version": "1"},
                    source_files=ct.files)
    seg_path = write_seg(seg, tmp_path / f"{pseudonym}.seg.dcm")
    _assert_seg_valid_and_read_back(seg_path, ct, labels)
    np.testing.assert_array_equal(read_label_map(seg_path, ct), labels)
    _write_valid_sr(seg, ct, labels, tmp_path / f"{pseudonym}.sr.dcm")
    written = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    assert written.StudyInstanceUID == source.StudyInstanceUID and written.PatientName == source.PatientName
    if variant == "stripped":
        assert (written.AccessionNumber, written.StudyID, written.ReferringPhysicianName) == ("", "", "")
    if variant == "trial":
        assert written.ClinicalTrialSubjectID == "S-01" and written.ClinicalTrialSiteName == ""
    if variant in NAMES:
        assert written.SpecificCharacterSet == NAMES[variant][0] and str(written.PatientName) == NAMES[variant][1]


def test_enhanced_ct_seg_and_sr_reference_the_source_frames(cohort, tmp_path):
    pseudonym = list(cohort)[5]
    files, labels = cohort[pseudonym]
    ct = read_series(files, pseudonym)
    assert len(set(ct.files)) == 1, "study 5 should hold one enhanced CT object (archive_enhanced_every=6)"
    hd_seg = build_seg(labels, ct.datasets, algorithm={"name": "t", "version": "1"}, source_files=ct.files)
    seg = write_seg(hd_seg, tmp_path / "mf.seg.dcm")
    ds = pydicom.dcmread(seg)
    source = pydicom.dcmread(ct.files[0], stop_before_pixels=True)
    position_of_frame = {k + 1: [float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient]
                         for k, g in enumerate(source.PerFrameFunctionalGroupsSequence)}
    for item in ds.PerFrameFunctionalGroupsSequence:
        ref = item.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
        np.testing.assert_allclose(position_of_frame[int(ref.ReferencedFrameNumber)],
                                   [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient], atol=1e-3)
    sr = _write_valid_sr(hd_seg, ct, labels, tmp_path / "mf.sr.dcm")
    groups = sr_measurement_groups(sr)
    assert groups and all(set(g["source_images"]) == {source.SOPInstanceUID} for g in groups)
    frames = [{int(f) for i in group.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121233"
               for f in np.atleast_1d(i.ReferencedSOPSequence[0].ReferencedFrameNumber)}
              for measurements in sr.ContentSequence if measurements.ConceptNameCodeSequence[0].CodeValue == "126010"
              for group in measurements.ContentSequence]  # the Source Image for Segmentation items of each group
    position_z = {k: p[2] for k, p in position_of_frame.items()}
    tumour_z = {round(float(d.ImagePositionPatient[2]), 3) for d, lab in zip(ct.datasets, labels) if (lab == 3).any()}
    assert {round(position_z[f], 3) for f in frames[-1]} == tumour_z  # all components: every tumour slice's frame
    assert all(f <= frames[-1] for f in frames[:-1])
    with pytest.raises(ValueError, match="source_files"):
        build_seg(labels, ct.datasets, algorithm={"name": "t", "version": "1"})


# ---- a real, de-identified chest CT ---------------------------------------------------------------------------------


def _box_labels(shape) -> np.ndarray:
    z, y, x = (n // 2 for n in shape)
    labels = np.zeros(shape, np.uint8)
    labels[z - 5:z + 5, y - 50:y + 50, x - 100:x] = 1
    labels[z - 2:z + 2, y - 10:y + 10, x + 20:x + 40] = 3
    return labels


@pytest.fixture(scope="module")
def real_ct(tmp_path_factory):
    root = lung_ct_root(tmp_path_factory)
    ct = read_series(sorted((root / "ct").glob("*.dcm")), "lung-dx-a0001")
    return ct, _box_labels(ct.shape_zyx)


def test_real_ge_ct_with_an_overlong_study_id_gives_a_valid_seg_and_sr(tmp_path, ibsi_sts_root):
    root = ibsi_sts_root
    ct = read_series(sorted((root / "STS_001" / "CT" / "image").glob("*.dcm")), "sts-001")
    source = ct.datasets[0]
    assert len(source.StudyID) > 16 and source.Manufacturer == "GE MEDICAL SYSTEMS"  # SH holds 16 characters
    labels = _box_labels(ct.shape_zyx)
    seg = build_seg(labels, ct.datasets, algorithm={"name": "t", "version": "1"})
    seg_path = write_seg(seg, tmp_path / "sts.seg.dcm")
    _assert_seg_valid_and_read_back(seg_path, ct, labels)
    sr = _write_valid_sr(seg, ct, labels, tmp_path / "sts.sr.dcm")
    assert sr.StudyID == "" and sr.AccessionNumber == source.AccessionNumber != ""


def test_real_deidentified_ct_gives_a_valid_seg_and_sr_with_its_deidentification(real_ct, tmp_path):
    ct, labels = real_ct
    source = ct.datasets[0]
    assert source.PatientIdentityRemoved == "YES"
    seg = build_seg(labels, ct.datasets, algorithm={"name": "t", "version": "1"})
    seg_path = write_seg(seg, tmp_path / "real.seg.dcm")
    _assert_seg_valid_and_read_back(seg_path, ct, labels)
    sr = _write_valid_sr(seg, ct, labels, tmp_path / "real.sr.dcm")
    assert sr.DeidentificationMethod == source.DeidentificationMethod
    written = pydicom.dcmread(seg_path)
    assert written.PatientIdentityRemoved == "YES"
    assert written.DeidentificationMethod == source.DeidentificationMethod
    assert ([i.CodeValue for i in written.DeidentificationMethodCodeSequence]
            == [i.CodeValue for i in source.DeidentificationMethodCodeSequence])
    assert written.SpecificCharacterSet == source.SpecificCharacterSet
