"""Patient and study modules of a DICOM object we write, copied robustly from a real source image.

Every DICOM object the project writes beside a study (the SEG of :mod:`.seg`, the TID 1500 SR of
:mod:`.sr`, an RTSTRUCT) must carry the source study's Patient, General Study, Patient Study and
Clinical Trial Subject / Study modules so that a PACS files it with the study. Real exports are
untidy: type 2 attributes (AccessionNumber, StudyID, ReferringPhysicianName, PatientBirthDate,
PatientSex, ...) are missing or hold invalid values, de-identified studies set
PatientIdentityRemoved YES, text is in other character sets, the source may be one enhanced
multi-frame object. :func:`copy_patient_study` is the one place that handles it:

- type 2 attributes are copied when their value is valid for their VR, else written empty;
- type 3 attributes are copied only when present, non-empty and valid (code and SOP-reference
  sequence items that lack a type 1 attribute are dropped); a Clinical Trial Subject / Study
  module only when whole (type 1 present; type 2 completed empty);
- PatientIdentityRemoved YES: DeidentificationMethod and DeidentificationMethodCodeSequence are
  copied; if the source has neither, DeidentificationMethod (type 1C) says so;
- SpecificCharacterSet is copied so that names in other character sets stay decodable;
- a StudyInstanceUID (type 1) is required: :class:`HeaderError` otherwise.

:func:`source_header` gives a copy of a source header completed the same way, for libraries
(highdicom) that read ``source.AccessionNumber`` and the like unconditionally.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from pydicom.config import RAISE
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import validate_value

#: Type 2 attributes of the Patient (C.7.1.1) and General Study (C.7.2.1) modules: present, maybe empty.
TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
         "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: Type 3 (or conditional, copied when the source has them) root attributes of the Patient,
#: General Study, Patient Study, Clinical Trial Subject and Clinical Trial Study modules.
OPTIONAL = (
    # Patient
    "IssuerOfPatientID", "IssuerOfPatientIDQualifiersSequence", "TypeOfPatientID", "PatientBirthTime",
    "QualityControlSubject", "OtherPatientIDsSequence", "OtherPatientNames", "EthnicGroup", "PatientComments",
    "PatientSpeciesDescription", "PatientSpeciesCodeSequence", "PatientBreedDescription", "PatientBreedCodeSequence",
    "BreedRegistrationSequence", "ResponsiblePerson", "ResponsiblePersonRole", "ResponsibleOrganization",
    "PatientIdentityRemoved",
    # General Study
    "StudyDescription", "IssuerOfAccessionNumberSequence", "ReferringPhysicianIdentificationSequence",
    "PhysiciansOfRecord", "NameOfPhysiciansReadingStudy", "ReferencedStudySequence", "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    # Patient Study
    "AdmittingDiagnosesDescription", "AdmittingDiagnosesCodeSequence", "PatientAge", "PatientSize",
    "PatientWeight", "Occupation", "AdditionalPatientHistory", "SmokingStatus", "PregnancyStatus",
    "PatientSexNeutered",
    # Clinical Trial Subject and Study (completed or dropped by _complete_clinical_trial)
    "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName", "ClinicalTrialSiteID",
    "ClinicalTrialSiteName", "ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID",
    "ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription",
)
#: Clinical Trial Subject module (C.7.1.3): type 1, type 2, and the 1C pair of which one is required.
TRIAL_SUBJECT_TYPE1 = ("ClinicalTrialSponsorName", "ClinicalTrialProtocolID")
TRIAL_SUBJECT_TYPE2 = ("ClinicalTrialProtocolName", "ClinicalTrialSiteID", "ClinicalTrialSiteName")
TRIAL_SUBJECT_EITHER = ("ClinicalTrialSubjectID", "ClinicalTrialSubjectReadingID")
#: Clinical Trial Study module (C.7.2.3): its type 2 attribute, written when the module is.
TRIAL_STUDY = ("ClinicalTrialTimePointID", "ClinicalTrialTimePointDescription")
#: An attribute copied only with its type 1C companion (PS3.3 C.7.1.1: Responsible Person Role).
COMPANIONS = {"ResponsiblePerson": "ResponsiblePersonRole"}
#: De-identification attributes, written together by the PatientIdentityRemoved rule.
DEIDENTIFICATION = ("DeidentificationMethod", "DeidentificationMethodCodeSequence")
#: DeidentificationMethod (LO, at most 64 characters) when the source says YES but not how.
UNSTATED_DEIDENTIFICATION = "source: PatientIdentityRemoved YES, method not stated"
#: Enumerated values (PS3.3 C.7.1.1, C.7.2.2, C.7.1.1 Patient Identity Removed).
ENUMERATED = {"PatientSex": {"M", "F", "O"}, "PatientIdentityRemoved": {"YES", "NO"},
              "SmokingStatus": {"YES", "NO", "UNKNOWN"}, "QualityControlSubject": {"YES", "NO"},
              "PatientSexNeutered": {"ALTERED", "UNALTERED"}}
#: Type 1 attributes of the items of the sequences we copy: an item without them is dropped.
SOP_REFERENCE_ITEM = ("ReferencedSOPClassUID", "ReferencedSOPInstanceUID")
CODE_ITEM = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
ITEM_REQUIRED = {
    "ReferencedStudySequence": SOP_REFERENCE_ITEM,
    "OtherPatientIDsSequence": ("PatientID",),
    "BreedRegistrationSequence": ("BreedRegistrationNumber",),
}


class HeaderError(ValueError):
    """A source header that no valid object can be built from (the caller names the study and file)."""


def _valid_value(keyword: str, value) -> bool:
    vr = dictionary_VR(keyword)
    values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    allowed = ENUMERATED.get(keyword)
    for v in values:
        if allowed is not None and str(v) not in allowed:
            return False
        try:
            validate_value(vr, v, RAISE)
        except (ValueError, TypeError):
            return False
    return True


def _item_ok(item: Dataset, required: Iterable[str]) -> bool:
    return all(item.get(k) not in (None, "") for k in required)


def _code_item_ok(item: Dataset) -> bool:
    has_value = any(item.get(k) not in (None, "") for k in ("CodeValue", "LongCodeValue", "URNCodeValue"))
    has_scheme = item.get("CodingSchemeDesignator") not in (None, "") or "URNCodeValue" in item
    return has_value and has_scheme and item.get("CodeMeaning") not in (None, "")


def _valid_items(keyword: str, items) -> list[Dataset]:
    """Deep copies of the sequence items that carry their type 1 attributes."""
    if keyword.endswith("CodeSequence"):
        return [copy.deepcopy(i) for i in items if _code_item_ok(i)]
    required = ITEM_REQUIRED.get(keyword, ())
    return [copy.deepcopy(i) for i in items if _item_ok(i, required)]


def _set(target: Dataset, keyword: str, value) -> None:
    """Set ``keyword`` on ``target`` without mutating an element it may share with another dataset."""
    if keyword in target:
        delattr(target, keyword)
    setattr(target, keyword, value)


def _copy_optional(source: Dataset, target: Dataset, keyword: str) -> None:
    if keyword in target:
        delattr(target, keyword)
    value = source.get(keyword)
    if value is None or value == "" or (isinstance(value, (list, MultiValue)) and len(value) == 0):
        return
    if dictionary_VR(keyword) == "SQ":
        items = _valid_items(keyword, value)
        if items:
            _set(target, keyword, items)
    elif _valid_value(keyword, value):
        _set(target, keyword, copy.deepcopy(value))


def _copy_deidentification(source: Dataset, target: Dataset) -> None:
    for keyword in DEIDENTIFICATION:
        _copy_optional(source, target, keyword)
    removed = target.get("PatientIdentityRemoved")
    if removed == "YES" and not any(k in target for k in DEIDENTIFICATION):
        _set(target, "DeidentificationMethod", UNSTATED_DEIDENTIFICATION)


def _complete_clinical_trial(target: Dataset) -> None:
    """Keep the Clinical Trial Subject / Study modules only when whole: type 1 present, type 2 written empty."""
    trial = [k for k in OPTIONAL if k.startswith("ClinicalTrial")]
    if not any(k in target for k in trial):
        return
    whole = all(k in target for k in TRIAL_SUBJECT_TYPE1) and any(k in target for k in TRIAL_SUBJECT_EITHER)
    if not whole:  # a partial module is invalid: leave it out rather than invent identifiers
        for k in trial:
            if k in target:
                delattr(target, k)
        return
    study_module = any(k in target for k in TRIAL_STUDY)
    for k in TRIAL_SUBJECT_TYPE2 + (TRIAL_STUDY[:1] if study_module else ()):
        if k not in target:
            _set(target, k, "")


def _drop_orphans(target: Dataset) -> None:
    for keyword, companion in COMPANIONS.items():
        if keyword in target and companion not in target:
            delattr(target, keyword)


def copy_patient_study(source: Dataset, target: Dataset) -> Dataset:
    """Write the Patient, General Study, Patient Study and Clinical Trial modules of ``source`` onto ``target``.

    The one function that every DICOM writer of the project (SEG, SR, RTSTRUCT) calls, after
    building its object, so that the object files beside the source study and validates
    (dciodvfy) whatever the source's header lacks.

    Parameters
    ----------
    source : pydicom.dataset.Dataset
        A source image header (classic slice, a frame header of an enhanced object, or the
        enhanced object itself); not modified.
    target : pydicom.dataset.Dataset
        The object being written; modified in place. What it held of these modules is replaced.

    Returns
    -------
    pydicom.dataset.Dataset
        ``target``.

    Raises
    ------
    HeaderError
        ``source`` has no StudyInstanceUID (type 1; without it no object can join the study).

    Notes
    -----
    Type 2 attributes missing or invalid for their VR (e.g. PatientSex ``"m"``, a date
    ``"N/A"``) are written empty; type 3 ones are copied only when valid; sequence items
    lacking a type 1 attribute are dropped, and so is ResponsiblePerson without its role.
    The Clinical Trial Subject and Study modules are copied only when their type 1 attributes
    are there (sponsor, protocol ID, subject ID or reading ID), their type 2 ones written empty.
    With PatientIdentityRemoved YES, the de-identification method (text and/or code sequence) is
    copied, or stated as unknown (:data:`UNSTATED_DEIDENTIFICATION`) when the source has neither,
    as PS3.3 C.7.1.1 requires.
    """
    uid = str(source.get("StudyInstanceUID", "") or "").strip()
    if not uid:
        raise HeaderError("source image has no StudyInstanceUID (type 1): cannot join the study")
    if "SpecificCharacterSet" in source:
        _set(target, "SpecificCharacterSet", copy.deepcopy(source.SpecificCharacterSet))
    _set(target, "StudyInstanceUID", uid)
    for keyword in TYPE2:
        value = source.get(keyword)
        ok = value not in (None, "") and _valid_value(keyword, value)
        _set(target, keyword, copy.deepcopy(value) if ok else "")
    for keyword in OPTIONAL:
        _copy_optional(source, target, keyword)
    _drop_orphans(target)
    _complete_clinical_trial(target)
    _copy_deidentification(source, target)
    return target


def source_header(ds: Dataset) -> Dataset:
    """A copy of a source image header (no pixel data) with its patient and study modules completed.

    For libraries that read ``AccessionNumber``, ``StudyID``, ``PatientSex``... of a source image
    unconditionally (highdicom's SOP classes): the copy holds every :data:`TYPE2` attribute
    (empty where the source lacks it or holds an invalid value). ``ds`` is not modified.
    """
    out = Dataset()
    for element in ds:
        if element.keyword not in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            out[element.tag] = element
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    return copy_patient_study(ds, out)


__all__ = ["TYPE2", "HeaderError", "copy_patient_study", "source_header"]
