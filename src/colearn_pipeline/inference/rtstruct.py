"""RTSTRUCT out: masks on a CT grid as an RT Structure Set, and a label map as one ROI per class and per tumour.

:func:`build_rtstruct` writes one ROI per :class:`RoiMask`: its planar contours on every slice
(:func:`colearn_pipeline.dicom.rtstruct.mask_contours`: marching squares half-way between pixel
centres, holes as separate contours, so the even-odd rasterisation of
:func:`colearn_pipeline.dicom.rtstruct.rasterise_contours` gives back the mask exactly), each
contour referencing its CT image; the Structure Set, ROI Contour and RT ROI Observations modules;
the generating software in ROIGenerationAlgorithm / ROIGenerationDescription and the equipment
module; the source's patient and study modules (:func:`.dicom_headers.copy_patient_study`).
:func:`label_map_rtstruct` is what ``colearn-predict --rtstruct`` writes: Lung, Mediastinum,
Tumour (all components) and Tumour 1..n (each 26-connected component, largest first).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage as ndi

from colearn_pipeline.dicom.rtstruct import (
    CONTOUR_DATA,
    RT_STRUCTURE_SET_STORAGE,
    SliceGeometry,
    contour_data_element,
    mask_contours,
)
from colearn_pipeline.groundtruth import LABELS
from colearn_pipeline.inference.dicom_headers import copy_patient_study
from colearn_pipeline.inference.seg import SEGMENT_CLASSES

#: Referenced SOP class of a study in the RT Referenced Study Sequence (Study Component Management, as
#: treatment planning systems write it).
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"
#: Decimals of the contour coordinates written (mm; DS holds at most 16 characters).
_DECIMALS = 3


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
            c[CONTOUR_DATA] = contour_data_element(geometry.to_patient(rc, int(k)), _DECIMALS)
            contours.append(c)
    if contours:  # type 3, but with at least one item when present: an empty ROI has none
        contour_item.ContourSequence = DicomSequence(contours)
    obs = Dataset()
    obs.ObservationNumber, obs.ReferencedROINumber = number, number
    obs.RTROIInterpretedType, obs.ROIInterpreter = roi.interpreted_type, ""
    return ss, contour_item, obs


def build_rtstruct(source_datasets: Sequence[Dataset], rois: Sequence[RoiMask], *, algorithm: Algorithm,
                   series_number: int = 9903, series_description: str = "colearn-pipeline contours",
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
    ds.SOPClassUID, ds.SOPInstanceUID = RT_STRUCTURE_SET_STORAGE, generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    copy_patient_study(source, ds)
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
    _keep_contour_data_raw(ds)
    return ds


def _keep_contour_data_raw(ds: Dataset) -> None:
    """Mark the contour items as already in the file's encoding, so that pydicom writes their ContourData
    bytes as they are instead of parsing every coordinate into a validated DS object and back (the bulk
    of the writing time of a lung structure set)."""
    for roi in ds.ROIContourSequence:
        for item in roi.get("ContourSequence", []):
            item.set_original_encoding(False, True, item._character_set)  # what write_dataset compares against


def _class_rois() -> list[tuple[str, int, str, tuple[int, int, int]]]:
    kinds = {LABELS["lung"]: "ORGAN", LABELS["mediastinum"]: "ORGAN", LABELS["tumour"]: "GTV"}
    return [(c.name, c.label, kinds[c.label], c.display_rgb) for c in SEGMENT_CLASSES]


def label_map_rois(labels: np.ndarray) -> list[RoiMask]:
    """One ROI per class (Lung, Mediastinum, Tumour) and one per tumour component (``Tumour 1`` largest first).

    Components are 26-connected, as in :func:`colearn_pipeline.inference.summary.summarise_labels`,
    so ``Tumour k`` is the summary's component ``k``.
    """
    labels = np.asarray(labels)
    rois = [RoiMask(name, labels == value, kind, rgb) for name, value, kind, rgb in _class_rois()]
    components, n = ndi.label(labels == LABELS["tumour"], structure=np.ones((3, 3, 3), bool))
    if n:
        sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
        tumour_rgb = rois[-1].color_rgb
        for rank, i in enumerate(np.argsort(-sizes, kind="stable"), start=1):
            rois.append(RoiMask(f"Tumour {rank}", components == i + 1, "GTV", tumour_rgb))
    return rois


def label_map_rtstruct(labels: np.ndarray, ct_datasets: Sequence[Dataset], *, algorithm: Mapping[str, Any],
                       series_number: int = 9903, series_description: str = "colearn-pipeline contours",
                       label: str = "COLEARN") -> Dataset:
    """The RTSTRUCT of a predicted label map (:func:`label_map_rois`), ROIGenerationAlgorithm AUTOMATIC.

    ``algorithm`` is the SEG's algorithm identification
    (:func:`colearn_pipeline.inference.cohort.algorithm_identification`): ``name``, ``version``,
    ``parameters``.
    """
    params = {str(k): str(v) for k, v in (algorithm.get("parameters") or {}).items() if k in ("net", "mlflow_run_id")}
    algo = Algorithm(str(algorithm["name"]), str(algorithm["version"]), "AUTOMATIC", params)
    return build_rtstruct(ct_datasets, label_map_rois(labels), algorithm=algo, series_number=series_number,
                          series_description=series_description, label=label)
