"""PET -> SUV conversion: the QIBA vendor-neutral rules extended to every IBSI-SUV reference case.

:func:`suv_conversion` reads the headers of one PET series and returns one multiplicative factor
per slice, so that ``SUV = rescaled pixel value * factor`` where the rescaled pixel value is
``stored * RescaleSlope + RescaleIntercept`` of that slice. The computation always goes through
SUVbw (body weight, g/mL) and converts to the requested SUV type at the end.

Rules (see ``docs/suv.md`` for the full text and the conformance table)
------------------------------------------------------------------------
Units (0054,1001)
    ``BQML``
        ``SUVbw = A * W_g / D_ref`` with the dose decayed to the reference time (below).
        Philips private scale factors are ignored.
    ``CNTS``
        Philips SUV scale factor (7053,1000) when present and > 0: ``SUVbw = A * f``.
        Else the activity concentration scale factor (7053,1009) when present and > 0 converts
        to Bq/mL and the series proceeds as BQML. Else :class:`SuvError`.
    ``GML``
        Already an SUV. SUVType (0054,1006) empty or ``BW`` is SUVbw; ``LBMJAMES128``,
        ``LBM`` (Morgan, 120), ``LBMJANMA`` and ``IBW`` are converted back with
        ``SUVbw = SUVx * W / X`` (PatientWeight, PatientSize and PatientSex are then needed;
        sex ``O`` uses the mean of the male and female formulas).
    ``CM2ML``
        SUVbsa (Du Bois): ``SUVbw = SUVbsa * W_g / BSA_cm2``.
    anything else (``CPS``, ``PROPCNTS``, ``1CM``, ...)
        :class:`SuvError` naming Units.

DecayCorrection (0054,1102), for activity images (BQML, or CNTS via 7053,1009)
    ``ADMIN``
        Images are decay-corrected to the injection: the dose is used as administered.
    ``START``
        ``D_ref = D * exp(-lambda * (t_ref - t_inj))``; the reference time ``t_ref`` is chosen by
        the first rule that applies:

        1. the GE private PET scan datetime (0009,100D) (creator ``GEMS_PETD_01``) if present;
        2. SeriesDate/SeriesTime if not later than the earliest acquisition datetime;
        3. per slice, ``t_ref = t_acq + T_ave - dt`` from AcquisitionTime, FrameReferenceTime
           ``dt`` and ActualFrameDuration ``T`` when every slice has all three, with
           ``T_ave = ln(lambda*T / (1 - exp(-lambda*T))) / lambda`` (the average count-rate time);
        4. the earliest acquisition datetime.
    ``NONE``
        Each slice is decayed back to the injection from its own acquisition:
        ``SUVbw = A * W_g / D * lambda*T / (1 - exp(-lambda*T)) * exp(lambda * (t_acq - t_inj))``.

Injection time
    RadiopharmaceuticalStartDateTime (0018,1078) if present; else RadiopharmaceuticalStartTime
    (0018,1072) on the series date, moved to the previous day when that would put it after the
    earliest acquisition (a scan after midnight of an injection before midnight).

Unit fixes (each one is recorded in ``details["notes"]``)
    * RadionuclideTotalDose (0018,1074) below :data:`DOSE_MBQ_BELOW` is read as MBq and multiplied
      by 1e6. Human PET activities are 1e7..1e10 Bq, i.e. 10..10 000 MBq, so the two readings
      cannot be confused below 1e5 (0.1 MBq read as Bq, 100 GBq read as MBq). After the fix a dose
      outside [:data:`DOSE_MIN_BQ`, :data:`DOSE_MAX_BQ`] raises.
    * PatientWeight (0010,1030) above :data:`WEIGHT_GRAMS_ABOVE` (1000) is read as grams and
      divided by 1000 (no person weighs a tonne; IBSI-SUV manual's rule).
    * PatientSize (0010,1020) must be in metres (0, :data:`HEIGHT_MAX_M`]; a value above it
      (e.g. centimetres or a weight typed into the wrong field) raises rather than being guessed.

Nothing else is guessed: a missing or absurd value raises :class:`SuvError` naming the tag, the
``source`` label and, where known, the file name (base name only).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

__all__ = [
    "SUV_TYPES",
    "SuvConversion",
    "SuvError",
    "body_surface_area_m2",
    "ideal_body_weight_kg",
    "lean_body_mass_kg",
    "suv_conversion",
    "to_suv",
]

#: Output SUV types: body weight, lean body mass (James, 128), body surface area (Du Bois), ideal body weight.
SUV_TYPES = ("bw", "lbm", "bsa", "ibw")

#: RadionuclideTotalDose values below this are in MBq (see module docstring).
DOSE_MBQ_BELOW = 1.0e5
#: Bq per MBq.
BQ_PER_MBQ = 1.0e6
#: Plausible administered activity after the unit fix (Bq): 1 MBq .. 100 GBq.
DOSE_MIN_BQ = 1.0e6
DOSE_MAX_BQ = 1.0e11
#: PatientWeight values above this are in grams.
WEIGHT_GRAMS_ABOVE = 1000.0
#: Grams per kilogram.
G_PER_KG = 1000.0
#: Largest plausible PatientSize (m).
HEIGHT_MAX_M = 3.0
#: Centimetres per metre.
CM_PER_M = 100.0
#: cm^2 per m^2.
CM2_PER_M2 = 1.0e4
#: Milliseconds per second (FrameReferenceTime and ActualFrameDuration are in ms).
MS_PER_S = 1000.0
#: An uptake time longer than this many half-lives (decay factor < 1/1024) is absurd.
MAX_UPTAKE_HALF_LIVES = 10.0
#: Below this lambda*T the frame-duration terms use their series expansion (avoids 0/0).
SMALL_LAMBDA_T = 1.0e-8

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

# --- body-size formulas (W in kg, H in cm) ---------------------------------------------------
#: Lean body mass, James (DICOM LBMJAMES128): male 1.10 W - 128 (W/H)^2, female 1.07 W - 148 (W/H)^2.
LBM_JAMES128 = {"M": (1.10, 128.0), "F": (1.07, 148.0)}
#: Lean body mass, Morgan (DICOM LBM): male 1.10 W - 120 (W/H)^2, female as James.
LBM_MORGAN = {"M": (1.10, 120.0), "F": (1.07, 148.0)}
#: Lean body mass, Janmahasatian: 9270 W / (a + b BMI), BMI = W / H_m^2.
LBM_JANMAHASATIAN = {"M": (6680.0, 216.0), "F": (8780.0, 244.0)}
LBM_JANMAHASATIAN_NUMERATOR = 9270.0
#: Ideal body weight (Devine): male 48.0 + 1.06 (H - 152), female 45.5 + 0.91 (H - 152).
IBW_DEVINE = {"M": (48.0, 1.06), "F": (45.5, 0.91)}
IBW_REFERENCE_HEIGHT_CM = 152.0
#: Body surface area, Du Bois (m^2): 0.007184 H^0.725 W^0.425.
BSA_DUBOIS = (0.007184, 0.725, 0.425)

_SEX_FEMALE, _SEX_MALE, _SEX_OTHER = "F", "M", "O"

#: SUVType (0054,1006) -> (body-size quantity, formula name) for GML images.
_GML_SUV_TYPES = {
    "": ("bw", "BW"),
    "BW": ("bw", "BW"),
    "LBMJAMES128": ("lbm_james128", "LBM James 128"),
    "LBM": ("lbm_morgan", "LBM Morgan 120"),
    "LBMJANMA": ("lbm_janma", "LBM Janmahasatian"),
    "IBW": ("ibw", "IBW"),
}

# reference-time rules (reported in SuvConversion.reference_time_source)
REF_GE_PRIVATE = "GE private PET scan datetime (0009,100D)"
REF_SERIES = "SeriesDate/SeriesTime (not later than the earliest acquisition)"
REF_SERIES_NO_ACQ = "SeriesDate/SeriesTime (no AcquisitionTime to compare with)"
REF_BACKCOMPUTED = "per-slice back-computation from AcquisitionTime, FrameReferenceTime, ActualFrameDuration"
REF_EARLIEST_ACQ = "earliest AcquisitionDate/AcquisitionTime"
REF_ADMIN = "injection (DecayCorrection ADMIN): dose not decayed"
REF_NONE = "each slice's own AcquisitionTime (DecayCorrection NONE), decayed back to injection"
REF_NOT_NEEDED = "not needed (values are already SUV)"


class SuvError(ValueError):
    """A PET series whose SUV cannot be computed; the message names the offending tag.

    Parameters
    ----------
    problem : str
        What is wrong.
    tag : str
        The DICOM attribute, e.g. ``"PatientWeight (0010,1030)"``.
    source : str
        A label for the series (pseudonym / series), never a patient identifier.
    file : str
        Base name of the file concerned, or ``""``.
    """

    def __init__(self, problem: str, tag: str = "", source: str = "", file: str = "") -> None:
        self.problem = str(problem)
        self.tag = str(tag)
        self.source = str(source)
        self.file = str(file)
        parts = [p for p in (self.source, self.file) if p]
        prefix = ": ".join(parts)
        body = f"{self.tag}: {self.problem}" if self.tag else self.problem
        super().__init__(f"{prefix}: {body}" if prefix else body)

    def __reduce__(self):  # keep the fields across process boundaries
        return (type(self), (self.problem, self.tag, self.source, self.file))


@dataclass(frozen=True)
class SuvConversion:
    """The SUV conversion of one PET series.

    Attributes
    ----------
    slice_factors : numpy.ndarray
        float64 ``(n_slices,)`` in the order of the datasets given;
        ``SUV = rescaled pixel value * factor`` (rescaled = after each slice's RescaleSlope and
        RescaleIntercept).
    suv_type : str
        ``"bw"``, ``"lbm"``, ``"bsa"`` or ``"ibw"``.
    units : str
        Units (0054,1001) as found.
    decay_correction : str
        DecayCorrection (0054,1102) as found (``""`` if absent).
    convention : str
        Short human-readable description of the convention met.
    reference_time_source : str
        Which rule chose the reference time.
    details : dict
        weight_kg, dose_bq, half_life_s, decay factors, the SUVbw factors, the output
        conversion and ``notes`` (unit fixes and other remarks). No dates or identifiers.
    """

    slice_factors: np.ndarray
    suv_type: str
    units: str
    decay_correction: str
    convention: str
    reference_time_source: str
    details: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# tag names and errors


def _tag_name(keyword: str) -> str:
    """``"PatientWeight"`` -> ``"PatientWeight (0010,1030)"``."""
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return keyword
    t = Tag(tag)
    return f"{keyword} ({t.group:04X},{t.element:04X})"


def _file_of(ds: Dataset | None) -> str:
    name = getattr(ds, "filename", None) if ds is not None else None
    return os.path.basename(str(name)) if isinstance(name, (str, os.PathLike)) and str(name) else ""


class _Ctx:
    """Carries the source label and the datasets for error messages."""

    def __init__(self, source: str, datasets: Sequence[Dataset]) -> None:
        self.source = source
        self.datasets = datasets

    def error(self, tag: str, problem: str, ds: Dataset | None = None) -> SuvError:
        return SuvError(problem, tag=tag, source=self.source, file=_file_of(ds if ds is not None else self.datasets[0]))


def _is_empty(value: Any) -> bool:
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


def _series_value(ctx: _Ctx, keyword: str, datasets: Sequence[Dataset] | None = None) -> Any:
    """The one non-empty value of a series-level attribute, or None; raises if slices disagree."""
    found = None
    for ds in datasets if datasets is not None else ctx.datasets:
        value = ds.get(keyword)
        if _is_empty(value):
            continue
        if found is None:
            found = value
        elif str(value).strip() != str(found).strip():
            raise ctx.error(
                _tag_name(keyword), f"differs between slices ({str(found).strip()!r} vs {str(value).strip()!r})", ds
            )
    return found


def _positive_float(ctx: _Ctx, value: Any, tag: str, ds: Dataset | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ctx.error(tag, f"not a number ({value!r})", ds) from None
    if not math.isfinite(number) or number <= 0:
        raise ctx.error(tag, f"must be a positive number, found {number!r}", ds)
    return number


# --------------------------------------------------------------------------------------------
# DICOM dates and times


def _parse_da(value: Any) -> date:
    text = str(value).strip().replace(".", "").replace("-", "")
    if len(text) != 8 or not text.isdigit():
        raise ValueError(f"not a DICOM date (DA): {value!r}")
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _parse_tm(value: Any) -> time:
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


def _parse_dt(value: Any) -> tuple[datetime, bool]:
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
    d = _parse_da(whole[:8])
    time_part = whole[8:]
    if time_part:
        t = _parse_tm(time_part + ("." + frac if frac else ""))
    else:
        t = time(0, 0)
    return datetime.combine(d, t), had_offset


def _seconds(delta: timedelta) -> float:
    return delta.total_seconds()


# --------------------------------------------------------------------------------------------
# private tags


def _private_value(ds: Dataset, group: int, element_low: int, creator: str, notes: list[str]) -> Any:
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
            return None if data is None or _is_empty(data.value) else data.value
    default_tag = (group, (DEFAULT_PRIVATE_BLOCK << 8) | element_low)
    data = ds.get(default_tag)
    if data is None or _is_empty(data.value):
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


def _private_text(value: Any) -> str:
    """Private values read as UN (implicit VR, no private dictionary) arrive as bytes."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("ascii", errors="replace").strip("\x00 ")
    return str(value).strip()


def _philips_factors(ctx: _Ctx, element_low: int, notes: list[str]) -> np.ndarray | None:
    """Per-slice Philips scale factor (7053,xx00 or xx09); None if absent on every slice, NaN where absent."""
    tag = f"({PHILIPS_GROUP:04X},{(DEFAULT_PRIVATE_BLOCK << 8) | element_low:04X})"
    values = np.full(len(ctx.datasets), np.nan)
    for i, ds in enumerate(ctx.datasets):
        raw = _private_value(ds, PHILIPS_GROUP, element_low, PHILIPS_CREATOR, notes)
        if raw is None:
            continue
        try:
            values[i] = float(_private_text(raw))
        except ValueError:
            raise ctx.error(f"Philips private {tag}", f"not a number ({raw!r})", ds) from None
    return None if np.all(np.isnan(values)) else values


# --------------------------------------------------------------------------------------------
# body size


def _sex_mean(formula, sex: str) -> float:
    if sex in (_SEX_MALE, _SEX_FEMALE):
        return formula(sex)
    return 0.5 * (formula(_SEX_MALE) + formula(_SEX_FEMALE))


def lean_body_mass_kg(weight_kg: float, height_cm: float, sex: str, variant: str = "james128") -> float:
    """Lean body mass (kg).

    Parameters
    ----------
    weight_kg, height_cm : float
        Body weight and height.
    sex : {"M", "F", "O"}
        ``"O"`` gives the mean of the male and female formulas.
    variant : {"james128", "morgan", "janma"}
        James (DICOM LBMJAMES128), Morgan (DICOM LBM) or Janmahasatian (DICOM LBMJANMA).

    Returns
    -------
    float
    """
    if variant == "janma":
        bmi = weight_kg / (height_cm / CM_PER_M) ** 2

        def one(s: str) -> float:
            a, b = LBM_JANMAHASATIAN[s]
            return LBM_JANMAHASATIAN_NUMERATOR * weight_kg / (a + b * bmi)

    else:
        table = {"james128": LBM_JAMES128, "morgan": LBM_MORGAN}[variant]

        def one(s: str) -> float:
            a, b = table[s]
            return a * weight_kg - b * (weight_kg / height_cm) ** 2

    return _sex_mean(one, sex)


def ideal_body_weight_kg(height_cm: float, sex: str) -> float:
    """Ideal body weight (kg), Devine; sex ``"O"`` is the mean of the male and female formulas."""

    def one(s: str) -> float:
        a, b = IBW_DEVINE[s]
        return a + b * (height_cm - IBW_REFERENCE_HEIGHT_CM)

    return _sex_mean(one, sex)


def body_surface_area_m2(weight_kg: float, height_cm: float) -> float:
    """Body surface area (m^2), Du Bois: 0.007184 H^0.725 W^0.425 (H cm, W kg)."""
    k, a, b = BSA_DUBOIS
    return k * height_cm**a * weight_kg**b


# --------------------------------------------------------------------------------------------
# patient and radiopharmaceutical values


def _weight_kg(ctx: _Ctx, notes: list[str]) -> float:
    tag = _tag_name("PatientWeight")
    value = _series_value(ctx, "PatientWeight")
    if value is None:
        raise ctx.error(tag, "missing or empty; SUV needs the patient's weight")
    weight = _positive_float(ctx, value, tag)
    if weight > WEIGHT_GRAMS_ABOVE:
        notes.append(f"PatientWeight {weight:g} > {WEIGHT_GRAMS_ABOVE:g}: read as grams")
        weight /= G_PER_KG
        if weight > WEIGHT_GRAMS_ABOVE:
            raise ctx.error(tag, f"absurd weight ({float(value):g}, more than a tonne even in grams)")
    return weight


def _height_cm(ctx: _Ctx) -> float:
    tag = _tag_name("PatientSize")
    value = _series_value(ctx, "PatientSize")
    if value is None:
        raise ctx.error(tag, "missing or empty; the patient's height (m) is needed for LBM/BSA/IBW")
    height_m = _positive_float(ctx, value, tag)
    if height_m > HEIGHT_MAX_M:
        raise ctx.error(tag, f"{height_m:g} is not a height in metres (> {HEIGHT_MAX_M:g} m); not guessing its unit")
    return height_m * CM_PER_M


def _sex(ctx: _Ctx) -> str:
    tag = _tag_name("PatientSex")
    value = _series_value(ctx, "PatientSex")
    if value is None:
        raise ctx.error(tag, "missing or empty; the patient's sex is needed for LBM/IBW")
    sex = str(value).strip().upper()
    if sex not in (_SEX_MALE, _SEX_FEMALE, _SEX_OTHER):
        raise ctx.error(tag, f"unknown value {sex!r} (expected M, F or O)")
    return sex


def _radiopharmaceutical(ctx: _Ctx, notes: list[str]) -> Dataset:
    tag = _tag_name("RadiopharmaceuticalInformationSequence")
    seq = ctx.datasets[0].get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise ctx.error(tag, "missing or empty; SUV needs the dose, half-life and injection time")
    if len(seq) > 1:
        notes.append(f"RadiopharmaceuticalInformationSequence has {len(seq)} items: the first is used")
    return seq[0]


def _dose_bq(ctx: _Ctx, item: Dataset, notes: list[str]) -> float:
    tag = _tag_name("RadionuclideTotalDose")
    value = item.get("RadionuclideTotalDose")
    if _is_empty(value):
        raise ctx.error(tag, "missing or empty; SUV needs the injected dose")
    dose = _positive_float(ctx, value, tag)
    if dose < DOSE_MBQ_BELOW:
        notes.append(f"RadionuclideTotalDose {dose:g} < {DOSE_MBQ_BELOW:g}: read as MBq")
        dose *= BQ_PER_MBQ
    if not DOSE_MIN_BQ <= dose <= DOSE_MAX_BQ:
        raise ctx.error(
            tag, f"absurd dose {float(value):g} (-> {dose:g} Bq, outside {DOSE_MIN_BQ:g}..{DOSE_MAX_BQ:g} Bq)"
        )
    return dose


def _half_life_s(ctx: _Ctx, item: Dataset) -> float:
    tag = _tag_name("RadionuclideHalfLife")
    value = item.get("RadionuclideHalfLife")
    if _is_empty(value):
        raise ctx.error(tag, "missing or empty; decay correction needs the radionuclide's half-life")
    return _positive_float(ctx, value, tag)


def _series_date(ctx: _Ctx) -> date | None:
    for keyword in ("SeriesDate", "AcquisitionDate", "StudyDate"):
        value = _series_value(ctx, keyword) if keyword == "SeriesDate" else ctx.datasets[0].get(keyword)
        if not _is_empty(value):
            try:
                return _parse_da(value)
            except ValueError as exc:
                raise ctx.error(_tag_name(keyword), str(exc)) from None
    return None


def _acquisition_datetimes(ctx: _Ctx, series_day: date | None) -> list[datetime | None]:
    """Per slice AcquisitionDateTime, else AcquisitionDate (else the series date) + AcquisitionTime."""
    out: list[datetime | None] = []
    for ds in ctx.datasets:
        dt_value = ds.get("AcquisitionDateTime")
        if not _is_empty(dt_value):
            try:
                out.append(_parse_dt(dt_value)[0])
            except ValueError as exc:
                raise ctx.error(_tag_name("AcquisitionDateTime"), str(exc), ds) from None
            continue
        tm_value = ds.get("AcquisitionTime")
        if _is_empty(tm_value):
            out.append(None)
            continue
        try:
            t = _parse_tm(tm_value)
        except ValueError as exc:
            raise ctx.error(_tag_name("AcquisitionTime"), str(exc), ds) from None
        da_value = ds.get("AcquisitionDate")
        if not _is_empty(da_value):
            try:
                day = _parse_da(da_value)
            except ValueError as exc:
                raise ctx.error(_tag_name("AcquisitionDate"), str(exc), ds) from None
        elif series_day is not None:
            day = series_day
        else:
            raise ctx.error(_tag_name("AcquisitionDate"), "missing, and no SeriesDate to stand in for it", ds)
        out.append(datetime.combine(day, t))
    return out


def _injection_datetime(
    ctx: _Ctx, item: Dataset, series_day: date | None, scan_start: datetime | None, notes: list[str]
) -> tuple[datetime, str]:
    """Injection datetime and the attribute it came from."""
    dt_value = item.get("RadiopharmaceuticalStartDateTime")
    if not _is_empty(dt_value):
        try:
            when, had_offset = _parse_dt(dt_value)
        except ValueError as exc:
            raise ctx.error(_tag_name("RadiopharmaceuticalStartDateTime"), str(exc)) from None
        if had_offset:
            notes.append("RadiopharmaceuticalStartDateTime carried a UTC offset; compared as local time")
        return when, "RadiopharmaceuticalStartDateTime"
    tm_value = item.get("RadiopharmaceuticalStartTime")
    if _is_empty(tm_value):
        raise ctx.error(
            f"{_tag_name('RadiopharmaceuticalStartDateTime')} / {_tag_name('RadiopharmaceuticalStartTime')}",
            "both missing; SUV needs the injection time",
        )
    try:
        t = _parse_tm(tm_value)
    except ValueError as exc:
        raise ctx.error(_tag_name("RadiopharmaceuticalStartTime"), str(exc)) from None
    if series_day is None:
        raise ctx.error(_tag_name("SeriesDate"), "missing; needed to date RadiopharmaceuticalStartTime")
    when = datetime.combine(series_day, t)
    if scan_start is not None and when > scan_start:
        when -= timedelta(days=1)
        notes.append("RadiopharmaceuticalStartTime later than the scan's time of day: injection taken the day before")
    return when, "RadiopharmaceuticalStartTime + series date"


def _check_uptake(ctx: _Ctx, elapsed_s: np.ndarray, half_life_s: float, inj_source: str, what: str) -> None:
    tag = _tag_name(inj_source.split(" ")[0])
    if np.any(elapsed_s < 0):
        raise ctx.error(tag, f"injection is {-float(np.min(elapsed_s)):.0f} s after the {what}")
    limit = MAX_UPTAKE_HALF_LIVES * half_life_s
    if np.any(elapsed_s > limit):
        raise ctx.error(
            tag,
            f"absurd uptake time {float(np.max(elapsed_s)):.0f} s from injection to the {what} "
            f"(> {MAX_UPTAKE_HALF_LIVES:g} half-lives)",
        )


# --------------------------------------------------------------------------------------------
# decay


def average_count_rate_time_s(frame_duration_s: np.ndarray, decay_constant_per_s: float) -> np.ndarray:
    """Time after frame start at which the activity equals its frame average (s).

    ``T_ave = ln(lambda*T / (1 - exp(-lambda*T))) / lambda``; ``T/2`` in the limit lambda*T -> 0.
    """
    duration = np.asarray(frame_duration_s, dtype=np.float64)
    x = decay_constant_per_s * duration
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = np.log(x / -np.expm1(-x)) / decay_constant_per_s
    return np.where(x < SMALL_LAMBDA_T, duration / 2.0, exact)


def frame_decay_factor(frame_duration_s: np.ndarray, decay_constant_per_s: float) -> np.ndarray:
    """``lambda*T / (1 - exp(-lambda*T))``: frame-average activity -> activity at frame start (1 when T -> 0)."""
    x = decay_constant_per_s * np.asarray(frame_duration_s, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = x / -np.expm1(-x)
    return np.where(x < SMALL_LAMBDA_T, 1.0 + x / 2.0, exact)


def _per_slice_float(ctx: _Ctx, keyword: str) -> np.ndarray | None:
    """Per-slice float values (NaN where missing); None if missing on every slice."""
    values = np.full(len(ctx.datasets), np.nan)
    for i, ds in enumerate(ctx.datasets):
        value = ds.get(keyword)
        if _is_empty(value):
            continue
        try:
            values[i] = float(value)
        except (TypeError, ValueError):
            raise ctx.error(_tag_name(keyword), f"not a number ({value!r})", ds) from None
    return None if np.all(np.isnan(values)) else values


def _reference_times_start(
    ctx: _Ctx,
    series_day: date | None,
    acq: list[datetime | None],
    decay_constant: float,
    notes: list[str],
) -> tuple[list[datetime], str]:
    """Reference datetime per slice for DecayCorrection START, and the rule that chose it."""
    n = len(ctx.datasets)
    # 1. GE private scan datetime
    ge_value = _private_value(ctx.datasets[0], GE_GROUP, GE_SCAN_DATETIME_ELEMENT, GE_CREATOR, notes)
    if ge_value is not None:
        try:
            when, _ = _parse_dt(_private_text(ge_value))
        except ValueError as exc:
            raise ctx.error("GE PET scan datetime (0009,100D)", str(exc)) from None
        return [when] * n, REF_GE_PRIVATE
    known_acq = [a for a in acq if a is not None]
    earliest = min(known_acq) if known_acq else None
    # 2. series date/time, unless later than the earliest acquisition
    series_time = _series_value(ctx, "SeriesTime")
    if not _is_empty(series_time) and series_day is not None:
        try:
            series_dt = datetime.combine(series_day, _parse_tm(series_time))
        except ValueError as exc:
            raise ctx.error(_tag_name("SeriesTime"), str(exc)) from None
        if earliest is None:
            return [series_dt] * n, REF_SERIES_NO_ACQ
        if series_dt <= earliest:
            return [series_dt] * n, REF_SERIES
        notes.append(
            f"SeriesTime is {_seconds(series_dt - earliest):.0f} s after the earliest AcquisitionTime "
            "(post-processed series?): not used"
        )
    # 3. per-slice back-computation
    frame_ref_ms = _per_slice_float(ctx, "FrameReferenceTime")
    duration_ms = _per_slice_float(ctx, "ActualFrameDuration")
    if (
        frame_ref_ms is not None
        and duration_ms is not None
        and not np.any(np.isnan(frame_ref_ms))
        and not np.any(np.isnan(duration_ms))
        and all(a is not None for a in acq)
    ):
        if np.any(duration_ms <= 0):
            i = int(np.flatnonzero(duration_ms <= 0)[0])
            raise ctx.error(
                _tag_name("ActualFrameDuration"), f"must be > 0, found {duration_ms[i]:g}", ctx.datasets[i]
            )
        t_ave = average_count_rate_time_s(duration_ms / MS_PER_S, decay_constant)
        offsets = t_ave - frame_ref_ms / MS_PER_S
        refs = [a + timedelta(seconds=float(o)) for a, o in zip(acq, offsets)]  # type: ignore[operator]
        return refs, REF_BACKCOMPUTED
    # 4. earliest acquisition
    if earliest is not None:
        return [earliest] * n, REF_EARLIEST_ACQ
    raise ctx.error(
        f"{_tag_name('SeriesTime')} / {_tag_name('AcquisitionTime')}",
        "no usable reference time for DecayCorrection START",
    )


def _activity_factors(
    ctx: _Ctx, weight_kg: float, details: dict, notes: list[str]
) -> tuple[np.ndarray, str, str, str]:
    """SUVbw factors per slice for images in Bq/mL. Returns (factors, decay_correction, ref_source, conv)."""
    item = _radiopharmaceutical(ctx, notes)
    dose_bq = _dose_bq(ctx, item, notes)
    decay_value = _series_value(ctx, "DecayCorrection")
    if decay_value is None:
        raise ctx.error(_tag_name("DecayCorrection"), "missing or empty; cannot tell when the activity applies")
    decay_correction = str(decay_value).strip().upper()
    if decay_correction not in ("START", "ADMIN", "NONE"):
        raise ctx.error(
            _tag_name("DecayCorrection"), f"unknown value {decay_correction!r} (expected START, ADMIN, NONE)"
        )
    weight_g = weight_kg * G_PER_KG
    details.update(dose_bq=dose_bq, weight_kg=weight_kg)
    corrected = [str(v).upper() for v in (ctx.datasets[0].get("CorrectedImage") or [])]
    if corrected and decay_correction in ("START", "ADMIN") and "DECY" not in corrected:
        notes.append(f"DecayCorrection {decay_correction} but CorrectedImage (0028,0051) lacks DECY")
    if decay_correction == "NONE" and "DECY" in corrected:
        notes.append("DecayCorrection NONE but CorrectedImage (0028,0051) lists DECY; DecayCorrection followed")

    series_day = _series_date(ctx)
    n = len(ctx.datasets)
    if decay_correction == "ADMIN":
        # times are not needed; still check them when present
        acq = _acquisition_datetimes(ctx, series_day)
        known = [a for a in acq if a is not None]
        has_injection = not _is_empty(item.get("RadiopharmaceuticalStartDateTime")) or not _is_empty(
            item.get("RadiopharmaceuticalStartTime")
        )
        if known and has_injection and series_day is not None:
            inj, inj_source = _injection_datetime(ctx, item, series_day, min(known), notes)
            if min(known) < inj:
                raise ctx.error(_tag_name(inj_source.split(" ")[0]), "injection is after the acquisition")
        details.update(decay_factors=np.ones(n))
        return np.full(n, weight_g / dose_bq), decay_correction, REF_ADMIN, "dose as administered"

    half_life_s = _half_life_s(ctx, item)
    decay_constant = math.log(2.0) / half_life_s
    details.update(half_life_s=half_life_s)
    acq = _acquisition_datetimes(ctx, series_day)
    known = [a for a in acq if a is not None]
    scan_start = min(known) if known else None
    if scan_start is None and not _is_empty(_series_value(ctx, "SeriesTime")) and series_day is not None:
        try:
            scan_start = datetime.combine(series_day, _parse_tm(_series_value(ctx, "SeriesTime")))
        except ValueError as exc:
            raise ctx.error(_tag_name("SeriesTime"), str(exc)) from None

    if decay_correction == "START":
        refs, ref_source = _reference_times_start(ctx, series_day, acq, decay_constant, notes)
        inj, inj_source = _injection_datetime(ctx, item, series_day, scan_start, notes)
        elapsed = np.array([_seconds(r - inj) for r in refs])
        _check_uptake(ctx, elapsed, half_life_s, inj_source, "reference time")
        decay = np.exp(-decay_constant * elapsed)
        details.update(uptake_s=elapsed, decay_factors=decay)
        if len(np.unique(np.round(elapsed, 3))) > 1:
            notes.append(
                f"reference times differ between slices by up to {float(np.ptp(elapsed)):.3f} s"
            )
        return weight_g / (dose_bq * decay), decay_correction, ref_source, f"dose from {inj_source}"

    # NONE: each slice decayed back to injection
    missing = [i for i, a in enumerate(acq) if a is None]
    if missing:
        raise ctx.error(
            _tag_name("AcquisitionTime"),
            "missing; DecayCorrection NONE decays each slice from its own acquisition time",
            ctx.datasets[missing[0]],
        )
    duration_ms = _per_slice_float(ctx, "ActualFrameDuration")
    if duration_ms is None or np.any(np.isnan(duration_ms)):
        i = 0 if duration_ms is None else int(np.flatnonzero(np.isnan(duration_ms))[0])
        raise ctx.error(
            _tag_name("ActualFrameDuration"),
            "missing; DecayCorrection NONE needs each frame's duration",
            ctx.datasets[i],
        )
    if np.any(duration_ms <= 0):
        i = int(np.flatnonzero(duration_ms <= 0)[0])
        raise ctx.error(_tag_name("ActualFrameDuration"), f"must be > 0, found {duration_ms[i]:g}", ctx.datasets[i])
    inj, inj_source = _injection_datetime(ctx, item, series_day, scan_start, notes)
    elapsed = np.array([_seconds(a - inj) for a in acq])  # type: ignore[operator]
    _check_uptake(ctx, elapsed, half_life_s, inj_source, "acquisition")
    frame = frame_decay_factor(duration_ms / MS_PER_S, decay_constant)
    undecay = frame * np.exp(decay_constant * elapsed)
    details.update(uptake_s=elapsed, decay_factors=1.0 / undecay, frame_duration_s=duration_ms / MS_PER_S)
    return weight_g / dose_bq * undecay, decay_correction, REF_NONE, f"dose from {inj_source}"


# --------------------------------------------------------------------------------------------
# body-size conversions


def _body_size_kg_or_cm2(ctx: _Ctx, quantity: str, weight_kg: float) -> float:
    """LBM/IBW in kg or BSA in cm^2 for this patient; raises if not physical."""
    height_cm = _height_cm(ctx)
    if quantity == "bsa":
        value = body_surface_area_m2(weight_kg, height_cm) * CM2_PER_M2
        tags = f"{_tag_name('PatientWeight')} / {_tag_name('PatientSize')}"
    elif quantity == "ibw":
        value = ideal_body_weight_kg(height_cm, _sex(ctx))
        tags = f"{_tag_name('PatientSize')} / {_tag_name('PatientSex')}"
    else:
        variant = {"lbm_james128": "james128", "lbm": "james128", "lbm_morgan": "morgan", "lbm_janma": "janma"}[
            quantity
        ]
        value = lean_body_mass_kg(weight_kg, height_cm, _sex(ctx), variant)
        tags = f"{_tag_name('PatientWeight')} / {_tag_name('PatientSize')} / {_tag_name('PatientSex')}"
    if not math.isfinite(value) or value <= 0:
        raise ctx.error(tags, f"{quantity} formula gives {value:g} (not positive) for this weight/height")
    return value


def _bw_to_output_factor(ctx: _Ctx, suv_type: str, weight_kg: float, details: dict) -> float:
    """Multiplier from SUVbw to the requested SUV type."""
    if suv_type == "bw":
        return 1.0
    if suv_type == "bsa":
        bsa_cm2 = _body_size_kg_or_cm2(ctx, "bsa", weight_kg)
        details["bsa_cm2"] = bsa_cm2
        return bsa_cm2 / (weight_kg * G_PER_KG)
    size_kg = _body_size_kg_or_cm2(ctx, suv_type, weight_kg)
    details[f"{suv_type}_kg"] = size_kg
    return size_kg / weight_kg


# --------------------------------------------------------------------------------------------
# public API


def suv_conversion(pet_datasets: Sequence[Dataset], suv_type: str = "bw", *, source: str = "") -> SuvConversion:
    """Per-slice factors that turn a PET series' rescaled pixel values into SUV.

    Parameters
    ----------
    pet_datasets : sequence of pydicom.dataset.Dataset
        Headers of one PET series (pixel data may be absent), sorted by slice position.
    suv_type : {"bw", "lbm", "bsa", "ibw"}
        Output SUV: body weight (g/mL, default), lean body mass (James 128, g/mL), body surface
        area (Du Bois, cm^2/mL) or ideal body weight (Devine, g/mL).
    source : str
        Label for error messages (pseudonym / series); never a patient identifier.

    Returns
    -------
    SuvConversion
        ``SUV = (stored * RescaleSlope + RescaleIntercept) * slice_factors[i]`` for slice ``i``.

    Raises
    ------
    SuvError
        Missing or absurd values, naming the tag (and file where known); see the module docstring
        for every rule.
    """
    datasets = list(pet_datasets)
    if not datasets:
        raise SuvError("no datasets given", source=source)
    ctx = _Ctx(source, datasets)
    wanted = str(suv_type).strip().lower()
    if wanted not in SUV_TYPES:
        raise SuvError(f"unknown suv_type {suv_type!r} (expected one of {', '.join(SUV_TYPES)})", source=source)
    for ds in datasets:
        modality = ds.get("Modality")
        if not _is_empty(modality) and str(modality).strip().upper() != "PT":
            raise ctx.error(_tag_name("Modality"), f"{str(modality).strip()!r} is not a PET image (PT)", ds)

    units_value = _series_value(ctx, "Units")
    if units_value is None:
        raise ctx.error(_tag_name("Units"), "missing or empty; cannot tell what the pixel values are")
    units = str(units_value).strip().upper()
    notes: list[str] = []
    details: dict[str, Any] = {"notes": notes}
    decay_value = _series_value(ctx, "DecayCorrection")
    decay_found = "" if decay_value is None else str(decay_value).strip().upper()
    n = len(datasets)
    weight_kg: float | None = None

    if units == "BQML":
        weight_kg = _weight_kg(ctx, notes)
        bw, decay_correction, ref_source, dose_text = _activity_factors(ctx, weight_kg, details, notes)
        convention = f"BQML, decay {decay_correction}, {dose_text}"
    elif units == "CNTS":
        suv_sf = _philips_factors(ctx, PHILIPS_SUV_SCALE_ELEMENT, notes)
        acsf = _philips_factors(ctx, PHILIPS_ACTIVITY_SCALE_ELEMENT, notes)
        usable_suv = suv_sf is not None and bool(np.all(suv_sf > 0))
        usable_acsf = acsf is not None and bool(np.all(acsf > 0))
        if usable_suv:
            bw = suv_sf.copy()
            decay_correction, ref_source = decay_found, REF_NOT_NEEDED
            convention = "CNTS, Philips SUV scale factor (7053,1000)"
            details["philips_suv_scale_factor"] = bw.copy()
        elif usable_acsf:
            weight_kg = _weight_kg(ctx, notes)
            scale = acsf.copy()
            activity_bw, decay_correction, ref_source, dose_text = _activity_factors(ctx, weight_kg, details, notes)
            bw = scale * activity_bw
            details["philips_activity_scale_factor"] = scale
            convention = (
                "CNTS, Philips activity concentration scale factor (7053,1009) then BQML, "
                f"decay {decay_correction}, {dose_text}"
            )
        else:
            raise ctx.error(
                "Philips SUV Scale Factor (7053,1000) / Activity Concentration Scale Factor (7053,1009)",
                "Units CNTS but neither scale factor is present and > 0 on every slice; counts cannot be converted",
            )
    elif units == "GML":
        suv_type_value = _series_value(ctx, "SUVType")
        stored_type = "" if suv_type_value is None else str(suv_type_value).strip().upper()
        if stored_type not in _GML_SUV_TYPES:
            known = ", ".join(k for k in _GML_SUV_TYPES if k)
            raise ctx.error(_tag_name("SUVType"), f"{stored_type!r} is not an SUV type of Units GML ({known})")
        quantity, label = _GML_SUV_TYPES[stored_type]
        decay_correction, ref_source = decay_found, REF_NOT_NEEDED
        if quantity == "bw":
            bw = np.ones(n)
        else:
            weight_kg = _weight_kg(ctx, notes)
            size_kg = _body_size_kg_or_cm2(ctx, quantity, weight_kg)
            details[f"stored_{quantity}_kg"] = size_kg
            bw = np.full(n, weight_kg / size_kg)
        convention = f"GML (SUV{label}), {'used as is' if quantity == 'bw' else 'converted back to SUVbw'}"
        details["stored_suv_type"] = stored_type or "(empty: BW)"
    elif units == "CM2ML":
        suv_type_value = _series_value(ctx, "SUVType")
        stored_type = "" if suv_type_value is None else str(suv_type_value).strip().upper()
        if stored_type not in ("", "BSA"):
            raise ctx.error(_tag_name("SUVType"), f"{stored_type!r} contradicts Units CM2ML (SUVbsa)")
        weight_kg = _weight_kg(ctx, notes)
        bsa_cm2 = _body_size_kg_or_cm2(ctx, "bsa", weight_kg)
        details["stored_bsa_cm2"] = bsa_cm2
        bw = np.full(n, weight_kg * G_PER_KG / bsa_cm2)
        decay_correction, ref_source = decay_found, REF_NOT_NEEDED
        convention = "CM2ML (SUVbsa, Du Bois), converted back to SUVbw"
    else:
        raise ctx.error(_tag_name("Units"), f"unsupported units {units!r} (supported: BQML, CNTS, GML, CM2ML)")

    if units == "BQML":
        ignored = [
            f"({PHILIPS_GROUP:04X},{(DEFAULT_PRIVATE_BLOCK << 8) | e:04X})"
            for e in (PHILIPS_SUV_SCALE_ELEMENT, PHILIPS_ACTIVITY_SCALE_ELEMENT)
            if (PHILIPS_GROUP, (DEFAULT_PRIVATE_BLOCK << 8) | e) in datasets[0]
        ]
        if ignored:
            notes.append(f"Units BQML: Philips private {', '.join(ignored)} ignored")

    if wanted != "bw":
        if weight_kg is None:
            weight_kg = _weight_kg(ctx, notes)
        details.setdefault("weight_kg", weight_kg)
    out = _bw_to_output_factor(ctx, wanted, weight_kg if weight_kg is not None else float("nan"), details)
    factors = np.asarray(bw, dtype=np.float64) * out
    if not np.all(np.isfinite(factors)) or np.any(factors <= 0):
        raise ctx.error(_tag_name("Units"), f"conversion gives non-positive or non-finite factors {factors}")
    details.update(suv_bw_factors=np.asarray(bw, dtype=np.float64), bw_to_output=out)
    if weight_kg is not None:
        details.setdefault("weight_kg", weight_kg)
    if wanted != "bw":
        convention += f"; SUVbw -> SUV{wanted} x {out:.6g}"
    return SuvConversion(
        slice_factors=factors,
        suv_type=wanted,
        units=str(units_value).strip(),
        decay_correction=decay_correction,
        convention=convention,
        reference_time_source=ref_source,
        details=details,
    )


def to_suv(rescaled_zyx: np.ndarray, conversion: SuvConversion) -> np.ndarray:
    """Apply a :class:`SuvConversion` to a ``(z, y, x)`` volume of rescaled pixel values.

    Parameters
    ----------
    rescaled_zyx : numpy.ndarray
        Pixel values after each slice's RescaleSlope/RescaleIntercept, slices in the order of the
        datasets the conversion was computed from.
    conversion : SuvConversion

    Returns
    -------
    numpy.ndarray
        float32 SUV volume (computed in float64).
    """
    volume = np.asarray(rescaled_zyx)
    factors = conversion.slice_factors
    if volume.ndim != 3 or volume.shape[0] != factors.shape[0]:
        raise ValueError(f"volume of shape {volume.shape} does not match {factors.shape[0]} slice factors")
    return (volume.astype(np.float64) * factors[:, None, None]).astype(np.float32)
