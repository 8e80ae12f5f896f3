"""Per-frame SUV headers of an enhanced (multi-frame) PET object.

:func:`suv_conversion` works on one header per slice. An Enhanced PET Image object keeps the
frame timing in its functional groups instead; :func:`frame_headers` turns it into one classic
header per frame carrying what the SUV rules read:

========================================  ===========================================
classic attribute (per frame header)      enhanced source (per frame, else shared)
========================================  ===========================================
AcquisitionDateTime (0008,002A)           FrameContentSequence > FrameAcquisitionDateTime
ActualFrameDuration (0018,1242), ms       FrameContentSequence > FrameAcquisitionDuration
FrameReferenceTime (0054,1300), ms        FrameReferenceDateTime - DecayCorrectionDateTime
RescaleSlope / RescaleIntercept           PixelValueTransformationSequence
========================================  ===========================================

Series-level attributes (Units, DecayCorrection, patient, radiopharmaceutical, vendor private
groups, ...) are copied from the top level. Each header's ``filename`` is ``<file>#frame<k>`` so
that errors name the frame.
"""

from __future__ import annotations

import os
from typing import Any

from pydicom.dataset import Dataset

from colearn_pipeline.suv.errors import SuvError
from colearn_pipeline.suv.headers import GE_GROUP, PHILIPS_GROUP, is_empty, parse_dt, seconds, tag_name
from colearn_pipeline.suv.timing import MS_PER_S

#: Top-level attributes the SUV rules read.
SERIES_KEYWORDS = (
    "Modality", "Units", "DecayCorrection", "CorrectedImage", "SUVType", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "StudyDate", "PatientWeight", "PatientSize", "PatientSex",
    "RadiopharmaceuticalInformationSequence",
)  # fmt: skip


def _frame_item(enhanced: Dataset, index: int, sequence: str) -> Dataset | None:
    """First item of ``sequence`` in frame ``index``'s functional group, else in the shared group."""
    groups = []
    per_frame = enhanced.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and index < len(per_frame):
        groups.append(per_frame[index])
    shared = enhanced.get("SharedFunctionalGroupsSequence")
    if shared:
        groups.append(shared[0])
    for group in groups:
        seq = group.get(sequence)
        if seq:
            return seq[0]
    return None


def _frame_values(enhanced: Dataset, index: int, source: str, file: str) -> dict[str, Any]:
    """Classic timing and rescale attributes of frame ``index`` (absent values left out)."""
    values: dict[str, Any] = {}
    content = _frame_item(enhanced, index, "FrameContentSequence")
    if content is not None:
        if not is_empty(content.get("FrameAcquisitionDateTime")):
            values["AcquisitionDateTime"] = str(content.FrameAcquisitionDateTime)
        if not is_empty(content.get("FrameAcquisitionDuration")):
            values["ActualFrameDuration"] = float(content.FrameAcquisitionDuration)
        reference = content.get("FrameReferenceDateTime")
        decay_reference = enhanced.get("DecayCorrectionDateTime")
        if not is_empty(reference) and not is_empty(decay_reference):
            try:
                offset_s = seconds(parse_dt(reference)[0] - parse_dt(decay_reference)[0])
            except ValueError as exc:
                raise SuvError(str(exc), tag=tag_name("FrameReferenceDateTime"), source=source, file=file) from None
            values["FrameReferenceTime"] = offset_s * MS_PER_S
    transform = _frame_item(enhanced, index, "PixelValueTransformationSequence")
    if transform is not None:
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if not is_empty(transform.get(keyword)):
                values[keyword] = transform.get(keyword)
    return values


def frame_headers(enhanced: Dataset, *, source: str = "") -> list[Dataset]:
    """One classic PET header per frame of an enhanced multi-frame PET object.

    Parameters
    ----------
    enhanced : pydicom.dataset.Dataset
        Enhanced PET Image header (pixel data may be absent), with NumberOfFrames and the
        per-frame (or shared) functional groups.
    source : str
        Label for error messages.

    Returns
    -------
    list of pydicom.dataset.Dataset
        In frame order, ready for :func:`colearn_pipeline.suv.suv_conversion`.
    """
    file = os.path.basename(str(getattr(enhanced, "filename", "") or ""))
    try:
        n_frames = int(enhanced.get("NumberOfFrames") or 0)
    except (TypeError, ValueError):
        n_frames = 0
    if n_frames < 1:
        raise SuvError("missing or not a positive integer", tag=tag_name("NumberOfFrames"), source=source, file=file)
    private = [elem for elem in enhanced if elem.tag.group in (PHILIPS_GROUP, GE_GROUP)]
    headers = []
    for index in range(n_frames):
        header = Dataset()
        for keyword in SERIES_KEYWORDS:
            if keyword in enhanced:
                header[keyword] = enhanced[keyword]
        for elem in private:
            header[elem.tag] = elem
        for keyword, value in _frame_values(enhanced, index, source, file).items():
            setattr(header, keyword, value)
        header.filename = f"{file}#frame{index + 1}"
        headers.append(header)
    return headers
