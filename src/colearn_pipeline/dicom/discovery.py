"""Find studies and series in any folder tree by their DICOM tags (not by names or folders).

:func:`discover` walks a folder tree (following symbolic links, each real folder and file once),
reads every file's header (``stop_before_pixels``) and groups the image files by
StudyInstanceUID and SeriesInstanceUID. Files that are not slices of a CT or PET series
(screenshots, secondary captures, RTSTRUCT, SEG, SR, KO, PR, other modalities, non-DICOM files)
are listed with the reason and skipped; duplicate exports (same SOPInstanceUID) are kept once
when they mean the same (pixels, rescale, geometry and SUV headers: :mod:`.consistency`), and
refuse their study naming both files and the attribute otherwise. Series selection lives in :mod:`.selection`.

Identifiers by construction: what :func:`discover` returns names studies by pseudonym, series
by SeriesNumber and a hash of the SeriesInstanceUID (:func:`~.pseudonym.series_label`) and raw
files by a hash of their relative path (:func:`~.pseudonym.file_label`); no free text from a
header (descriptions, institution, operators, comments, private tags) is kept. The map from
file labels back to relative paths is :attr:`Discovery.file_map`, for git-ignored conf/local only.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from colearn_pipeline.dicom.consistency import difference
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.multiframe import frame_headers, is_multiframe
from colearn_pipeline.dicom.pseudonym import (
    DEFAULT_PSEUDONYM_KEY,
    file_label,
    pseudonymise,
    series_label,
)
from colearn_pipeline.dicom.series import read_image

#: Modalities read as image series; every other modality is recorded and skipped.
IMAGE_MODALITIES = ("CT", "PT")
#: What replaces a patient identifier in messages (kept for callers that still redact).
_REDACTED = "<redacted>"
#: SOP classes whose UID starts with this are secondary captures (screenshots, MIP snapshots).
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"


@dataclass
class SeriesInfo:
    """One image series found by the scan (no free text from the headers).

    Attributes
    ----------
    series_uid, modality, frame_of_reference_uid : str
    series_number : int or None
    label : str
        ``series-<number>-<hash>``: the series' name in messages and outputs.
    image_type : tuple of str
    corrected : tuple of str
        CorrectedImage (PET), e.g. ``("ATTN", "DECY")``; empty when the tag is absent.
    attenuation_correction_method : str
        AttenuationCorrectionMethod (PET), upper case; empty when absent.
    decay_correction : str
        DecayCorrection (PET): ``NONE``, ``START``, ``ADMIN`` or empty.
    units : str
    enhanced : bool
        An enhanced or legacy-converted multi-frame object (``files`` has one file).
    sop_class_uid : str
    normal : tuple of float
        Slice normal (cross product of the ImageOrientationPatient cosines).
    z_range_mm : tuple of float
        Lowest and highest patient z of the slice positions.
    slice_thickness_mm : float or None
    convolution_kernel : str
        ConvolutionKernel (CT), kept only to match the configured preference (never written).
    files : list of str
    """

    series_uid: str
    modality: str
    frame_of_reference_uid: str = ""
    series_number: int | None = None
    label: str = ""
    image_type: tuple[str, ...] = ()
    corrected: tuple[str, ...] = ()
    attenuation_correction_method: str = ""
    decay_correction: str = ""
    units: str = ""
    enhanced: bool = False
    sop_class_uid: str = ""
    normal: tuple[float, float, float] = (0.0, 0.0, 1.0)
    z_range_mm: tuple[float, float] = (0.0, 0.0)
    slice_thickness_mm: float | None = None
    convolution_kernel: str = ""
    files: list[str] = field(default_factory=list)
    n_slices: int = 0

    def summary(self) -> str:
        """A one-line description without identifiers (label, kind, slice count)."""
        kind = "enhanced multi-frame" if self.enhanced else "classic"
        return f"{self.modality} {self.label} ({kind}, {self.n_slices} slices)"


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
        Files of this study (file labels) whose header could be read only in part, with the reason.
    skipped : list of (str, str)
        Files of this study that are not slices of a CT/PET series (file label, reason).
    file_labels : dict of str to str
        Path -> file label for every file of the study (pass to :func:`read_series`).
    """

    study_uid: str
    pseudonym: str
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    file_labels: dict[str, str] = field(default_factory=dict)
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
        Every file that is not a slice of a CT/PET series, or a duplicate, with the reason;
        named by file label (hash of the relative path).
    file_map : dict of str to str
        File label -> path relative to ``root``: the map back, for conf/local only.
    """

    root: str
    studies: dict[str, StudyFiles] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    file_map: dict[str, str] = field(default_factory=dict)


def iter_files(root: Path) -> Iterable[tuple[Path, str | None]]:
    """Yield ``(path, problem)`` for every file under ``root``, following symbolic links.

    Each real folder is entered once (a link back up the tree is a loop and is not followed
    again) and each real file is yielded once; a broken link or a link that leads back to itself
    (a loop) is yielded with its problem.
    """
    seen_dirs: set[str] = set()
    seen_files: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            yield Path(dirpath), "symbolic link loop: folder already visited, not followed again"
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            real_file = os.path.realpath(path)
            problem = _link_problem(path)
            if problem:
                yield path, problem
            elif real_file not in seen_files:
                seen_files.add(real_file)
                yield path, None


def _link_problem(path: Path) -> str | None:
    """Why a file cannot be opened through its links (a loop, a missing target), or None."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop: the link leads back to itself, never to a file"
        return "broken symbolic link" if os.path.islink(path) else f"cannot be opened ({exc.strerror})"
    return None


def _text(value) -> str:
    return "" if value is None else str(value).strip()


def _values(value) -> tuple[str, ...]:
    """A multi-valued tag as upper-case strings (a single value is one string, not its characters)."""
    if value is None or value == "":
        return ()
    items = [value] if isinstance(value, (str, bytes)) else list(value)
    return tuple(str(v).strip().upper() for v in items)


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
        return partial, f"corrupt DICOM header ({type(exc).__name__})", True
    # no DICM preamble: accept only what parses into an identifiable image header
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        if _text(ds.get("StudyInstanceUID")) and _text(ds.get("SOPClassUID")):
            return ds, None, False
    except Exception:
        pass
    return None, "not a DICOM file", False


def _sop_class(ds) -> str:
    uid = ds.file_meta.get("MediaStorageSOPClassUID") if getattr(ds, "file_meta", None) else None
    return _text(uid or ds.get("SOPClassUID"))


def _sop_class_name(uid: str) -> str:
    try:
        name = pydicom.uid.UID(uid).name
    except Exception:
        name = ""
    return name if name and name != uid else f"SOP class {uid or '?'}"


def classify(ds) -> tuple[str, str]:
    """What a header is: ``("slice" | "multiframe" | "skip" | "corrupt", reason)``.

    Only standard names (Modality, SOP class names, tag keywords) go into a reason.
    """
    modality = _text(ds.get("Modality")).upper()
    sop = _sop_class(ds)
    name = _sop_class_name(sop)
    if sop.startswith(SECONDARY_CAPTURE_PREFIX):
        return "skip", f"secondary capture / screenshot ({name}, Modality '{modality or '?'}')"
    if "Image Storage" not in name:
        return "skip", f"not an image ({name}, Modality '{modality or '?'}')"
    if modality not in IMAGE_MODALITIES:
        return "skip", f"not a CT or PET image (Modality '{modality or '?'}')"
    # ImageType DERIVED\SECONDARY alone is no reason to skip: real archives store post-processed
    # (e.g. cropped or re-reconstructed) PET that way. Screenshots, MIPs and reformats are refused
    # by the series selection's excluded_image_types, with the reason recorded.
    if is_multiframe(ds):
        return "multiframe", name
    missing = [t for t in ("Rows", "ImagePositionPatient", "ImageOrientationPatient") if t not in ds]
    if missing:
        return "corrupt", f"truncated or corrupt DICOM header: {', '.join(missing)} missing"
    return "slice", name


def _positions(ds, kind: str) -> tuple[np.ndarray, np.ndarray, float | None]:
    """(slice positions (n, 3), orientation (6,), slice thickness) of a classic file or a multi-frame object."""
    frames = frame_headers(ds) if kind == "multiframe" else [ds]
    pos = np.array([[float(v) for v in f.get("ImagePositionPatient") or (0, 0, 0)] for f in frames], dtype=float)
    iop = np.array([float(v) for v in (frames[0].get("ImageOrientationPatient") or (1, 0, 0, 0, 1, 0))], dtype=float)
    thickness = frames[0].get("SliceThickness")
    return pos, iop, float(thickness) if thickness not in (None, "") else None


def discover(root: str | os.PathLike, key: str = DEFAULT_PSEUDONYM_KEY) -> Discovery:
    """Scan a folder tree and group its DICOM image files by study and series.

    Parameters
    ----------
    root : path-like
        Any folder tree (nested, flat, mixed with other files, with symbolic links).
    key : str
        Key of the pseudonym and label hashes (:func:`~colearn_pipeline.dicom.pseudonymise`).

    Returns
    -------
    Discovery
        Studies keyed by pseudonym, the files skipped with reasons, and the label map.

    Raises
    ------
    FileNotFoundError
        When ``root`` does not exist (NotADirectoryError when it is a file).
    """
    root_path = Path(root)
    if root_path.exists() and not root_path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "the DICOM folder is a file, not a folder", str(root_path))
    if not root_path.is_dir():
        raise FileNotFoundError(errno.ENOENT, "the DICOM folder does not exist", str(root_path))
    result = Discovery(root=str(root_path))
    by_sop: dict[tuple[str, str], str] = {}
    for path, problem in iter_files(root_path):
        label = file_label(os.path.relpath(path, root_path), key)
        result.file_map[label] = os.path.relpath(path, root_path)
        if problem:
            result.skipped.append((label, problem))
            continue
        _add_file(result, path, label, key, by_sop)
    for study in result.studies.values():
        for info in study.series.values():
            info.label = series_label(info.series_number, info.series_uid, key)
    return result


def _add_file(result: Discovery, path: Path, label: str, key: str, by_sop: dict) -> None:
    ds, problem, partial = _read_header(path)
    study_uid = _text(ds.get("StudyInstanceUID")) if ds is not None else ""
    if ds is None or (partial and not study_uid):
        result.skipped.append((label, problem or "not a DICOM file"))
        return
    if not study_uid:
        image = "Image Storage" in _sop_class_name(_sop_class(ds))
        why = ("truncated or corrupt DICOM: an image file whose header ends before StudyInstanceUID"
               if image else "DICOM without StudyInstanceUID (e.g. DICOMDIR)")
        result.skipped.append((label, why))
        return
    study = _study(result, study_uid, key)
    study.file_labels[str(path)] = label
    if partial:
        study.corrupt.append((label, problem))
        return
    kind, reason = classify(ds)
    if kind == "corrupt":
        study.corrupt.append((label, reason))
        return
    if kind == "skip":
        study.skipped.append((label, reason))
        result.skipped.append((label, reason))
        return
    sop_uid = _text(ds.get("SOPInstanceUID"))
    twin = by_sop.get((study_uid, sop_uid))
    if twin is not None:
        _add_twin(result, study, twin, str(path), label)
        return
    by_sop[(study_uid, sop_uid)] = str(path)
    _remember_identifiers(study, ds)
    _add_to_series(study, ds, kind, str(path))


def _add_twin(result: Discovery, study: StudyFiles, twin: str, path: str, label: str) -> None:
    """A second object with the SOPInstanceUID of ``twin``: skipped when it means the same, else the study is refused.

    Both files are compared in the order of their labels, so the message does not depend on which
    was found first (on the file names).
    """
    first, second = sorted([(study.file_labels[twin], twin), (label, path)])
    why = twin_difference(first[1], second[1], study.pseudonym, first[0], second[0])
    if why is None:
        reason = f"identical duplicate export of {study.file_labels[twin]} (same SOPInstanceUID, pixels and headers)"
        study.skipped.append((label, reason))
        result.skipped.append((label, reason))
    else:
        problem = (f"same SOPInstanceUID as {second[0]} but {why} differs: refused, as which of the two is "
                   "right cannot be told")
        study.corrupt.append((first[0], problem))


def twin_difference(a: str, b: str, study: str = "-", label_a: str = "", label_b: str = "") -> str | None:
    """What differs between two files claiming one object (:func:`~.consistency.difference` frame by frame), or None."""
    try:
        frames_a, frames_b = read_image(a, study, label_a or a), read_image(b, study, label_b or b)
    except DicomSeriesError as exc:
        return f"readability ({exc.file}: {exc.problem})"
    if len(frames_a) != len(frames_b):
        return f"NumberOfFrames {len(frames_a)} vs {len(frames_b)}"
    for (ds_a, values_a), (ds_b, values_b) in zip(frames_a, frames_b):
        why = difference(ds_a, values_a, ds_b, values_b)
        if why is not None:
            return why
    return None


def _remember_identifiers(study: StudyFiles, ds) -> None:
    for tag in ("PatientName", "PatientID", "PatientBirthDate"):
        value = _text(ds.get(tag))
        if value:
            study._identifiers.add(value)
            if tag == "PatientName":
                study._identifiers.update(p for p in value.split("^") if len(p) > 1)


def _add_to_series(study: StudyFiles, ds, kind: str, path: str) -> None:
    source = ds
    series_uid = _text(ds.get("SeriesInstanceUID"))
    key = series_uid if kind == "slice" else f"{series_uid}/{_text(ds.get('SOPInstanceUID'))}"
    info = study.series.get(key)
    if kind == "multiframe":  # legacy-converted objects keep CorrectedImage etc. in the functional groups
        ds = frame_headers(ds)[0]
    if info is None:
        number = ds.get("SeriesNumber")
        info = SeriesInfo(
            series_uid=key,
            modality=_text(ds.get("Modality")).upper(),
            frame_of_reference_uid=_text(ds.get("FrameOfReferenceUID")),
            series_number=int(number) if number not in (None, "") else None,
            image_type=_values(ds.get("ImageType")),
            corrected=_values(ds.get("CorrectedImage")),
            attenuation_correction_method=_text(ds.get("AttenuationCorrectionMethod")).upper(),
            decay_correction=_text(ds.get("DecayCorrection")).upper(),
            units=_text(ds.get("Units")).upper(),
            enhanced=kind == "multiframe",
            sop_class_uid=_sop_class(ds),
            convolution_kernel="\\".join(_values(ds.get("ConvolutionKernel"))),
            z_range_mm=(np.inf, -np.inf),
        )
        study.series[key] = info
    positions, iop, thickness = _positions(source, kind)
    info.normal = tuple(float(v) for v in np.cross(iop[:3], iop[3:]))  # type: ignore[assignment]
    info.slice_thickness_mm = thickness
    info.z_range_mm = (min(info.z_range_mm[0], float(positions[:, 2].min())),
                       max(info.z_range_mm[1], float(positions[:, 2].max())))
    info.n_slices += len(positions)
    info.files.append(path)


def _study(result: Discovery, study_uid: str, key: str) -> StudyFiles:
    pseudonym = pseudonymise(study_uid, key)
    study = result.studies.get(pseudonym)
    if study is None:
        study = StudyFiles(study_uid=study_uid, pseudonym=pseudonym)
        result.studies[pseudonym] = study
    return study


from colearn_pipeline.dicom.selection import (  # noqa: E402
    SelectionRules,
    SeriesChoice,
    choose_series,
    select_ct_pet,
)

__all__ = [
    "Discovery", "SelectionRules", "SeriesChoice", "SeriesInfo", "StudyFiles", "choose_series", "classify",
    "discover", "iter_files", "select_ct_pet",
]
