"""Patient and radiopharmaceutical values of a PET series, with their unit rules and plausibility.

Without a :class:`SuvPlausibility` only what is physically impossible is refused (the limits
below); with one, every value must also lie in its configured range. Each refusal names the
tag, the value as found and the range.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from colearn_pipeline.suv.body_size import CM_PER_M
from colearn_pipeline.suv.headers import HeaderContext, is_empty, positive_float, series_value, tag_name
from colearn_pipeline.suv.plausibility import MBQ_PER_MCI, SuvPlausibility

#: RadionuclideTotalDose values below this are in MBq (``dose_unit: auto``): human PET
#: activities are 1e7..1e10 Bq, so 0.1 MBq read as Bq and 100 GBq read as MBq cannot be confused.
DOSE_MBQ_BELOW = 1.0e5
#: Bq per MBq.
BQ_PER_MBQ = 1.0e6
#: Physically possible administered activity (Bq) when no plausibility ranges are given.
DOSE_MIN_BQ = 1.0e6
DOSE_MAX_BQ = 1.0e11
#: PatientWeight values above this are in grams (no person weighs a tonne; IBSI-SUV rule).
WEIGHT_GRAMS_ABOVE = 1000.0
#: Grams per kilogram.
G_PER_KG = 1000.0
#: Largest possible PatientSize (m) when no plausibility ranges are given.
HEIGHT_MAX_M = 3.0

SEX_FEMALE, SEX_MALE, SEX_OTHER = "F", "M", "O"


def _required_positive(ctx: HeaderContext, keyword: str, value, why: str) -> tuple[str, float]:
    """The tag name and the positive number of a required attribute; missing or empty is refused with ``why``."""
    tag = tag_name(keyword)
    if value is None or is_empty(value):
        raise ctx.error(tag, f"missing or empty; {why}")
    return tag, positive_float(ctx, value, tag)


def weight_kg(ctx: HeaderContext, notes: list[str], plausibility: SuvPlausibility | None) -> float:
    """PatientWeight (0010,1030) in kg (a value above 1000 is read as grams, noted)."""
    value = series_value(ctx, "PatientWeight")
    tag, weight = _required_positive(ctx, "PatientWeight", value, "SUV needs the patient's weight")
    if weight > WEIGHT_GRAMS_ABOVE:
        notes.append(f"PatientWeight {weight:g} > {WEIGHT_GRAMS_ABOVE:g}: read as grams")
        weight /= G_PER_KG
        if weight > WEIGHT_GRAMS_ABOVE:
            raise ctx.error(tag, f"absurd weight ({float(value):g}, more than a tonne even in grams)")
    if plausibility is not None:
        low, high = plausibility.weight_kg
        if not low <= weight <= high:
            as_height = plausibility.height_m[0] <= weight <= plausibility.height_m[1]
            hint = " (a height in metres in the weight field?)" if as_height else ""
            raise ctx.error(
                tag, f"{float(value):g} -> {weight:g} kg is outside the plausible {low:g}..{high:g} kg (suv.weight_kg){hint}"
            )
    return weight


def height_cm(ctx: HeaderContext, plausibility: SuvPlausibility | None) -> float:
    """PatientSize (0010,1020), which DICOM gives in metres, in cm; no unit is guessed."""
    tag, height_m = _required_positive(ctx, "PatientSize", series_value(ctx, "PatientSize"),
                                       "the patient's height (m) is needed for LBM/BSA/IBW")
    low, high = (0.0, HEIGHT_MAX_M) if plausibility is None else plausibility.height_m
    if not low <= height_m <= high:
        key = "" if plausibility is None else " (suv.height_m)"
        raise ctx.error(tag, f"{height_m:g} is not a height in metres ({low:g}..{high:g} m{key}); not guessing its unit")
    return height_m * CM_PER_M


def sex(ctx: HeaderContext) -> str:
    """PatientSex (0010,0040): ``M``, ``F`` or ``O``."""
    tag = tag_name("PatientSex")
    value = series_value(ctx, "PatientSex")
    if value is None:
        raise ctx.error(tag, "missing or empty; the patient's sex is needed for LBM/IBW")
    found = str(value).strip().upper()
    if found not in (SEX_MALE, SEX_FEMALE, SEX_OTHER):
        raise ctx.error(tag, f"unknown value {found!r} (expected M, F or O)")
    return found


def radiopharmaceutical(ctx: HeaderContext, notes: list[str]) -> Dataset:
    """The first RadiopharmaceuticalInformationSequence item that carries a dose (noted when several)."""
    tag = tag_name("RadiopharmaceuticalInformationSequence")
    seq = ctx.datasets[0].get("RadiopharmaceuticalInformationSequence")
    if not seq:
        raise ctx.error(tag, "missing or empty; SUV needs the dose, half-life and injection time")
    if len(seq) == 1:
        return seq[0]
    with_dose = [i for i, item in enumerate(seq) if not is_empty(item.get("RadionuclideTotalDose"))]
    chosen = with_dose[0] if with_dose else 0
    notes.append(
        f"RadiopharmaceuticalInformationSequence has {len(seq)} items: item {chosen + 1} "
        f"({'the first with a RadionuclideTotalDose' if with_dose else 'none has a dose'}) is used"
    )
    return seq[chosen]


def dose_bq(ctx: HeaderContext, item: Dataset, notes: list[str], plausibility: SuvPlausibility | None) -> float:
    """RadionuclideTotalDose (0018,1074) in Bq, read in the configured unit and range-checked."""
    tag, raw = _required_positive(ctx, "RadionuclideTotalDose", item.get("RadionuclideTotalDose"),
                                  "SUV needs the injected dose")
    unit = "auto" if plausibility is None else plausibility.dose_unit
    if unit == "auto":
        unit = "MBq" if raw < DOSE_MBQ_BELOW else "Bq"
        if unit == "MBq":
            notes.append(f"RadionuclideTotalDose {raw:g} < {DOSE_MBQ_BELOW:g}: read as MBq")
    elif unit != "Bq":
        notes.append(f"RadionuclideTotalDose read as {unit} (suv.dose_unit)")
    dose = raw * {"Bq": 1.0, "MBq": BQ_PER_MBQ, "mCi": MBQ_PER_MCI * BQ_PER_MBQ}[unit]
    if plausibility is None:
        if not DOSE_MIN_BQ <= dose <= DOSE_MAX_BQ:
            raise ctx.error(tag, f"absurd dose {raw:g} (-> {dose:g} Bq, outside {DOSE_MIN_BQ:g}..{DOSE_MAX_BQ:g} Bq)")
        return dose
    low, high = plausibility.dose_mbq
    dose_mbq = dose / BQ_PER_MBQ
    if not low <= dose_mbq <= high:
        as_mci = raw * MBQ_PER_MCI
        hint = ""
        if unit != "mCi" and low <= as_mci <= high:
            hint = f"; plausible only as mCi ({as_mci:g} MBq): set suv.dose_unit to mCi if the site records mCi"
        raise ctx.error(
            tag, f"{raw:g} read as {unit} is {dose_mbq:g} MBq, outside the clinical {low:g}..{high:g} MBq (suv.dose_mbq){hint}"
        )
    return dose


def _nuclide_codes(item: Dataset) -> list[str]:
    seq = item.get("RadionuclideCodeSequence")
    if not seq:
        return []
    return [str(seq[0].get(k, "")).strip() for k in ("CodeValue", "CodeMeaning") if str(seq[0].get(k, "")).strip()]


def half_life_s(ctx: HeaderContext, item: Dataset, notes: list[str], plausibility: SuvPlausibility | None) -> float:
    """RadionuclideHalfLife (0018,1075) in s, checked against the radionuclide the header names."""
    tag, half_life = _required_positive(ctx, "RadionuclideHalfLife", item.get("RadionuclideHalfLife"),
                                        "decay correction needs the radionuclide's half-life")
    if plausibility is None:
        return half_life
    codes = _nuclide_codes(item)
    nuclide = plausibility.radionuclide_for(codes)
    candidates = (nuclide,) if nuclide is not None else plausibility.radionuclides
    tolerance = plausibility.half_life_relative_tolerance
    if any(abs(half_life / n.half_life_s - 1.0) <= tolerance for n in candidates):
        if nuclide is None:
            notes.append("radionuclide not named by a known code: half-life matched against the listed ones")
        return half_life
    if nuclide is not None:
        problem = f"{half_life:g} s is not the half-life of {nuclide.name} ({nuclide.half_life_s:g} s"
    else:
        problem = f"{half_life:g} s matches no radionuclide in suv.radionuclides ("
        problem += ", ".join(f"{n.name} {n.half_life_s:g} s" for n in candidates)
    raise ctx.error(tag, f"{problem}, tolerance {tolerance:g} relative, suv.half_life_relative_tolerance)")

