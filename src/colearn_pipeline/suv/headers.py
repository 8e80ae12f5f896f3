"""Header reading for SUV: tag names, series-level values, DICOM dates and times, private tags.

Everything here reads; nothing decides a rule. Errors are :class:`SuvError` naming the tag
(keyword and ``(gggg,eeee)``), the ``source`` label and the file's base name.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from colearn_pipeline.suv.errors import SuvError

#: Philips PET private group and its creator.
PHILIPS_GROUP = 0x7053
PHILIPS_CREATOR = "Philips PET Private Group"
PHILIPS_SUV_SCALE_ELEMENT = 0x00  # (7053,xx00)
PHILIPS_ACTIVITY_SCALE_ELEMENT = 0x09  # (7053,xx09)
#: GE PET private group and its creator; (0009,xx0D) is the PET scan datetime.
GE_GROUP = 0x0009
GE_CREATOR = "GEMS_PETD_01"
GE_SCAN_DATETIME_ELEMENT = 0x0D
#: The private block the vendors use (xx = 0x10) when no creator element says otherwise.
DEFAULT_PRIVATE_BLOCK = 0x10


def tag_name(keyword: str) -> str:
    """``"PatientWeight"`` -> ``"PatientWeight (0010,1030)"``."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    t = Tag(tag)
    return f"{keyword} ({t.group:04X},{t.element:04X})"


def file_of(ds: Dataset | None) -> str:
    """Base name of the file a dataset was read from, or ``""``."""
    name = getattr(ds, "filename", None) if ds is not None else None
    return os.path.basename(str(name)) if isinstance(name, (str, os.PathLike)) and str(name) else ""


class HeaderContext:
    """Carries the source label and the datasets of one series for error messages."""

    def __init__(self, source: str, datasets: Sequence[Dataset]) -> None:
        self.source = source
        self.datasets = datasets

    def error(self, tag: str, problem: str, ds: Dataset | None = None) -> SuvError:
        return SuvError(problem, tag=tag, source=self.source, file=file_of(ds if ds is not None else self.datasets[0]))


def is_empty(value: Any) -> bool:
    """None, blank text, blank bytes (UN) or an empty multi-value."""
    if value is None:
        return True
    if isinstance(value, (bytes, bytearray)):
        return not bytes(value).strip(b"\x00 ")
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, MultiValue)):
        return len(value) == 0
    return False


def series_value(ctx: HeaderContext, keyword: str, datasets: Sequence[Dataset] | None = None) -> Any:
    """The one non-empty value of a series-level attribute, or None; raises if slices disagree."""
    found = None
    for ds in datasets if datasets is not None else ctx.datasets:
        value = ds.get(keyword)
        if is_empty(value):
            continue
        if found is None:
            found = value
        elif str(value).strip() != str(found).strip():
            raise ctx.error(
                tag_name(keyword), f"differs between slices ({str(found).strip()!r} vs {str(value).strip()!r})", ds
            )
    return found


def positive_float(ctx: HeaderContext, value: Any, tag: str, ds: Dataset | None = None) -> float:
    """``float(value)``, raising naming ``tag`` unless it is finite and > 0."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ctx.error(tag, f"not a number ({value!r})", ds) from None
    if not math.isfinite(number) or number <= 0:
        raise ctx.error(tag, f"must be a positive number, found {number!r}", ds)
    return number


def per_slice_float(ctx: HeaderContext, keyword: str) -> np.ndarray | None:
    """Per-slice float values (NaN where missing); None if missing on every slice."""
    values = np.full(len(ctx.datasets), np.nan)
    for i, ds in enumerate(ctx.datasets):
        value = ds.get(keyword)
        if is_empty(value):
            continue
        try:
            values[i] = float(value)
        except (TypeError, ValueError):
            raise ctx.error(tag_name(keyword), f"not a number ({value!r})", ds) from None
    return None if np.all(np.isnan(values)) else values


def check_rescale_slopes(ctx: HeaderContext) -> None:
    """RescaleSlope (0028,1053), where present, must be finite and > 0 on every slice."""
    for ds in ctx.datasets:
        value = ds.get("RescaleSlope")
        if is_empty(value):
            continue
        try:
            slope = float(value)
        except (TypeError, ValueError):
            raise ctx.error(tag_name("RescaleSlope"), f"not a number ({value!r})", ds) from None
        if not math.isfinite(slope) or slope <= 0:
            raise ctx.error(tag_name("RescaleSlope"), f"{slope!r} is not a finite positive slope", ds)


# --------------------------------------------------------------------------------------------
# DICOM dates and times


def parse_da(value: Any) -> date:
    """DICOM DA (``YYYYMMDD``, also with ``.`` or ``-``)."""
    text = str(value).strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a DICOM date (DA): {value!r}")
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def parse_tm(value: Any) -> time:
    """DICOM TM (``HH[MM[SS[.ffffff]]]``, also with ``:``)."""
    text = str(value).strip().replace(":", "")
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (frac and not frac.isdigit()):
        raise ValueError(f"not a DICOM time (TM): {value!r}")
    hh = int(whole[:2])
    mm = int(whole[2:4]) if len(whole) >= 4 else 0
    ss = int(whole[4:6]) if len(whole) >= 6 else 0
    if ss == 60:  # leap second allowed by TM
        ss = 59
    micro = int((frac + "000000")[:6]) if frac else 0
    return time(hh, mm, ss, micro)


def parse_dt(value: Any) -> tuple[datetime, bool]:
    """Parse a DICOM DT; returns (naive datetime, had_utc_offset). The offset is dropped."""
    text = str(value).strip()
    had_offset = False
    for sign in ("+", "-"):
        if sign in text[4:]:
            idx = text.index(sign, 4)
            text, had_offset = text[:idx], True
            break
    whole, _, frac = text.partition(".")
    if not whole.isdigit() or len(whole) < 8:
        raise ValueError(f"not a DICOM datetime (DT): {value!r}")
    d = parse_da(whole[:8])
    time_part = whole[8:]
    if time_part:
        t = parse_tm(time_part + ("." + frac if frac else ""))
    else:
        t = time(0, 0)
    return datetime.combine(d, t), had_offset


def seconds(delta: timedelta) -> float:
    """Length of ``delta`` in seconds."""
    return delta.total_seconds()


def series_date(ctx: HeaderContext) -> date | None:
    """SeriesDate, else AcquisitionDate, else StudyDate of the series; None if none is present."""
    for keyword in ("SeriesDate", "AcquisitionDate", "StudyDate"):
        value = series_value(ctx, keyword) if keyword == "SeriesDate" else ctx.datasets[0].get(keyword)
        if not is_empty(value):
            try:
                return parse_da(value)
            except ValueError as exc:
                raise ctx.error(tag_name(keyword), str(exc)) from None
    return None


def acquisition_datetimes(ctx: HeaderContext, series_day: date | None) -> list[datetime | None]:
    """Per slice AcquisitionDateTime, else AcquisitionDate (else the series date) + AcquisitionTime."""
    out: list[datetime | None] = []
    for ds in ctx.datasets:
        dt_value = ds.get("AcquisitionDateTime")
        if not is_empty(dt_value):
            try:
                out.append(parse_dt(dt_value)[0])
            except ValueError as exc:
                raise ctx.error(tag_name("AcquisitionDateTime"), str(exc), ds) from None
            continue
        tm_value = ds.get("AcquisitionTime")
        if is_empty(tm_value):
            out.append(None)
            continue
        try:
            t = parse_tm(tm_value)
        except ValueError as exc:
            raise ctx.error(tag_name("AcquisitionTime"), str(exc), ds) from None
        da_value = ds.get("AcquisitionDate")
        if not is_empty(da_value):
            try:
                day = parse_da(da_value)
            except ValueError as exc:
                raise ctx.error(tag_name("AcquisitionDate"), str(exc), ds) from None
        elif series_day is not None:
            day = series_day
        else:
            raise ctx.error(tag_name("AcquisitionDate"), "missing, and no SeriesDate to stand in for it", ds)
        out.append(datetime.combine(day, t))
    return out


# --------------------------------------------------------------------------------------------
# private tags


def private_value(ds: Dataset, group: int, element_low: int, creator: str, notes: list[str]) -> Any:
    """Value of a private element reserved by ``creator``; None if absent.

    The block is the one whose creator element names ``creator``; when the dataset has no
    creator element at all for the default block (as in some anonymised exports and the
    IBSI-SUV objects) the default block 0x10 is accepted and a note is recorded. A default-block
    element reserved by another creator is ignored.
    """
    for elem in range(0x10, 0x100):
        creator_elem = ds.get((group, elem))
        if creator_elem is not None and str(creator_elem.value).strip() == creator:
            data = ds.get((group, (elem << 8) | element_low))
            return None if data is None or is_empty(data.value) else data.value
    default_tag = (group, (DEFAULT_PRIVATE_BLOCK << 8) | element_low)
    data = ds.get(default_tag)
    if data is None or is_empty(data.value):
        return None
    other_creator = ds.get((group, DEFAULT_PRIVATE_BLOCK))
    tag_text = f"({group:04X},{default_tag[1]:04X})"
    if other_creator is not None:
        notes.append(f"{tag_text} ignored: its block belongs to {str(other_creator.value).strip()!r}, not {creator!r}")
        return None
    note = f"{tag_text} read without a private creator element (expected {creator!r})"
    if note not in notes:
        notes.append(note)
    return data.value


def private_text(value: Any) -> str:
    """Private values read as UN (implicit VR, no private dictionary) arrive as bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", errors="replace").strip("\x00 ")
    return str(value).strip()


def philips_factors(ctx: HeaderContext, element_low: int, notes: list[str]) -> np.ndarray | None:
    """Per-slice Philips scale factor (7053,xx00 or xx09); None if absent on every slice, NaN where absent."""
    tag = f"({PHILIPS_GROUP:04X},{(DEFAULT_PRIVATE_BLOCK << 8) | element_low:04X})"
    values = np.full(len(ctx.datasets), np.nan)
    for i, ds in enumerate(ctx.datasets):
        raw = private_value(ds, PHILIPS_GROUP, element_low, PHILIPS_CREATOR, notes)
        if raw is None:
            continue
        try:
            values[i] = float(private_text(raw))
        except ValueError:
            raise ctx.error(f"Philips private {tag}", f"not a number ({raw!r})", ds) from None
    return None if np.all(np.isnan(values)) else values

