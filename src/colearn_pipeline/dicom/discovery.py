"""Find studies and series in any folder tree by their DICOM tags (not by names or folders).

:func:`discover` reads every file's header (``stop_before_pixels``), records the files that are
not DICOM or not part of an image series, and groups the rest by StudyInstanceUID and
SeriesInstanceUID. :func:`select_ct_pet` picks one CT and one PET series of a study and says why.
Patient identifiers are read only to redact them from messages (:meth:`StudyFiles.redact`); they
never leave this module in any other way.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from colearn_pipeline.dicom.errors import DicomStudyError
from colearn_pipeline.dicom.pseudonym import DEFAULT_PSEUDONYM_KEY, pseudonymise

#: Modalities read as image series; every other modality is recorded and skipped.
IMAGE_MODALITIES = ("CT", "PT")
#: What replaces a patient identifier in paths and messages.
_REDACTED = "<redacted>"
#: ImageType values of CT series that are not the diagnostic volume.
NON_VOLUME_IMAGE_TYPES = ("LOCALIZER", "SCOUT", "PROJECTION IMAGE", "DERIVED\\SECONDARY")


@dataclass
class SeriesInfo:
    """One image series found by the scan.

    Attributes
    ----------
    series_uid, modality, frame_of_reference_uid : str
    series_number : int or None
    description : str
    image_type : tuple of str
    corrected : tuple of str
        CorrectedImage (PET), e.g. ``("ATTN", "DECY")``.
    units : str
        Units (PET), e.g. ``"BQML"``.
    files : list of str
    """

    series_uid: str
    modality: str
    frame_of_reference_uid: str = ""
    series_number: int | None = None
    description: str = ""
    image_type: tuple[str, ...] = ()
    corrected: tuple[str, ...] = ()
    units: str = ""
    files: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A one-line description without identifiers (series number, description, slice count)."""
        number = "?" if self.series_number is None else str(self.series_number)
        desc = f" '{self.description}'" if self.description else ""
        return f"{self.modality} series #{number}{desc} ({len(self.files)} files)"


@dataclass
class StudyFiles:
    """The image series and problem files of one study.

    Attributes
    ----------
    study_uid : str
        StudyInstanceUID (kept in memory only to match reports; never written by the pipeline).
    pseudonym : str
    series : dict of str to SeriesInfo
    corrupt : list of (str, str)
        Files of this study whose header could be read only in part, with the reason.
    """

    study_uid: str
    pseudonym: str
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    _identifiers: set[str] = field(default_factory=set, repr=False)

    def redact(self, text: str) -> str:
        """Replace the patient's name, ID and birth date (as found in the headers) in ``text``."""
        out = str(text)
        for ident in sorted(self._identifiers, key=len, reverse=True):
            if ident:
                out = out.replace(ident, _REDACTED)
        return out


@dataclass
class Discovery:
    """Result of :func:`discover`.

    Attributes
    ----------
    root : str
    studies : dict of str to StudyFiles
        Keyed by pseudonym.
    skipped : list of (str, str)
        Files that are not DICOM, not an image, or unreadable without a study, with the reason;
        paths relative to ``root``.
    """

    root: str
    studies: dict[str, StudyFiles] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _iter_files(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _read_header(path: Path):
    """Return (dataset or None, problem or None, is_partial)."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True), None, False
    except InvalidDicomError:
        pass
    except Exception as exc:  # a DICOM file whose header is damaged
        try:
            partial = pydicom.dcmread(
                path, stop_before_pixels=True, force=True,
                specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "Modality"],
            )
        except Exception:
            partial = None
        return partial, f"corrupt DICOM header ({type(exc).__name__}: {exc})", True
    # no DICM preamble: accept only what parses into an identifiable image header
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if _text(ds.get("StudyInstanceUID")) and _text(ds.get("SOPClassUID")):
            return ds, None, False
    except Exception:
        pass
    return None, "not a DICOM file", False


def discover(root: str | os.PathLike, key: str = DEFAULT_PSEUDONYM_KEY) -> Discovery:
    """Scan a folder tree and group its DICOM image files by study and series.

    Parameters
    ----------
    root : path-like
        Any folder tree (nested, flat, mixed with other files).
    key : str
        Key of the pseudonym hash (:func:`~colearn_pipeline.dicom.pseudonymise`).

    Returns
    -------
    Discovery
        Studies keyed by pseudonym and the files skipped with reasons.

    Raises
    ------
    FileNotFoundError
        When ``root`` is not a folder.
    """
    root_path = Path(root)
    if not root_path.is_dir():
        raise FileNotFoundError(f"DICOM folder '{root_path}' does not exist")
    result = Discovery(root=str(root_path))
    for path in _iter_files(root_path):
        rel = os.path.relpath(path, root_path)
        ds, problem, partial = _read_header(path)
        study_uid = _text(ds.get("StudyInstanceUID")) if ds is not None else ""
        if partial:
            if not study_uid:
                result.skipped.append((rel, problem))
                continue
            study = _study(result, study_uid, key)
            study.corrupt.append((rel, problem))
            continue
        if ds is None:
            result.skipped.append((rel, problem or "not a DICOM file"))
            continue
        modality = _text(ds.get("Modality")).upper()
        image_class = _is_image_storage(ds)
        if not study_uid:
            why = (
                "truncated or corrupt DICOM: an image file whose header ends before StudyInstanceUID"
                if image_class else "DICOM without StudyInstanceUID (e.g. DICOMDIR)"
            )
            result.skipped.append((rel, why))
            continue
        if modality in IMAGE_MODALITIES and image_class and ("Rows" not in ds or "ImagePositionPatient" not in ds):
            missing = [t for t in ("Rows", "ImagePositionPatient") if t not in ds]
            _study(result, study_uid, key).corrupt.append(
                (rel, f"truncated or corrupt DICOM header: {', '.join(missing)} missing")
            )
            continue
        if modality not in IMAGE_MODALITIES or "Rows" not in ds or "ImagePositionPatient" not in ds:
            result.skipped.append((rel, f"not an image slice of a CT or PET series (Modality '{modality or '?'}')"))
            continue
        study = _study(result, study_uid, key)
        for tag in ("PatientName", "PatientID", "PatientBirthDate"):
            value = _text(ds.get(tag))
            if value:
                study._identifiers.add(value)
                if tag == "PatientName":
                    study._identifiers.update(p for p in value.split("^") if len(p) > 2)
        series_uid = _text(ds.get("SeriesInstanceUID"))
        info = study.series.get(series_uid)
        if info is None:
            number = ds.get("SeriesNumber")
            info = SeriesInfo(
                series_uid=series_uid,
                modality=modality,
                frame_of_reference_uid=_text(ds.get("FrameOfReferenceUID")),
                series_number=int(number) if number not in (None, "") else None,
                description=_text(ds.get("SeriesDescription")),
                image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or ())),
                corrected=tuple(str(v).upper() for v in (ds.get("CorrectedImage") or ())),
                units=_text(ds.get("Units")).upper(),
            )
            study.series[series_uid] = info
        info.files.append(str(path))
    return result


def _is_image_storage(ds) -> bool:
    """Whether the file meta / SOPClassUID names an image storage class (CT, PET, ...)."""
    uid = ds.file_meta.get("MediaStorageSOPClassUID") if getattr(ds, "file_meta", None) else None
    uid = uid or ds.get("SOPClassUID")
    if not uid:
        return False
    try:
        return "Image Storage" in pydicom.uid.UID(str(uid)).name
    except Exception:
        return False


def _study(result: Discovery, study_uid: str, key: str) -> StudyFiles:
    pseudonym = pseudonymise(study_uid, key)
    study = result.studies.get(pseudonym)
    if study is None:
        study = StudyFiles(study_uid=study_uid, pseudonym=pseudonym)
        result.studies[pseudonym] = study
    return study


def _ct_score(info: SeriesInfo) -> tuple:
    joined = "\\".join(info.image_type)
    is_volume = not any(t in joined for t in NON_VOLUME_IMAGE_TYPES)
    return (is_volume, len(info.files))


def _pet_score(info: SeriesInfo) -> tuple:
    return ("ATTN" in info.corrected, len(info.files))


def select_ct_pet(study: StudyFiles, root: str | None = None) -> tuple[SeriesInfo, SeriesInfo, str]:
    """Pick the CT and the PET series of a study.

    Rules: CT series that are volumes (not localizers/scouts) before others, then the most
    slices; PET series that are attenuation corrected (CorrectedImage has ATTN) before others,
    then the most slices; a CT/PET pair sharing a FrameOfReferenceUID before any other pair.

    Parameters
    ----------
    study : StudyFiles
    root : str, optional
        Files are named relative to it in messages.

    Returns
    -------
    (SeriesInfo, SeriesInfo, str)
        CT, PET, and a sentence recording the choice (for the manifest).

    Raises
    ------
    DicomStudyError
        No CT, no PET, or no CT/PET pair in one frame of reference.
    """

    def rel(p: str) -> str:
        return study.redact(os.path.relpath(p, root) if root else p)

    cts = sorted((s for s in study.series.values() if s.modality == "CT"), key=_ct_score, reverse=True)
    pets = sorted((s for s in study.series.values() if s.modality == "PT"), key=_pet_score, reverse=True)
    if not cts and not pets:
        raise DicomStudyError(study.pseudonym, "-", "study has no CT and no PET image series")
    if not pets:
        raise DicomStudyError(
            study.pseudonym, rel(sorted(cts[0].files)[0]),
            f"study has a CT series ({len(cts[0].files)} files) but no PET series",
        )
    if not cts:
        raise DicomStudyError(
            study.pseudonym, rel(sorted(pets[0].files)[0]),
            f"study has a PET series ({len(pets[0].files)} files) but no CT series",
        )
    pairs = [(c, p) for c in cts for p in pets if c.frame_of_reference_uid and c.frame_of_reference_uid == p.frame_of_reference_uid]
    if not pairs:
        raise DicomStudyError(
            study.pseudonym, rel(sorted(pets[0].files)[0]),
            "PET and CT have different FrameOfReferenceUID (not registered by the scanner); "
            f"CT file {rel(sorted(cts[0].files)[0])}",
        )
    ct, pet = pairs[0]
    note = f"CT: {ct.summary()} of {len(cts)} CT series; PET: {pet.summary()} of {len(pets)} PET series"
    return ct, pet, study.redact(note)
