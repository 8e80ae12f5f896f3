"""Objects that claim the same place in a series, compared as what they mean (not as bytes).

Two objects with one SOPInstanceUID, or two slices at one position, are the same only if their
geometry, the headers the SUV is computed from and their real-world values (stored pixels times
RescaleSlope plus RescaleIntercept) agree: then one is kept. Otherwise the study is refused naming
both files (by label) and the first attribute that differs. A PET with several frames per position
that differ by acquisition time is a dynamic PET: refused, or reduced to the frame nearest the
standard uptake time, by the rule the caller passes (``preprocess.read_series.dynamic_pet``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset
from pydicom.valuerep import DT

from colearn_pipeline.dicom.errors import DicomSeriesError

#: Geometry of a slice: two objects differing here are not one slice.
GEOMETRY_KEYWORDS = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows",
                     "Columns")
#: Time of an acquisition: objects at one position differing here are frames of a dynamic PET (or, for CT,
#: two acquisitions).
TIME_KEYWORDS = ("AcquisitionDateTime", "AcquisitionDate", "AcquisitionTime", "FrameReferenceTime")
#: Headers the SUV is computed from (QIBA vendor-neutral; the vendors' private factors below).
SUV_KEYWORDS = ("Modality", "Units", "DecayCorrection", "DecayFactor", "CorrectedImage", "PatientWeight", "PatientSize",
                "SeriesDate", "SeriesTime", *TIME_KEYWORDS, "ActualFrameDuration", "DoseCalibrationFactor")
#: Radiopharmaceutical Information Sequence (0054,0016), first item.
RADIOPHARMACEUTICAL_KEYWORDS = ("RadionuclideTotalDose", "RadionuclideHalfLife", "RadiopharmaceuticalStartTime",
                                "RadiopharmaceuticalStartDateTime")
#: Private groups holding SUV scale factors or scan times (Philips 7053, GE 0009): compared element by element.
PRIVATE_SUV_GROUPS = (0x7053, 0x0009)
#: Dynamic PET rules of :func:`resolve_positions`.
DYNAMIC_RULES = ("refuse", "nearest_uptake_time")
#: Relative and absolute tolerance of two numbers read from headers (decimal strings re-written by exports).
NUMBER_RTOL, NUMBER_ATOL = 1e-6, 1e-9
SECONDS_PER_MINUTE = 60.0


def _numbers(value) -> list[float] | None:
    items = list(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    try:
        return [float(v) for v in items]
    except (TypeError, ValueError):
        return None


def _blank(value) -> bool:
    if value is None:
        return True
    if isinstance(value, bytes):
        return not value.strip(b"\x00 ")
    if isinstance(value, str):
        return not value.strip(" \x00")
    try:
        return len(value) == 0
    except TypeError:
        return False


def same_value(a, b) -> bool:
    """Whether two header values mean the same: numbers within :data:`NUMBER_RTOL`, text after stripping."""
    if _blank(a) or _blank(b):
        return _blank(a) and _blank(b)
    na, nb = _numbers(a), _numbers(b)
    if na is not None and nb is not None:
        return len(na) == len(nb) and all(math.isclose(x, y, rel_tol=NUMBER_RTOL, abs_tol=NUMBER_ATOL)
                                          for x, y in zip(na, nb))
    return str(a).strip() == str(b).strip()


def _show(value) -> str:
    if _blank(value):
        return "absent"
    numbers = _numbers(value)
    if numbers is not None:
        return "/".join(f"{v:g}" for v in numbers)
    text = value.hex() if isinstance(value, bytes) else str(value)
    return text[:32]


def _radiopharmaceutical(ds: Dataset) -> Dataset:
    seq = ds.get("RadiopharmaceuticalInformationSequence")
    return seq[0] if seq else Dataset()


def _private(ds: Dataset) -> dict[int, object]:
    return {int(e.tag): e.value for e in ds if e.tag.group in PRIVATE_SUV_GROUPS and e.tag.element >= 0x1000}


def header_difference(a: Dataset, b: Dataset) -> str | None:
    """The first geometry or SUV header that differs between two slices, as ``"<keyword> <a> vs <b>"``; else None."""
    pairs = [(kw, a.get(kw), b.get(kw)) for kw in (*GEOMETRY_KEYWORDS, *SUV_KEYWORDS)]
    ra, rb = _radiopharmaceutical(a), _radiopharmaceutical(b)
    pairs += [(kw, ra.get(kw), rb.get(kw)) for kw in RADIOPHARMACEUTICAL_KEYWORDS]
    pa, pb = _private(a), _private(b)
    pairs += [(f"private ({t >> 16:04X},{t & 0xFFFF:04X})", pa.get(t), pb.get(t)) for t in sorted({*pa, *pb})]
    for name, va, vb in pairs:
        if not same_value(va, vb):
            return f"{name} {_show(va)} vs {_show(vb)}"
    return None


def difference(a: Dataset, values_a: np.ndarray, b: Dataset, values_b: np.ndarray) -> str | None:
    """What makes two slices different, or None when they mean the same.

    Parameters
    ----------
    a, b : pydicom.dataset.Dataset
        The headers.
    values_a, values_b : numpy.ndarray
        Their real-world values (stored pixels after RescaleSlope and RescaleIntercept).

    Returns
    -------
    str or None
        ``"RescaleSlope 0.5 vs 5"``, ``"pixel data"``, ``"AcquisitionTime 100000 vs 103000"``, ...
    """
    header = header_difference(a, b)
    if header is not None:
        return header
    if values_a.shape == values_b.shape and np.array_equal(values_a, values_b, equal_nan=True):
        return None  # the same values, however they were encoded
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        if not same_value(a.get(keyword, 1.0 if keyword == "RescaleSlope" else 0.0),
                          b.get(keyword, 1.0 if keyword == "RescaleSlope" else 0.0)):
            return f"{keyword} {_show(a.get(keyword))} vs {_show(b.get(keyword))}"
    return "pixel data"


def _time_key(ds: Dataset) -> tuple[str, ...]:
    return tuple(str(ds.get(kw, "") or "").strip() for kw in TIME_KEYWORDS)


def _seconds_after_injection(ds: Dataset) -> float | None:
    """Start of the slice's acquisition, in seconds after the injection; None when the headers cannot say."""
    radio = _radiopharmaceutical(ds)
    try:
        injection = str(radio.get("RadiopharmaceuticalStartDateTime", "") or "").strip()
        if not injection and radio.get("RadiopharmaceuticalStartTime"):
            injection = str(ds.get("SeriesDate", "") or "").strip() + str(radio.RadiopharmaceuticalStartTime).strip()
        start = str(ds.get("AcquisitionDateTime", "") or "").strip()
        if not start and ds.get("AcquisitionTime"):
            date = ds.get("AcquisitionDate") or ds.get("SeriesDate") or ""
            start = str(date).strip() + str(ds.AcquisitionTime).strip()
        if len(injection) < 12 or len(start) < 12:  # a date and at least hours and minutes
            return None
        return (DT(start) - DT(injection)).total_seconds()
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass
class Resolution:
    """The slices kept of a series sorted along its normal, and what was done to get them."""

    keep: list[int]
    notes: list[str] = field(default_factory=list)


def _groups(along: np.ndarray, tolerance_mm: float) -> list[list[int]]:
    groups: list[list[int]] = []
    for i in range(len(along)):
        if groups and along[i] - along[groups[-1][-1]] < tolerance_mm:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def resolve_positions(along: np.ndarray, headers: Sequence[Dataset], slices: Sequence[np.ndarray],
                      labels: Sequence[str], *, study: str, duplicate_tolerance_mm: float, dynamic_pet: str,
                      uptake_time_min: float) -> Resolution:
    """Keep one object per position of a series sorted along its normal (``along``, mm).

    Objects at one position that mean the same (:func:`difference`) are kept once (the first label
    in sorted order, so the result does not depend on file names); a PET whose objects at one
    position differ by acquisition time is dynamic and handled by ``dynamic_pet``
    (:data:`DYNAMIC_RULES`); anything else at one position is refused.

    Raises
    ------
    DicomSeriesError
        ``duplicated slice: ... differ in <attribute>``, or a dynamic PET refused, naming the rule.
    """
    groups = _groups(np.asarray(along, dtype=float), duplicate_tolerance_mm)
    if all(len(g) == 1 for g in groups):
        return Resolution([g[0] for g in groups])
    is_pet = str(headers[0].get("Modality", "")).upper() == "PT"
    timed = [g for g in groups if len(g) > 1 and len({_time_key(headers[i]) for i in g}) == len(g)]
    if is_pet and timed:
        return _dynamic(groups, headers, labels, study, dynamic_pet, uptake_time_min)
    keep, notes = [], []
    for group in groups:
        members = sorted(group, key=lambda i: labels[i])
        first = members[0]
        for other in members[1:]:
            why = difference(headers[first], slices[first], headers[other], slices[other])
            if why is not None:
                problem = (f"duplicated slice: {labels[other]} at the same position ({along[first]:.3f} mm along "
                           f"the normal) differs in {why}")
                raise DicomSeriesError(study, labels[first], problem)
            notes.append(f"identical duplicate at one position: {labels[other]} is {labels[first]}, kept once")
        keep.append(first)
    return Resolution(keep, notes)


def _dynamic(groups: list[list[int]], headers: Sequence[Dataset], labels: Sequence[str], study: str, rule: str,
             uptake_time_min: float) -> Resolution:
    """Frames of a dynamic PET (objects at one position ranked by time); the rule keeps one or refuses."""
    if rule not in DYNAMIC_RULES:
        raise ValueError(f"dynamic_pet must be one of {DYNAMIC_RULES}, got {rule!r}")
    counts = sorted({len(g) for g in groups})
    first = labels[groups[0][0]]
    if len(counts) > 1:
        raise DicomSeriesError(study, first, f"dynamic PET with incomplete frames: {counts[0]} to {counts[-1]} objects "
                                             "per position (several frames per position by acquisition time)")
    n_frames = counts[0]
    ranked = [sorted(g, key=lambda i: (_seconds_after_injection(headers[i]) or 0.0, _time_key(headers[i])))
              for g in groups]
    minutes = []
    for frame in range(n_frames):
        times = [_seconds_after_injection(headers[g[frame]]) for g in ranked]
        minutes.append(None if any(t is None for t in times) else float(np.median(times)) / SECONDS_PER_MINUTE)
    what = f"dynamic PET: {n_frames} frames per position (by acquisition time"
    if rule == "refuse":
        shown = ", ".join("?" if m is None else f"{m:.1f}" for m in minutes)
        raise DicomSeriesError(study, first, f"{what}, starting {shown} min after injection); refused "
                                             "(read_series.dynamic_pet: refuse)")
    if any(m is None for m in minutes):
        raise DicomSeriesError(study, first, f"{what}); the frames' start cannot be related to the injection "
                                             "(AcquisitionTime, RadiopharmaceuticalStartTime): no frame chosen")
    best = int(np.argmin([abs(m - uptake_time_min) for m in minutes]))
    note = (f"{what}); kept frame {best + 1}, starting {minutes[best]:.1f} min after injection, nearest the "
            f"standard uptake time {uptake_time_min:g} min (read_series.dynamic_pet: nearest_uptake_time)")
    return Resolution([g[best] for g in ranked], [note])
