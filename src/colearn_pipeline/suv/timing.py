"""Time rules of the SUV: injection time, the decay-correction reference time and the frame terms.

The reference time for DecayCorrection START is chosen by the first rule that applies:

1. the GE private PET scan datetime (0009,100D) (creator ``GEMS_PETD_01``) if present;
2. SeriesDate/SeriesTime if not later than the earliest acquisition datetime;
3. per slice, ``t_ref = t_acq + T_ave - dt`` from AcquisitionTime, FrameReferenceTime ``dt`` and
   ActualFrameDuration ``T`` when every slice has all three and they are consistent, i.e. the
   reference is not after the frame's start (``dt >= T_ave``); a FrameReferenceTime of 0 or one
   shorter than the frame's average-count time (a post-processed series) is noted and skipped;
4. the earliest acquisition datetime (QIBA).

``T_ave = ln(lambda*T / (1 - exp(-lambda*T))) / lambda`` is the time after the frame start at
which the activity equals its frame average.
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
from pydicom.dataset import Dataset

from colearn_pipeline.suv.headers import (
    GE_CREATOR,
    GE_GROUP,
    GE_SCAN_DATETIME_ELEMENT,
    HeaderContext,
    acquisition_datetimes,
    is_empty,
    parse_dt,
    parse_tm,
    per_slice_float,
    private_text,
    private_value,
    seconds,
    series_date,
    series_value,
    tag_name,
)
from colearn_pipeline.suv.patient import G_PER_KG, dose_bq, half_life_s, radiopharmaceutical
from colearn_pipeline.suv.plausibility import SuvPlausibility

#: Milliseconds per second (FrameReferenceTime and ActualFrameDuration are in ms).
MS_PER_S = 1000.0
#: An uptake time longer than this many half-lives (decay factor < 1/1024) is absurd.
MAX_UPTAKE_HALF_LIVES = 10.0
#: Below this lambda*T the frame-duration terms use their series expansion (avoids 0/0).
SMALL_LAMBDA_T = 1.0e-8
#: A back-computed reference may lie this much after its frame's start (DS rounding of
#: FrameReferenceTime) before FrameReferenceTime counts as inconsistent with ActualFrameDuration.
FRAME_REFERENCE_SLACK_S = 1.0

# reference-time rules (reported in SuvConversion.reference_time_source)
REF_GE_PRIVATE = "GE private PET scan datetime (0009,100D)"
REF_SERIES = "SeriesDate/SeriesTime (not later than the earliest acquisition)"
REF_SERIES_NO_ACQ = "SeriesDate/SeriesTime (no AcquisitionTime to compare with)"
REF_BACKCOMPUTED = "per-slice back-computation from AcquisitionTime, FrameReferenceTime, ActualFrameDuration"
REF_EARLIEST_ACQ = "earliest AcquisitionDate/AcquisitionTime"
REF_ADMIN = "injection (DecayCorrection ADMIN): dose not decayed"
REF_NONE = "each slice's own AcquisitionTime (DecayCorrection NONE), decayed back to injection"
REF_NOT_NEEDED = "not needed (values are already SUV)"


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



def injection_datetime(
    ctx: HeaderContext, item: Dataset, series_day: date | None, scan_start: datetime | None, notes: list[str]
) -> tuple[datetime, str]:
    """Injection datetime and the attribute it came from."""
    dt_value = item.get("RadiopharmaceuticalStartDateTime")
    if not is_empty(dt_value):
        try:
            when, had_offset = parse_dt(dt_value)
        except ValueError as exc:
            raise ctx.error(tag_name("RadiopharmaceuticalStartDateTime"), str(exc)) from None
        if had_offset:
            notes.append("RadiopharmaceuticalStartDateTime carried a UTC offset; compared as local time")
        return when, "RadiopharmaceuticalStartDateTime"
    tm_value = item.get("RadiopharmaceuticalStartTime")
    if is_empty(tm_value):
        raise ctx.error(
            f"{tag_name('RadiopharmaceuticalStartDateTime')} / {tag_name('RadiopharmaceuticalStartTime')}",
            "both missing; SUV needs the injection time",
        )
    try:
        t = parse_tm(tm_value)
    except ValueError as exc:
        raise ctx.error(tag_name("RadiopharmaceuticalStartTime"), str(exc)) from None
    if series_day is None:
        raise ctx.error(tag_name("SeriesDate"), "missing; needed to date RadiopharmaceuticalStartTime")
    when = datetime.combine(series_day, t)
    if scan_start is not None and when > scan_start:
        when -= timedelta(days=1)
        notes.append("RadiopharmaceuticalStartTime later than the scan's time of day: injection taken the day before")
    return when, "RadiopharmaceuticalStartTime + series date"


def check_uptake(ctx: HeaderContext, elapsed_s: np.ndarray, half_life_s: float, inj_source: str, what: str) -> None:
    tag = tag_name(inj_source.split(" ")[0])
    if np.any(elapsed_s < 0):
        raise ctx.error(tag, f"injection is {-float(np.min(elapsed_s)):.0f} s after the {what}")
    limit = MAX_UPTAKE_HALF_LIVES * half_life_s
    if np.any(elapsed_s > limit):
        raise ctx.error(
            tag,
            f"absurd uptake time {float(np.max(elapsed_s)):.0f} s from injection to the {what} "
            f"(> {MAX_UPTAKE_HALF_LIVES:g} half-lives)",
        )



def reference_times_start(
    ctx: HeaderContext,
    series_day: date | None,
    acq: list[datetime | None],
    decay_constant: float,
    notes: list[str],
) -> tuple[list[datetime], str]:
    """Reference datetime per slice for DecayCorrection START, and the rule that chose it."""
    n = len(ctx.datasets)
    ge_value = private_value(ctx.datasets[0], GE_GROUP, GE_SCAN_DATETIME_ELEMENT, GE_CREATOR, notes)
    if ge_value is not None:
        try:
            when, _ = parse_dt(private_text(ge_value))
        except ValueError as exc:
            raise ctx.error("GE PET scan datetime (0009,100D)", str(exc)) from None
        return [when] * n, REF_GE_PRIVATE
    known_acq = [a for a in acq if a is not None]
    earliest = min(known_acq) if known_acq else None
    series_time = series_value(ctx, "SeriesTime")
    if not is_empty(series_time) and series_day is not None:
        try:
            series_dt = datetime.combine(series_day, parse_tm(series_time))
        except ValueError as exc:
            raise ctx.error(tag_name("SeriesTime"), str(exc)) from None
        if earliest is None:
            return [series_dt] * n, REF_SERIES_NO_ACQ
        if series_dt <= earliest:
            return [series_dt] * n, REF_SERIES
        notes.append(
            f"SeriesTime is {seconds(series_dt - earliest):.0f} s after the earliest AcquisitionTime "
            "(post-processed series?): not used"
        )
    backcomputed = _backcomputed_references(ctx, acq, decay_constant, notes)
    if backcomputed is not None:
        return backcomputed, REF_BACKCOMPUTED
    if earliest is not None:
        return [earliest] * n, REF_EARLIEST_ACQ
    raise ctx.error(
        f"{tag_name('SeriesTime')} / {tag_name('AcquisitionTime')}",
        "no usable reference time for DecayCorrection START",
    )


def _backcomputed_references(
    ctx: HeaderContext, acq: list[datetime | None], decay_constant: float, notes: list[str]
) -> list[datetime] | None:
    """``t_acq + T_ave - FrameReferenceTime`` per slice; None when a value is missing or inconsistent."""
    frame_ref_ms = per_slice_float(ctx, "FrameReferenceTime")
    duration_ms = per_slice_float(ctx, "ActualFrameDuration")
    if (
        frame_ref_ms is None
        or duration_ms is None
        or np.any(np.isnan(frame_ref_ms))
        or np.any(np.isnan(duration_ms))
        or any(a is None for a in acq)
    ):
        return None
    if np.any(duration_ms <= 0):
        i = int(np.flatnonzero(duration_ms <= 0)[0])
        raise ctx.error(tag_name("ActualFrameDuration"), f"must be > 0, found {duration_ms[i]:g}", ctx.datasets[i])
    t_ave_s = average_count_rate_time_s(duration_ms / MS_PER_S, decay_constant)
    offsets_s = t_ave_s - frame_ref_ms / MS_PER_S
    if np.any(offsets_s > FRAME_REFERENCE_SLACK_S):
        i = int(np.argmax(offsets_s))
        notes.append(
            f"FrameReferenceTime {frame_ref_ms[i]:g} ms is shorter than the average-count time "
            f"{t_ave_s[i] * MS_PER_S:.0f} ms of its ActualFrameDuration {duration_ms[i]:g} ms (slice {i}): "
            "it would put the reference after the frame's start; earliest AcquisitionTime used (QIBA)"
        )
        return None
    return [a + timedelta(seconds=float(o)) for a, o in zip(acq, offsets_s)]  # type: ignore[operator]


def _decay_correction(ctx: HeaderContext, notes: list[str]) -> str:
    """DecayCorrection (0054,1102): START, ADMIN or NONE; CorrectedImage disagreements are noted."""
    value = series_value(ctx, "DecayCorrection")
    if value is None:
        raise ctx.error(tag_name("DecayCorrection"), "missing or empty; cannot tell when the activity applies")
    decay_correction = str(value).strip().upper()
    if decay_correction not in ("START", "ADMIN", "NONE"):
        raise ctx.error(tag_name("DecayCorrection"), f"unknown value {decay_correction!r} (expected START, ADMIN, NONE)")
    corrected = [str(v).upper() for v in (ctx.datasets[0].get("CorrectedImage") or [])]
    if corrected and decay_correction in ("START", "ADMIN") and "DECY" not in corrected:
        notes.append(f"DecayCorrection {decay_correction} but CorrectedImage (0028,0051) lacks DECY")
    if decay_correction == "NONE" and "DECY" in corrected:
        notes.append("DecayCorrection NONE but CorrectedImage (0028,0051) lists DECY; DecayCorrection followed")
    return decay_correction


def activity_factors(
    ctx: HeaderContext, weight_kg: float, details: dict, notes: list[str], plausibility: SuvPlausibility | None
) -> tuple[np.ndarray, str, str, str]:
    """SUVbw factors per slice for images in Bq/mL.

    Returns
    -------
    factors, decay_correction, reference_time_source, dose_text
    """
    item = radiopharmaceutical(ctx, notes)
    dose = dose_bq(ctx, item, notes, plausibility)
    decay_correction = _decay_correction(ctx, notes)
    details.update(dose_bq=dose, weight_kg=weight_kg)
    bw_at_injection = weight_kg * G_PER_KG / dose
    series_day = series_date(ctx)
    acq = acquisition_datetimes(ctx, series_day)
    if decay_correction == "ADMIN":
        _check_admin_times(ctx, item, series_day, acq, notes)
        details.update(decay_factors=np.ones(len(ctx.datasets)))
        return np.full(len(ctx.datasets), bw_at_injection), decay_correction, REF_ADMIN, "dose as administered"
    half_life = half_life_s(ctx, item, notes, plausibility)
    decay_constant = math.log(2.0) / half_life
    details.update(half_life_s=half_life)
    scan_start = _scan_start(ctx, acq, series_day)
    inj, inj_source = injection_datetime(ctx, item, series_day, scan_start, notes)
    if decay_correction == "START":
        refs, ref_source = reference_times_start(ctx, series_day, acq, decay_constant, notes)
        elapsed = np.array([seconds(r - inj) for r in refs])
        check_uptake(ctx, elapsed, half_life, inj_source, "reference time")
        decay = np.exp(-decay_constant * elapsed)
        details.update(uptake_s=elapsed, decay_factors=decay)
        if len(np.unique(np.round(elapsed, 3))) > 1:
            notes.append(f"reference times differ between slices by up to {float(np.ptp(elapsed)):.3f} s")
        return bw_at_injection / decay, decay_correction, ref_source, f"dose from {inj_source}"
    undecay = _undecay_from_each_acquisition(ctx, acq, inj, inj_source, half_life, details)
    return bw_at_injection * undecay, decay_correction, REF_NONE, f"dose from {inj_source}"


def _scan_start(ctx: HeaderContext, acq: list[datetime | None], series_day: date | None) -> datetime | None:
    """Earliest acquisition datetime, else the series datetime, else None."""
    known = [a for a in acq if a is not None]
    if known:
        return min(known)
    series_time = series_value(ctx, "SeriesTime")
    if is_empty(series_time) or series_day is None:
        return None
    try:
        return datetime.combine(series_day, parse_tm(series_time))
    except ValueError as exc:
        raise ctx.error(tag_name("SeriesTime"), str(exc)) from None


def _check_admin_times(
    ctx: HeaderContext, item: Dataset, series_day: date | None, acq: list[datetime | None], notes: list[str]
) -> None:
    """ADMIN needs no times; when present, an injection after the acquisition still raises."""
    known = [a for a in acq if a is not None]
    has_injection = not is_empty(item.get("RadiopharmaceuticalStartDateTime")) or not is_empty(
        item.get("RadiopharmaceuticalStartTime")
    )
    if known and has_injection and series_day is not None:
        inj, inj_source = injection_datetime(ctx, item, series_day, min(known), notes)
        if min(known) < inj:
            raise ctx.error(tag_name(inj_source.split(" ")[0]), "injection is after the acquisition")


def _undecay_from_each_acquisition(
    ctx: HeaderContext, acq: list[datetime | None], inj: datetime, inj_source: str, half_life: float, details: dict
) -> np.ndarray:
    """DecayCorrection NONE: ``lambda*T / (1 - exp(-lambda*T)) * exp(lambda (t_acq - t_inj))`` per slice."""
    missing = [i for i, a in enumerate(acq) if a is None]
    if missing:
        raise ctx.error(
            tag_name("AcquisitionTime"),
            "missing; DecayCorrection NONE decays each slice from its own acquisition time",
            ctx.datasets[missing[0]],
        )
    duration_ms = per_slice_float(ctx, "ActualFrameDuration")
    if duration_ms is None or np.any(np.isnan(duration_ms)):
        i = 0 if duration_ms is None else int(np.flatnonzero(np.isnan(duration_ms))[0])
        raise ctx.error(
            tag_name("ActualFrameDuration"), "missing; DecayCorrection NONE needs each frame's duration", ctx.datasets[i]
        )
    if np.any(duration_ms <= 0):
        i = int(np.flatnonzero(duration_ms <= 0)[0])
        raise ctx.error(tag_name("ActualFrameDuration"), f"must be > 0, found {duration_ms[i]:g}", ctx.datasets[i])
    decay_constant = math.log(2.0) / half_life
    elapsed = np.array([seconds(a - inj) for a in acq])  # type: ignore[operator]
    check_uptake(ctx, elapsed, half_life, inj_source, "acquisition")
    undecay = frame_decay_factor(duration_ms / MS_PER_S, decay_constant) * np.exp(decay_constant * elapsed)
    details.update(uptake_s=elapsed, decay_factors=1.0 / undecay, frame_duration_s=duration_ms / MS_PER_S)
    return undecay
