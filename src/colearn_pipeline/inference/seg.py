"""DICOM SEG out (highdicom) and a corrected label map back in (NIfTI or DICOM SEG).

:func:`build_seg` turns a ``(z, y, x)`` label map on the CT grid into a BINARY Segmentation with
one segment per class, coded in SNOMED CT, referencing the CT series it was made from (Referenced
Series Sequence, a Source Image Sequence per frame, the CT's FrameOfReferenceUID) and carrying the
CT's patient and study modules (:func:`.dicom_headers.copy_patient_study`: any real header, type 2
attributes missing, de-identified, other character sets), so that a PACS files it beside the study
and OHIF or 3D Slicer overlays it. The same function exports the derived ground truth
(``algorithm_type`` SEMIAUTOMATIC).
:func:`read_label_map` is the way back, for a label map corrected in a viewer.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from colearn_pipeline.dicom.series import SeriesVolume
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.dicom_headers import copy_patient_study, source_header


@dataclass(frozen=True)
class SegmentClass:
    """How one label value is described in a SEG."""

    label: int
    name: str
    category: Any  # pydicom.sr.coding.Code
    property_type: Any
    display_rgb: tuple[int, int, int]


#: One SEG segment per non-background label (docs/architecture.md label values), SNOMED CT coded:
#: Lung 39607008 and Mediastinum 72410000 (category Anatomical Structure 91723000), Neoplasm
#: 108369006 (category Morphologically Abnormal Structure 49755003), as in DICOM CID 7150/7151/7153.
SEGMENT_CLASSES: tuple[SegmentClass, ...] = (
    SegmentClass(LABELS["lung"], "Lung", codes.SCT.AnatomicalStructure, codes.SCT.Lung, (90, 160, 230)),
    SegmentClass(LABELS["mediastinum"], "Mediastinum", codes.SCT.AnatomicalStructure, codes.SCT.Mediastinum,
                 (240, 200, 60)),
    SegmentClass(LABELS["tumour"], "Tumour", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm,
                 (230, 30, 30)),
)
#: SNOMED CT code value -> label value, for reading a SEG back.
LABEL_OF_CODE = {c.property_type.value: c.label for c in SEGMENT_CLASSES}


class LabelMapError(ValueError):
    """A corrected label map that cannot be used; names the study, the file and the problem."""

    def __init__(self, study: str, file: str, problem: str) -> None:
        self.study, self.file, self.problem = study, file, problem
        super().__init__(f"{study}: {file}: {problem}")


def _algorithm(algorithm: Mapping[str, Any] | None):
    import highdicom as hd

    if not algorithm:
        return None
    params = {str(k): str(v) for k, v in (algorithm.get("parameters") or {}).items() if v is not None}
    return hd.AlgorithmIdentificationSequence(
        name=str(algorithm["name"]), family=codes.DCM.ArtificialIntelligence, version=str(algorithm["version"]),
        source=algorithm.get("source"), parameters=params or None,
    )


def _is_frames_of_one_object(ct_datasets: Sequence[Dataset]) -> bool:
    """Whether the slice headers are the frames of one enhanced / legacy-converted object."""
    return len({str(d.SOPInstanceUID) for d in ct_datasets}) == 1 and len(ct_datasets) > 1


def seg_sources(ct_datasets: Sequence[Dataset], source_files: Sequence[str | os.PathLike] | None = None,
                ) -> list[Dataset]:
    """The source images of a SEG or SR made on ``ct_datasets``, the first one's header completed (``source_header``).

    Classic slices are their own sources; the frames of one enhanced (or legacy-converted)
    multi-frame CT object have that object as their one source, read (header only) from
    ``source_files[0]``. highdicom takes the patient and study modules from the first source
    only, so only that one is completed (the others are passed as they are).
    """
    if not _is_frames_of_one_object(ct_datasets):
        return [source_header(ct_datasets[0]), *ct_datasets[1:]]
    if not source_files:
        raise ValueError("the CT is one multi-frame object: give source_files (SeriesVolume.files)")
    return [source_header(pydicom.dcmread(source_files[0], stop_before_pixels=True))]


def slice_of_frame(ct_datasets: Sequence[Dataset], header: Dataset) -> np.ndarray:
    """For each frame of the multi-frame object ``header``, the slice of ``ct_datasets`` it holds.

    ``ct_datasets`` are the object's frames in slice order (``dicom.series.read_series``
    flattens and sorts them); each is matched to a frame by ImagePositionPatient, so that
    ``volume[slice_of_frame(...)]`` is a ``(z, y, x)`` volume in the object's frame order.
    """
    groups = header.get("PerFrameFunctionalGroupsSequence") or []
    if int(header.get("NumberOfFrames", 0) or 0) != len(ct_datasets) or len(groups) != len(ct_datasets):
        raise ValueError(f"{len(ct_datasets)} slice headers but the multi-frame object has "
                         f"{header.get('NumberOfFrames')} frames: give the whole object")
    frame_xyz = np.asarray([[float(v) for v in g.PlanePositionSequence[0].ImagePositionPatient] for g in groups])
    slice_xyz = np.asarray([[float(v) for v in d.ImagePositionPatient] for d in ct_datasets])
    distance = np.linalg.norm(frame_xyz[:, None, :] - slice_xyz[None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    if len(set(nearest.tolist())) != len(ct_datasets):
        raise ValueError("the slices do not match the multi-frame object's frames one to one")
    return nearest


def build_seg(
    labels: np.ndarray,
    ct_datasets: Sequence[Dataset],
    *,
    algorithm: Mapping[str, Any] | None,
    source_files: Sequence[str | os.PathLike] | None = None,
    algorithm_type: str = "AUTOMATIC",
    series_number: int = 9901,
    series_description: str = "colearn-pipeline segmentation",
    content_label: str = "COLEARN",
    software_version: str = "",
):
    """A BINARY DICOM Segmentation of a label map on the CT grid.

    Parameters
    ----------
    labels : numpy.ndarray
        uint8 ``(z, y, x)``, values of ``groundtruth.LABELS``; slice ``k`` lies on ``ct_datasets[k]``.
    ct_datasets : sequence of pydicom.Dataset
        The CT headers in the label map's slice order (``SeriesVolume.datasets``); pixel data
        is not needed.
    algorithm : mapping or None
        ``name``, ``version``, optional ``source`` and ``parameters`` (str -> str, e.g. the MLflow
        run); required for AUTOMATIC and SEMIAUTOMATIC segments.
    source_files : sequence of path-like, optional
        The file of each slice (``SeriesVolume.files``); needed only when the CT is one enhanced
        multi-frame object (the SEG then references that object's frames by number).
    algorithm_type : {"AUTOMATIC", "SEMIAUTOMATIC", "MANUAL"}
    series_number, series_description, content_label, software_version
        Of the new SEG series (no identifier may be put here).

    Returns
    -------
    highdicom.seg.Segmentation
        Empty frames are omitted; a class absent from ``labels`` is still described.
    """
    import highdicom as hd

    labels = np.asarray(labels)
    if labels.ndim != 3 or len(ct_datasets) != labels.shape[0]:
        raise ValueError(f"label map {labels.shape} does not match {len(ct_datasets)} CT slices")
    rows, cols = int(ct_datasets[0].Rows), int(ct_datasets[0].Columns)
    if labels.shape[1:] != (rows, cols):
        raise ValueError(f"label slices {labels.shape[1:]} != CT {rows}x{cols}")
    known = {c.label for c in SEGMENT_CLASSES}
    unknown = set(np.unique(labels).tolist()) - known - {0}
    if unknown:
        raise ValueError(f"label values {sorted(unknown)} have no segment description")
    pixels = labels.astype(np.uint8)
    sources = seg_sources(ct_datasets, source_files)
    if len(sources) == 1 and len(ct_datasets) > 1:
        pixels = pixels[slice_of_frame(ct_datasets, sources[0])]
    algo = _algorithm(algorithm)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=c.label, segment_label=c.name, segmented_property_category=c.category,
            segmented_property_type=c.property_type, algorithm_type=algorithm_type,
            algorithm_identification=algo if algorithm_type != "MANUAL" else None,
            tracking_uid=hd.UID(), tracking_id=f"{content_label} {c.name}",
            display_color=hd.color.CIELabColor.from_rgb(*c.display_rgb),
        )
        for c in SEGMENT_CLASSES
    ]
    with warnings.catch_warnings():  # highdicom sets SpacingBetweenSlices from float arithmetic (17 chars)
        warnings.filterwarnings("ignore", message=r"The value length \(\d+\) exceeds .* VR DS")
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=int(series_number), sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="colearn-pipeline",
            manufacturer_model_name=str((algorithm or {}).get("name", "colearn-pipeline"))[:64],
            software_versions=software_version or str((algorithm or {}).get("version", "")) or "-",
            device_serial_number="-", content_label=content_label, series_description=series_description,
            content_description=series_description[:64], omit_empty_frames=True,
        )
    copy_patient_study(ct_datasets[0], seg)
    _shorten_decimal_strings(seg)
    return seg


def _shorten_decimal_strings(seg: Dataset) -> None:
    """Re-encode the shared pixel measures as valid DS (at most 16 characters)."""
    from pydicom.valuerep import DS

    for measures in seg.SharedFunctionalGroupsSequence[0].get("PixelMeasuresSequence", []):
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            if keyword in measures:
                setattr(measures, keyword, DS(float(getattr(measures, keyword)), auto_format=True))


def write_seg(seg: Dataset, out: str | os.PathLike) -> Path:
    """Save a SEG (or any DICOM dataset) atomically to ``out``."""
    from colearn_pipeline.datasets._atomic import atomic_write

    out = Path(out)
    atomic_write(out, lambda tmp: seg.save_as(tmp, enforce_file_format=True))
    return out


def _nifti_labels(path: Path, ct: SeriesVolume, study: str) -> np.ndarray:
    import SimpleITK as sitk

    from colearn_pipeline.dicom.grid import resample_to_reference

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise LabelMapError(study, path.name, f"unreadable NIfTI ({str(exc).splitlines()[0][:120]})") from None
    reference = ct.to_sitk(np.zeros(ct.shape_zyx, np.uint8))
    same = (
        image.GetSize() == reference.GetSize()
        and np.allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
        and np.allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-2)
        and np.allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if not same:  # a viewer may save on its own grid: nearest neighbour in patient space
        image = resample_to_reference(image, reference, "nearest", 0.0)
    return np.rint(sitk.GetArrayFromImage(image)).astype(np.int64)


def _seg_label_of_segment(ds: Dataset, study: str, name: str) -> dict[int, int]:
    out = {}
    for item in ds.SegmentSequence:
        code = item.SegmentedPropertyTypeCodeSequence[0]
        label = LABEL_OF_CODE.get(str(code.CodeValue))
        if label is None:
            raise LabelMapError(
                study, name, f"segment {item.SegmentNumber} '{item.get('SegmentLabel', '')}' has property type "
                f"{code.CodingSchemeDesignator} {code.CodeValue} ({code.get('CodeMeaning', '')}); expected one of "
                f"SCT {sorted(LABEL_OF_CODE)}",
            )
        out[int(item.SegmentNumber)] = label
    return out


def _frame_slice(frame: Dataset, sop_to_z: dict[str, int], positions: np.ndarray, normal: np.ndarray,
                 tol_mm: float) -> int | None:
    for deriv in frame.get("DerivationImageSequence", []):
        for src in deriv.get("SourceImageSequence", []):
            z = sop_to_z.get(str(src.ReferencedSOPInstanceUID))
            if z is not None:
                return z
    plane = frame.get("PlanePositionSequence")
    if plane:
        d = np.abs(positions @ normal - np.asarray(plane[0].ImagePositionPatient, float) @ normal)
        if d.min() <= tol_mm:
            return int(np.argmin(d))
    return None


def _seg_labels(path: Path, ct: SeriesVolume, study: str) -> np.ndarray:
    try:
        ds = pydicom.dcmread(path)
        frames = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for corrupt input
        raise LabelMapError(study, path.name, f"unreadable DICOM SEG ({type(exc).__name__})") from None
    if ds.get("Modality") != "SEG":
        raise LabelMapError(study, path.name, f"not a DICOM SEG (Modality {ds.get('Modality')!r})")
    if ds.get("FrameOfReferenceUID") != ct.datasets[0].get("FrameOfReferenceUID"):
        raise LabelMapError(study, path.name, "FrameOfReferenceUID differs from the CT's: made on another scan")
    if (int(ds.Rows), int(ds.Columns)) != ct.shape_zyx[1:]:
        raise LabelMapError(study, path.name, f"frames {ds.Rows}x{ds.Columns} != CT {ct.shape_zyx[1:]}")
    frames = frames.reshape(-1, int(ds.Rows), int(ds.Columns))
    threshold = 0.5 * float(ds.get("MaximumFractionalValue", 1)) if ds.get("SegmentationType") == "FRACTIONAL" else 0
    label_of = _seg_label_of_segment(ds, study, path.name)
    uids = [str(d.SOPInstanceUID) for d in ct.datasets]
    # frames of one enhanced CT object share its SOPInstanceUID: those are placed by position
    count = Counter(uids)
    sop_to_z = {u: z for z, u in enumerate(uids) if count[u] == 1}
    positions = np.asarray([[float(v) for v in d.ImagePositionPatient] for d in ct.datasets])
    normal = np.asarray(ct.direction, float).reshape(3, 3)[:, 2]
    out = np.zeros(ct.shape_zyx, dtype=np.int64)
    for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
        z = _frame_slice(frame, sop_to_z, positions, normal, 0.5 * float(ct.spacing_xyz_mm[2]))
        if z is None:
            raise LabelMapError(study, path.name, f"frame {i + 1} matches no slice of the CT series")
        segment = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        mask = frames[i] > threshold
        out[z][mask] = np.maximum(out[z][mask], label_of[segment])  # tumour > mediastinum > lung where they overlap
    return out


def read_label_map(path: str | os.PathLike, ct: SeriesVolume) -> np.ndarray:
    """Read a label map corrected in a viewer (NIfTI or DICOM SEG) onto the CT grid.

    Parameters
    ----------
    path : path-like
        ``.nii`` / ``.nii.gz`` (values 0..3; resampled by nearest neighbour when saved on another
        grid) or a DICOM SEG (``.dcm`` or any other name) whose segments are coded as in
        :data:`SEGMENT_CLASSES` and whose frames reference the CT's slices (by SOP Instance UID,
        else by position); overlapping segments resolve to tumour > mediastinum > lung.
    ct : SeriesVolume
        The study's CT (``read_series``), naming the study by :attr:`SeriesVolume.study`.

    Returns
    -------
    numpy.ndarray
        uint8 ``(z, y, x)`` on the CT grid.

    Raises
    ------
    LabelMapError
        Unreadable file, other frame of reference, unknown segment codes or label values.
    """
    path = Path(path)
    study = ct.study
    if not path.is_file():
        raise LabelMapError(study, path.name, "file does not exist")
    if path.name.endswith((".nii", ".nii.gz")):
        labels = _nifti_labels(path, ct, study)
    else:
        labels = _seg_labels(path, ct, study)
    bad = set(np.unique(labels).tolist()) - set(LABELS.values())
    if bad:
        raise LabelMapError(study, path.name, f"label values {sorted(bad)} are not in {sorted(LABELS.values())}")
    return labels.astype(np.uint8)
