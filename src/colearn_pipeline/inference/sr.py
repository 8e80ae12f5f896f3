"""The clinical PET figures of a study as a DICOM Structured Report for PACS (TID 1500, highdicom).

:func:`build_sr` writes a Comprehensive 3D SR holding one TID 1500 Measurement Report: one TID
1411 volumetric ROI measurement group per tumour component (tracking identifier "Tumour
component k", the ranks of the summary) and one for all components together, each referencing
the Tumour segment of the study's SEG (:mod:`.seg`) and, through it, the CT images it was made
on. Measurements (DICOM CID 7466 / 7464 / 7469 codes):

============================  ==========================================  =====================
figure                        concept (derivation)                        unit (UCUM)
============================  ==========================================  =====================
MTV                           DCM 126032 Metabolic Volume                 ml
SUVmax / SUVpeak / SUVmean    DCM 12640x SUVbw/lbm/bsa/ibw (SCT 56851009  g/ml{SUVbw} ...
                              Maximum / DCM 126031 Peak Value Within ROI
                              / SCT 373098007 Mean)
TLG                           DCM 126033 Total Lesion Glycolysis          g (cm2 for SUVbsa)
mean uncertainty (optional)   99COLEARN UNCMEAN (private)                 1 (no units)
============================  ==========================================  =====================

The patient and study modules come from :func:`.dicom_headers.copy_patient_study`, as the SEG's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from colearn_pipeline.inference.dicom_headers import copy_patient_study

#: SUV type (``suv.SUV_TYPES``) -> (SR concept, UCUM unit, TLG unit).
SUV_CODES = {
    "bw": (Code("126401", "DCM", "SUVbw"), Code("g/ml{SUVbw}", "UCUM", "Standardized Uptake Value body weight"),
           Code("g", "UCUM", "gram")),
    "lbm": (Code("126406", "DCM", "SUVlbm(James128)"),
            Code("g/ml{SUVlbm(James128)}", "UCUM", "Standardized Uptake Value lean body mass (James 128 multiplier)"),
            Code("g", "UCUM", "gram")),
    "bsa": (Code("126403", "DCM", "SUVbsa"),
            Code("cm2/ml{SUVbsa}", "UCUM", "Standardized Uptake Value body surface area"),
            Code("cm2", "UCUM", "square centimeter")),
    "ibw": (Code("126404", "DCM", "SUVibw"),
            Code("g/ml{SUVibw}", "UCUM", "Standardized Uptake Value ideal body weight"), Code("g", "UCUM", "gram")),
}
MILLILITER = Code("ml", "UCUM", "milliliter")
NO_UNITS = Code("1", "UCUM", "no units")
PEAK = Code("126031", "DCM", "Peak Value Within ROI")
#: The mean of the per-voxel uncertainty map over the region (no standard concept: a private code).
UNCERTAINTY_MEAN = Code("UNCMEAN", "99COLEARN", "Mean voxel uncertainty of the segmentation")
#: Reported procedure (CID 100).
PROCEDURE = Code("443271005", "SCT", "PET/CT FDG imaging of whole body")


def _measurements(figures: Mapping[str, Any], suv_type: str) -> list:
    import highdicom as hd

    concept, suv_unit, tlg_unit = SUV_CODES[suv_type]
    wanted = [("volume_ml", codes.DCM.MetabolicVolume, MILLILITER, None),
              ("suv_max", concept, suv_unit, codes.SCT.Maximum), ("suv_peak", concept, suv_unit, PEAK),
              ("suv_mean", concept, suv_unit, codes.SCT.Mean),
              ("tlg_g", codes.DCM.TotalLesionGlycolysis, tlg_unit, None),
              ("uncertainty_mean", UNCERTAINTY_MEAN, NO_UNITS, None)]
    return [hd.sr.Measurement(name=name, value=float(figures[key]), unit=unit, derivation=derivation)
            for key, name, unit, derivation in wanted if figures.get(key) is not None]  # no SUV without tumour


def _frame_slice(frame: Dataset, geometry) -> int:
    spacing, origin, direction = geometry
    normal = np.asarray(direction, dtype=np.float64).reshape(3, 3)[:, 2]
    position = np.asarray(frame.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
    return int(np.rint((position - np.asarray(origin, dtype=np.float64)) @ normal / float(spacing[2])))


def source_images_of_segment(seg: Dataset, segment_number: int, z_range: Sequence[int] | None = None,
                             geometry=None) -> list:
    """The CT images (and frames) a segment of ``seg`` lies on, optionally only on slices ``z_range``.

    Read from each SEG frame's Derivation Image Sequence; one Source Image for Segmentation per
    source SOP instance, with its frame numbers when the source is one multi-frame object.
    ``geometry`` (``(spacing_xyz_mm, origin_xyz_mm, direction)`` of the CT grid) places a SEG
    frame on a slice (its ImagePositionPatient projected on the slice normal).
    """
    import highdicom as hd

    frames_of: dict[tuple[str, str], set[int]] = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        if int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber) != segment_number:
            continue
        if z_range is not None and not z_range[0] <= _frame_slice(frame, geometry) <= z_range[1]:
            continue
        for derivation in frame.get("DerivationImageSequence", []):
            for src in derivation.get("SourceImageSequence", []):
                key = (str(src.ReferencedSOPClassUID), str(src.ReferencedSOPInstanceUID))
                numbers = src.get("ReferencedFrameNumber")
                frames_of.setdefault(key, set()).update(int(n) for n in np.atleast_1d(numbers or []))
    return [hd.sr.SourceImageForSegmentation(referenced_sop_class_uid=cls, referenced_sop_instance_uid=uid,
                                             referenced_frame_numbers=sorted(frames) or None)
            for (cls, uid), frames in frames_of.items()]


def _group(seg, segment_number: int | None, label: str, figures: Mapping[str, Any], suv_type: str, algorithm,
           geometry=None):
    """A TID 1411 group on the SEG's segment (on the component's slices when ``geometry`` and its
    ``z_range`` are known); with no segment (no tumour found), a TID 1501 group."""
    import highdicom as hd

    if segment_number is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            finding_type=codes.SCT.Neoplasm, finding_category=codes.SCT.MorphologicallyAbnormalStructure,
            algorithm_id=algorithm, measurements=_measurements(figures, suv_type),
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
        referenced_segment=_referenced_segment(seg, segment_number, figures.get("z_range"), geometry),
        finding_type=codes.SCT.Neoplasm, finding_category=codes.SCT.MorphologicallyAbnormalStructure,
        algorithm_id=algorithm, measurements=_measurements(figures, suv_type),
    )


def _referenced_segment(seg, segment_number: int, z_range, geometry):
    """The whole segment, with the source images of the component's slices when known, else all its images."""
    import highdicom as hd

    on = z_range if geometry is not None else None
    images = source_images_of_segment(seg, segment_number, on, geometry)
    if not images:  # a SEG without per-frame source references: its referenced series, as highdicom does
        return hd.sr.ReferencedSegment.from_segmentation(seg, segment_number=segment_number)
    return hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID,
                                   segment_number=segment_number, source_images=images)


def _algorithm_id(algorithm: Mapping[str, Any] | None):
    import highdicom as hd

    if not algorithm:
        return None
    params = [f"{k}={v}" for k, v in (algorithm.get("parameters") or {}).items() if v is not None]
    return hd.sr.AlgorithmIdentification(name=str(algorithm["name"])[:64], version=str(algorithm["version"])[:64],
                                         parameters=params or None)


def build_sr(
    seg,
    source_images: Sequence[Dataset],
    quantification: Mapping[str, Any],
    *,
    tumour_segment: int,
    geometry: tuple[Sequence[float], Sequence[float], Sequence[float]] | None = None,
    suv_type: str = "bw",
    algorithm: Mapping[str, Any] | None = None,
    series_number: int = 9902,
    series_description: str = "colearn-pipeline PET measurements",
    software_version: str = "",
):
    """A TID 1500 Measurement Report of the tumour components' PET figures, referencing the SEG.

    Parameters
    ----------
    seg : highdicom.seg.Segmentation
        The study's SEG (:func:`.seg.build_seg`); its Tumour segment is referenced.
    source_images : sequence of pydicom.Dataset
        The SEG's source images (the CT headers, or the one enhanced CT object): the evidence.
    quantification : mapping
        ``components`` and ``totals`` as :func:`colearn_pipeline.evaluation.quantification.quantify_tumours`
        returns them (or the summary's ``tumours`` / ``tumour_totals``).
    tumour_segment : int
        The Tumour segment number in ``seg``.
    geometry : (spacing_xyz_mm, origin_xyz_mm, direction), optional
        The CT grid (SimpleITK order). With it, each component's group references only the
        SEG frames, and so the CT images, of the slices the component lies on (its
        ``z_range``); without it, every frame of the Tumour segment.
    suv_type : {"bw", "lbm", "bsa", "ibw"}
        The SUV the figures are in.
    algorithm : mapping, optional
        ``name``, ``version``, ``parameters`` (as for the SEG).
    series_number, series_description, software_version
        Of the new SR series (no identifier may be put here).

    Returns
    -------
    highdicom.sr.Comprehensive3DSR
        With no tumour component the report holds one TID 1501 group "All tumour components"
        with MTV 0 mL and TLG 0 g (no SUV figure, no segment reference).
    """
    import highdicom as hd
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    if suv_type not in SUV_CODES:
        raise ValueError(f"suv_type {suv_type!r}: expected one of {sorted(SUV_CODES)}")
    algo = _algorithm_id(algorithm)
    components = list(quantification["components"])
    groups = [_group(seg, tumour_segment, f"Tumour component {c['component']}", c, suv_type, algo, geometry)
              for c in components]
    groups.append(_group(seg, tumour_segment if components else None, "All tumour components",
                         quantification["totals"], suv_type, algo))
    name = str((algorithm or {}).get("name", "colearn-pipeline"))[:64]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=name, manufacturer_name="colearn-pipeline"),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=PROCEDURE, imaging_measurements=groups,
    )
    private_scheme = CodingSchemeIdentificationItem(
        designator=UNCERTAINTY_MEAN.scheme_designator, name="colearn-pipeline local codes",
        responsible_organization="colearn-pipeline")
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*source_images, seg], content=report[0], series_instance_uid=hd.UID(),
        series_number=int(series_number), sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="colearn-pipeline", series_description=series_description[:64], is_complete=True,
        is_final=False, is_verified=False, coding_schemes=[private_scheme],
    )
    if software_version:
        sr.SoftwareVersions = software_version[:64]
    copy_patient_study(source_images[0], sr)
    return sr


__all__ = ["SUV_CODES", "UNCERTAINTY_MEAN", "build_sr"]
