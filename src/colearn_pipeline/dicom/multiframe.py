"""Enhanced and legacy-converted multi-frame CT/PET objects as a stack of classic slice headers.

An enhanced object keeps one header and moves what differs per slice into functional groups:
position (PlanePositionSequence), orientation (PlaneOrientationSequence), pixel spacing
(PixelMeasuresSequence), rescale (PixelValueTransformationSequence) and, for PET, the frame's
timing (FrameContentSequence). :func:`frame_headers` flattens the shared and the per-frame
groups into one classic-looking header per frame, so that the series reader and the SUV rules
treat an enhanced series exactly like a classic one.
"""

from __future__ import annotations

import datetime as dt

from pydicom.dataset import Dataset

FUNCTIONAL_GROUP_SEQUENCES = ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence")


def is_multiframe(ds: Dataset) -> bool:
    """Whether ``ds`` is an enhanced / legacy-converted object (functional groups, any frame count)."""
    return "PerFrameFunctionalGroupsSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1


def _parse_dt(value: object) -> dt.datetime | None:
    text = str(value or "").strip().split("+")[0].split("-")[0]
    if len(text) < 14:
        return None
    try:
        return dt.datetime.strptime(text[:14], "%Y%m%d%H%M%S") + dt.timedelta(
            microseconds=int(float("0" + text[14:]) * 1e6) if "." in text[14:] else 0
        )
    except ValueError:
        return None


def _series_start(ds: Dataset) -> dt.datetime | None:
    date, time = str(ds.get("SeriesDate", "") or ""), str(ds.get("SeriesTime", "") or "")
    return _parse_dt(date + time.split(".")[0].ljust(6, "0")) if date and time else None


def _set(frame: Dataset, keyword: str, value: object) -> None:
    """Set a tag on ``frame`` without mutating an element it shares with the source object."""
    if keyword in frame:
        del frame[keyword]
    setattr(frame, keyword, value)


def _classic_timing(frame: Dataset, top: Dataset) -> None:
    """Map FrameContentSequence timing onto the classic tags the SUV rules read."""
    acquired = _parse_dt(frame.get("FrameAcquisitionDateTime"))
    if acquired is not None:
        _set(frame, "AcquisitionDate", acquired.strftime("%Y%m%d"))
        _set(frame, "AcquisitionTime", acquired.strftime("%H%M%S.%f"))
    duration_ms = frame.get("FrameAcquisitionDuration")
    if duration_ms not in (None, "") and "ActualFrameDuration" not in frame:
        _set(frame, "ActualFrameDuration", int(round(float(duration_ms))))
    reference = _parse_dt(frame.get("FrameReferenceDateTime"))
    start = _series_start(top)
    if reference is not None and start is not None and "FrameReferenceTime" not in frame:
        _set(frame, "FrameReferenceTime", f"{(reference - start).total_seconds() * 1000.0:.3f}")


def _flatten_groups(frame: Dataset, groups: Dataset) -> None:
    for element in groups:
        if element.VR != "SQ" or len(element.value) == 0:
            continue
        for inner in element.value[0]:
            frame[inner.tag] = inner


def frame_headers(ds: Dataset) -> list[Dataset]:
    """One classic slice header per frame of an enhanced / legacy-converted object.

    Parameters
    ----------
    ds : pydicom.dataset.Dataset
        A multi-frame object (pixel data may be present; it is not copied).

    Returns
    -------
    list of pydicom.dataset.Dataset
        ``NumberOfFrames`` headers with ImagePositionPatient, ImageOrientationPatient,
        PixelSpacing, RescaleSlope/Intercept and (PET) AcquisitionDate/Time,
        ActualFrameDuration and FrameReferenceTime taken from the functional groups.
    """
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = list(ds.get("PerFrameFunctionalGroupsSequence") or [])
    shared = list(ds.get("SharedFunctionalGroupsSequence") or [])
    skip = {"PixelData", "FloatPixelData", "DoubleFloatPixelData", *FUNCTIONAL_GROUP_SEQUENCES}
    out = []
    for i in range(n_frames):
        frame = Dataset()
        for element in ds:
            if element.keyword not in skip:
                frame[element.tag] = element
        if shared:
            _flatten_groups(frame, shared[0])
        if i < len(per_frame):
            _flatten_groups(frame, per_frame[i])
        _classic_timing(frame, ds)
        out.append(frame)
    return out


__all__ = ["frame_headers", "is_multiframe"]
