"""RT Structure Sets: planar contours read and rasterised on an image grid, and written from masks.

Reading (:func:`read_structure_set`) keeps, per ROI, its number, name and CLOSED_PLANAR contours
in patient coordinates (LPS, mm); :func:`rasterise_contours` puts them on a series' grid
(:class:`SliceGeometry`):

- a contour belongs to the slice nearest to its plane, if that lies within
  ``tolerance_fraction`` (half) of the slice spacing; a structure set drawn on planes between the
  CT's positions (or on finer planes) is handled by giving each slice the contour plane nearest
  to it, so two planes never mix on one slice;
- on a slice, the polygons of the ROI's plane are combined by the **even-odd rule** (a contour
  inside another is a hole, one inside that an island), as DICOM PS3.3 C.8.8.6 describes;
- a pixel is inside a polygon when its centre is (``skimage.draw.polygon``).

Writing (:func:`mask_contours`, :func:`build_rtstruct`): each slice of a mask becomes the
marching-squares contours of its pixels at level 0.5 (outer boundaries and holes), whose vertices
lie half-way between pixel centres, so a pixel centre never lies on a contour and the even-odd
rasterisation above gives back exactly the mask. Collinear vertices are dropped.

Library choice (docs/groundtruth.md, "Expert contours"): pydicom with scikit-image, both already
dependencies. rt-utils rasterises with OpenCV's ``fillPoly`` (a non-zero fill, holes only by a
special case), needs ``opencv-python`` and does not handle contours between slice positions;
3D Slicer (SlicerRT) and dcmqi build a closed surface or use their own planar-contour filters,
neither available as a small Python library.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: SOP class of RT Structure Set Storage.
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: Referenced SOP class of a study in the RT Referenced Study Sequence (Study Component Management, as
#: treatment planning systems write it).
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"
#: A contour lies on a slice when its plane is within this fraction of the slice spacing.
DEFAULT_TOLERANCE_FRACTION = 0.5
#: Largest spread of a contour's points along the slice normal (mm) for it to count as planar on the grid.
PLANARITY_TOLERANCE_MM = 0.01
#: Marching-squares level between outside (0) and inside (1).
_CONTOUR_LEVEL = 0.5
#: Decimals of the contour coordinates written (mm; DS holds at most 16 characters).
_DECIMALS = 3


class RtStructError(ValueError):
    """A structure set that cannot be used; names the file (label) and the problem."""

    def __init__(self, file: str, problem: str) -> None:
        self.file, self.problem = file, problem
        super().__init__(f"{file}: {problem}")


@dataclass(frozen=True)
class SliceGeometry:
    """The grid of an image series, from its headers in slice order.

    Attributes
    ----------
    positions_mm : numpy.ndarray
        ``(n, 3)`` ImagePositionPatient of every slice.
    row_cosine, column_cosine, normal : numpy.ndarray
        ``(3,)``: direction of increasing column index, of increasing row index, and their cross product.
    pixel_spacing_mm : tuple of float
        PixelSpacing: (between rows, between columns).
    rows, columns : int
    sop_instance_uids, sop_class_uids : tuple of str
    """

    positions_mm: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    normal: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    rows: int
    columns: int
    sop_instance_uids: tuple[str, ...] = ()
    sop_class_uids: tuple[str, ...] = ()

    @classmethod
    def from_datasets(cls, datasets: Sequence[Dataset]) -> SliceGeometry:
        """The geometry of single-frame image headers given in slice order (``SeriesVolume.datasets``)."""
        first = datasets[0]
        iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
        return cls(
            positions_mm=np.asarray([[float(v) for v in d.ImagePositionPatient] for d in datasets]),
            row_cosine=iop[:3], column_cosine=iop[3:], normal=np.cross(iop[:3], iop[3:]),
            pixel_spacing_mm=(float(first.PixelSpacing[0]), float(first.PixelSpacing[1])),
            rows=int(first.Rows), columns=int(first.Columns),
            sop_instance_uids=tuple(str(d.get("SOPInstanceUID", "")) for d in datasets),
            sop_class_uids=tuple(str(d.get("SOPClassUID", "")) for d in datasets),
        )

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return len(self.positions_mm), self.rows, self.columns

    @property
    def slice_offsets_mm(self) -> np.ndarray:
        """Position of every slice along the normal (mm)."""
        return self.positions_mm @ self.normal

    @property
    def slice_spacing_mm(self) -> float:
        offsets = self.slice_offsets_mm
        return float(np.median(np.abs(np.diff(offsets)))) if len(offsets) > 1 else 1.0

    def to_pixels(self, points_mm: np.ndarray, k: int) -> np.ndarray:
        """Patient points -> continuous ``(row, column)`` pixel coordinates on slice ``k``."""
        rel = np.asarray(points_mm, float) - self.positions_mm[k]
        return np.stack([rel @ self.column_cosine / self.pixel_spacing_mm[0],
                         rel @ self.row_cosine / self.pixel_spacing_mm[1]], axis=1)

    def to_patient(self, rows_cols: np.ndarray, k: int) -> np.ndarray:
        """Continuous ``(row, column)`` pixel coordinates on slice ``k`` -> patient points (mm)."""
        rc = np.asarray(rows_cols, float)
        return (self.positions_mm[k] + np.outer(rc[:, 1] * self.pixel_spacing_mm[1], self.row_cosine)
                + np.outer(rc[:, 0] * self.pixel_spacing_mm[0], self.column_cosine))


@dataclass(frozen=True)
class RoiContours:
    """One ROI of a structure set: its contours (``(m, 3)`` patient mm each, CLOSED_PLANAR only)."""

    number: int
    name: str
    contours: tuple[np.ndarray, ...] = ()
    interpreted_type: str = ""
    generation_algorithm: str = ""


@dataclass(frozen=True)
class StructureSet:
    """What a structure set holds: its frame of reference, the series it references and its ROIs.

    ``skipped_contours`` counts contours that are not CLOSED_PLANAR (points, open polylines).
    """

    frame_of_reference_uids: tuple[str, ...]
    referenced_series_uids: tuple[str, ...]
    rois: tuple[RoiContours, ...]
    skipped_contours: int = 0


def _referenced(ds: Dataset) -> tuple[tuple[str, ...], tuple[str, ...]]:
    frames, series = [], []
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.append(str(ref.get("FrameOfReferenceUID", "")))
        for study in ref.get("RTReferencedStudySequence", []):
            series += [str(s.get("SeriesInstanceUID", "")) for s in study.get("RTReferencedSeriesSequence", [])]
    for roi in ds.get("StructureSetROISequence", []):
        frames.append(str(roi.get("ReferencedFrameOfReferenceUID", "")))
    return tuple(dict.fromkeys(f for f in frames if f)), tuple(dict.fromkeys(s for s in series if s))


def read_structure_set(source: str | os.PathLike | Dataset, file: str = "RTSTRUCT") -> StructureSet:
    """Read the ROIs and CLOSED_PLANAR contours of an RT Structure Set.

    Parameters
    ----------
    source : path-like or pydicom.Dataset
    file : str
        The file's label in messages (never a patient-identifying name).

    Raises
    ------
    RtStructError
        Not an RT Structure Set, or a contour whose ContourData is not a list of points.
    """
    try:
        ds = source if isinstance(source, Dataset) else pydicom.dcmread(source)
    except Exception as exc:  # pydicom raises many types for a damaged file
        raise RtStructError(file, f"unreadable DICOM ({type(exc).__name__})") from None
    if str(ds.get("SOPClassUID", "")) != RT_STRUCTURE_SET_STORAGE:
        raise RtStructError(file, f"not an RT Structure Set (Modality {ds.get('Modality')!r})")
    names = {int(r.ROINumber): r for r in ds.get("StructureSetROISequence", [])}
    types = {int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", "") or "")
             for o in ds.get("RTROIObservationsSequence", [])}
    contours: dict[int, list[np.ndarray]] = {n: [] for n in names}
    skipped = 0
    for item in ds.get("ROIContourSequence", []):
        number = int(item.ReferencedROINumber)
        for c in item.get("ContourSequence", []):
            if str(c.get("ContourGeometricType", "")).upper() != "CLOSED_PLANAR":
                skipped += 1
                continue
            data = np.asarray([float(v) for v in c.get("ContourData", [])], float)
            if data.size < 9 or data.size % 3:
                raise RtStructError(file, f"ROI {number}: a contour has {data.size} coordinates (not 3 per point, >= 3 points)")
            contours.setdefault(number, []).append(data.reshape(-1, 3))
    rois = tuple(
        RoiContours(number=n, name=str(names[n].get("ROIName", "")) if n in names else f"ROI {n}",
                    contours=tuple(contours[n]), interpreted_type=types.get(n, ""),
                    generation_algorithm=str(names[n].get("ROIGenerationAlgorithm", "")) if n in names else "")
        for n in sorted(contours)
    )
    frames, series = _referenced(ds)
    return StructureSet(frames, series, rois, skipped)


def _planes(contours: Sequence[np.ndarray], geometry: SliceGeometry) -> tuple[np.ndarray, int]:
    """Each contour's offset along the normal (NaN when not planar on the grid) and the count of those."""
    offsets = np.full(len(contours), np.nan)
    for i, points in enumerate(contours):
        along = np.asarray(points, float) @ geometry.normal
        if np.ptp(along) <= PLANARITY_TOLERANCE_MM + 1e-6 * max(1.0, float(np.abs(along).max())):
            offsets[i] = float(along.mean())
    return offsets, int(np.isnan(offsets).sum())


def rasterise_contours(contours: Sequence[np.ndarray], geometry: SliceGeometry, *,
                       tolerance_fraction: float = DEFAULT_TOLERANCE_FRACTION) -> tuple[np.ndarray, dict[str, int]]:
    """Rasterise one ROI's planar contours on a series' grid (even-odd rule, nearest plane per slice).

    Parameters
    ----------
    contours : sequence of numpy.ndarray
        ``(m, 3)`` points in patient coordinates (mm), one array per contour.
    geometry : SliceGeometry
    tolerance_fraction : float
        A plane within this fraction of the slice spacing of a slice is drawn on it.

    Returns
    -------
    mask : numpy.ndarray
        bool ``(z, y, x)``.
    info : dict
        ``contours``, ``contours_drawn``, ``contours_off_grid`` (no slice within the tolerance),
        ``contours_not_in_slice_plane`` (not parallel to the slices).
    """
    from skimage.draw import polygon

    mask = np.zeros(geometry.shape_zyx, bool)
    offsets, tilted = _planes(contours, geometry)
    slice_offsets = geometry.slice_offsets_mm
    reach = float(tolerance_fraction) * geometry.slice_spacing_mm + 1e-6
    planes = np.unique(offsets[~np.isnan(offsets)].round(3))
    drawn = 0
    for k, at in enumerate(slice_offsets):
        if planes.size == 0:
            break
        nearest = planes[np.argmin(np.abs(planes - at))]
        if abs(nearest - at) > reach:
            continue
        for i in np.flatnonzero(np.abs(offsets - nearest) < 1e-3):
            rc = geometry.to_pixels(contours[i], k)
            rr, cc = polygon(rc[:, 0], rc[:, 1], shape=mask.shape[1:])
            mask[k, rr, cc] ^= True  # even-odd: a contour inside another is a hole
            drawn += 1
    used = {round(float(p), 3) for p in planes if np.min(np.abs(slice_offsets - p)) <= reach}
    off_grid = int(sum(1 for o in offsets if not np.isnan(o) and round(float(o), 3) not in used))
    return mask, {"contours": len(contours), "contours_drawn": drawn, "contours_off_grid": off_grid,
                  "contours_not_in_slice_plane": tilted}


def mask_contours(mask_2d: np.ndarray) -> list[np.ndarray]:
    """The closed contours (outer boundaries and holes) of a 2D mask, ``(m, 2)`` ``(row, column)`` each.

    Vertices lie half-way between pixel centres (marching squares at 0.5 on the zero-padded
    mask), collinear vertices dropped; the last vertex is not repeated.
    """
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(np.asarray(mask_2d, bool), 1).astype(np.float32)
    out = []
    for c in find_contours(padded, _CONTOUR_LEVEL):
        c = approximate_polygon(c, tolerance=0) - 1.0  # back to the mask's pixel coordinates
        if len(c) > 1 and np.allclose(c[0], c[-1]):
            c = c[:-1]
        if len(c) >= 3:
            out.append(c)
    return out


@dataclass(frozen=True)
class RoiMask:
    """One ROI to write: a mask on the image grid, how it is interpreted and shown."""

    name: str
    mask: np.ndarray
    interpreted_type: str = "ORGAN"
    color_rgb: tuple[int, int, int] = (255, 0, 0)
    description: str = ""


@dataclass(frozen=True)
class Algorithm:
    """The software that made the ROIs (ROIGenerationAlgorithm and its description)."""

    name: str
    version: str
    generation: str = "AUTOMATIC"
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def description(self) -> str:
        extra = ", ".join(f"{k} {v}" for k, v in self.parameters.items())
        return f"{self.name} {self.version}" + (f" ({extra})" if extra else "")


#: Patient and study attributes copied from the source image (patient, general study, patient study modules).
PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize",
    "PatientWeight", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
    "AccessionNumber", "StudyDescription",
)
#: Type 2 attributes of those modules: present (empty if unknown) in what we write.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")


def copy_patient_study(target: Dataset, source: Dataset) -> None:
    """Copy the patient and study modules of ``source`` into ``target`` (type 2 attributes always present)."""
    for keyword in PATIENT_STUDY_KEYWORDS:
        if keyword in source:
            setattr(target, keyword, source.data_element(keyword).value)
    for keyword in _TYPE2:
        if keyword not in target:
            setattr(target, keyword, "")


def _image_ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = sop_class, sop_instance
    return item


def _structure_set_module(ds: Dataset, source: Dataset, geometry: SliceGeometry, label: str, now) -> None:
    ds.StructureSetLabel = label[:16]
    ds.StructureSetDate, ds.StructureSetTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    series = Dataset()
    series.SeriesInstanceUID = source.SeriesInstanceUID
    series.ContourImageSequence = DicomSequence(
        [_image_ref(c, i) for c, i in zip(geometry.sop_class_uids, geometry.sop_instance_uids)])
    study = Dataset()
    study.ReferencedSOPClassUID, study.ReferencedSOPInstanceUID = STUDY_COMPONENT_MANAGEMENT, source.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = source.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])


def _roi_items(number: int, roi: RoiMask, geometry: SliceGeometry, frame_uid: str, algorithm: Algorithm):
    """The Structure Set ROI, ROI Contour and RT ROI Observations items of one ROI."""
    ss = Dataset()
    ss.ROINumber, ss.ReferencedFrameOfReferenceUID, ss.ROIName = number, frame_uid, roi.name[:64]
    ss.ROIGenerationAlgorithm = algorithm.generation
    ss.ROIGenerationDescription = (roi.description or algorithm.description)[:64]
    contour_item = Dataset()
    contour_item.ReferencedROINumber = number
    contour_item.ROIDisplayColor = [int(v) for v in roi.color_rgb]
    contours = []
    for k in np.flatnonzero(np.asarray(roi.mask).any(axis=(1, 2))):
        for rc in mask_contours(roi.mask[k]):
            c = Dataset()
            c.ContourImageSequence = DicomSequence(
                [_image_ref(geometry.sop_class_uids[k], geometry.sop_instance_uids[k])])
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(rc)
            c.ContourNumber = len(contours) + 1
            c.ContourData = [f"{v:.{_DECIMALS}f}" for v in geometry.to_patient(rc, int(k)).ravel()]
            contours.append(c)
    if contours:  # type 3, but with at least one item when present: an empty ROI has none
        contour_item.ContourSequence = DicomSequence(contours)
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber = number, number
    obs.RTROIInterpretedType, obs.ROIInterpreter = roi.interpreted_type, ""
    return ss, contour_item, obs


def build_rtstruct(source_datasets: Sequence[Dataset], rois: Sequence[RoiMask], *, algorithm: Algorithm,
                   series_number: int = 9902, series_description: str = "colearn-pipeline contours",
                   label: str = "COLEARN", manufacturer: str = "colearn-pipeline") -> Dataset:
    """An RT Structure Set of masks on an image series' grid, referencing that series.

    Parameters
    ----------
    source_datasets : sequence of pydicom.Dataset
        The image headers in the masks' slice order (``SeriesVolume.datasets``).
    rois : sequence of RoiMask
        Masks ``(z, y, x)`` on that grid; an empty mask gives an ROI without contours.
    algorithm : Algorithm
        ROIGenerationAlgorithm (AUTOMATIC, SEMIAUTOMATIC, MANUAL) and the software, in every
        ROI's ROIGenerationDescription and in the equipment module.
    series_number, series_description, label, manufacturer
        Of the new RTSTRUCT series (no identifier may be put here).

    Returns
    -------
    pydicom.Dataset
        With file meta (explicit VR little endian); save with ``save_as(..., enforce_file_format=True)``.
    """
    geometry = SliceGeometry.from_datasets(source_datasets)
    for roi in rois:
        if np.asarray(roi.mask).shape != geometry.shape_zyx:
            raise ValueError(f"ROI {roi.name!r}: mask {np.asarray(roi.mask).shape} != grid {geometry.shape_zyx}")
    source = source_datasets[0]
    now = datetime.datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    copy_patient_study(ds, source)
    ds.Modality, ds.SeriesInstanceUID, ds.SeriesNumber = "RTSTRUCT", generate_uid(), int(series_number)
    ds.SeriesDescription, ds.OperatorsName = series_description[:64], ""
    ds.SeriesDate, ds.SeriesTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.Manufacturer, ds.ManufacturerModelName = manufacturer, algorithm.name[:64]
    ds.SoftwareVersions = algorithm.version[:64]
    ds.FrameOfReferenceUID = source.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    _structure_set_module(ds, source, geometry, label, now)
    items = [_roi_items(i + 1, roi, geometry, str(source.FrameOfReferenceUID), algorithm) for i, roi in enumerate(rois)]
    ds.StructureSetROISequence = DicomSequence([s for s, _, _ in items])
    ds.ROIContourSequence = DicomSequence([c for _, c, _ in items])
    ds.RTROIObservationsSequence = DicomSequence([o for _, _, o in items])
    ds.ApprovalStatus = "UNAPPROVED"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds

