"""PET -> SUV conversion of one series: one multiplicative factor per slice.

``SUV = rescaled pixel value * factor``, the rescaled value being ``stored * RescaleSlope +
RescaleIntercept`` of that slice. The computation always goes through SUVbw (g/mL) and converts
to the requested SUV type at the end. Units (0054,1001):

``BQML``
    ``SUVbw = A * W_g / D_ref`` (time rules in :mod:`colearn_pipeline.suv.timing`); Philips
    private scale factors are ignored (noted).
``CNTS``
    Philips SUV scale factor (7053,1000) when > 0 on every slice: ``SUVbw = A * f``; else the
    activity concentration scale factor (7053,1009) converts to Bq/mL, then as BQML; else error.
``GML``
    Already an SUV: SUVType empty or ``BW`` is SUVbw; ``LBMJAMES128``, ``LBM`` (Morgan),
    ``LBMJANMA``, ``IBW`` are converted back with ``SUVbw = SUVx * W / X``.
``CM2ML``
    SUVbsa (Du Bois): ``SUVbw = SUVbsa * W_g / BSA_cm2``.
anything else
    :class:`SuvError` naming Units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from colearn_pipeline.suv.body_size import (
    CM2_PER_M2,
    body_surface_area_m2,
    ideal_body_weight_kg,
    lean_body_mass_kg,
)
from colearn_pipeline.suv.errors import SuvError
from colearn_pipeline.suv.headers import (
    DEFAULT_PRIVATE_BLOCK,
    PHILIPS_ACTIVITY_SCALE_ELEMENT,
    PHILIPS_GROUP,
    PHILIPS_SUV_SCALE_ELEMENT,
    HeaderContext,
    check_rescale_slopes,
    is_empty,
    philips_factors,
    series_value,
    tag_name,
)
from colearn_pipeline.suv.patient import G_PER_KG, height_cm, sex, weight_kg
from colearn_pipeline.suv.plausibility import SuvPlausibility, check_suv_values
from colearn_pipeline.suv.timing import REF_NOT_NEEDED, activity_factors

#: Output SUV types: body weight, lean body mass (James, 128), body surface area (Du Bois), ideal body weight.
SUV_TYPES = ("bw", "lbm", "bsa", "ibw")

#: SUVType (0054,1006) -> (body-size quantity, formula name) for GML images.
_GML_SUV_TYPES = {
    "": ("bw", "BW"),
    "BW": ("bw", "BW"),
    "LBMJAMES128": ("lbm_james128", "LBM James 128"),
    "LBM": ("lbm_morgan", "LBM Morgan 120"),
    "LBMJANMA": ("lbm_janma", "LBM Janmahasatian"),
    "IBW": ("ibw", "IBW"),
}
_LBM_VARIANTS = {"lbm_james128": "james128", "lbm": "james128", "lbm_morgan": "morgan", "lbm_janma": "janma"}


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



@dataclass
class _Series:
    """What the per-Units rules share while converting one series."""

    ctx: HeaderContext
    plausibility: SuvPlausibility | None
    decay_found: str
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def weight_kg(self) -> float:
        return weight_kg(self.ctx, self.notes, self.plausibility)


# body size --------------------------------------------------------------------------------


def _body_size(series: _Series, quantity: str, weight: float) -> float:
    """LBM/IBW in kg or BSA in cm^2 for this patient; raises if not physical."""
    ctx = series.ctx
    height = height_cm(ctx, series.plausibility)
    if quantity == "bsa":
        value = body_surface_area_m2(weight, height) * CM2_PER_M2
        tags = f"{tag_name('PatientWeight')} / {tag_name('PatientSize')}"
    elif quantity == "ibw":
        value = ideal_body_weight_kg(height, sex(ctx))
        tags = f"{tag_name('PatientSize')} / {tag_name('PatientSex')}"
    else:
        value = lean_body_mass_kg(weight, height, sex(ctx), _LBM_VARIANTS[quantity])
        tags = f"{tag_name('PatientWeight')} / {tag_name('PatientSize')} / {tag_name('PatientSex')}"
    if not math.isfinite(value) or value <= 0:
        raise ctx.error(tags, f"{quantity} formula gives {value:g} (not positive) for this weight/height")
    return value


def _bw_to_output_factor(series: _Series, suv_type: str, weight: float) -> float:
    """Multiplier from SUVbw to the requested SUV type."""
    if suv_type == "bw":
        return 1.0
    if suv_type == "bsa":
        bsa_cm2 = _body_size(series, "bsa", weight)
        series.details["bsa_cm2"] = bsa_cm2
        return bsa_cm2 / (weight * G_PER_KG)
    size_kg = _body_size(series, suv_type, weight)
    series.details[f"{suv_type}_kg"] = size_kg
    return size_kg / weight


# SUVbw factors per Units -------------------------------------------------------------------
# each returns (SUVbw factors, decay_correction, reference_time_source, convention, weight_kg or None)


def _bqml(series: _Series) -> tuple[np.ndarray, str, str, str, float | None]:
    weight = series.weight_kg()
    bw, decay, ref, dose_text = activity_factors(series.ctx, weight, series.details, series.notes, series.plausibility)
    first = series.ctx.datasets[0]
    ignored = [
        f"({PHILIPS_GROUP:04X},{(DEFAULT_PRIVATE_BLOCK << 8) | e:04X})"
        for e in (PHILIPS_SUV_SCALE_ELEMENT, PHILIPS_ACTIVITY_SCALE_ELEMENT)
        if (PHILIPS_GROUP, (DEFAULT_PRIVATE_BLOCK << 8) | e) in first
    ]
    if ignored:
        series.notes.append(f"Units BQML: Philips private {', '.join(ignored)} ignored")
    return bw, decay, ref, f"BQML, decay {decay}, {dose_text}", weight


def _cnts(series: _Series) -> tuple[np.ndarray, str, str, str, float | None]:
    suv_sf = philips_factors(series.ctx, PHILIPS_SUV_SCALE_ELEMENT, series.notes)
    acsf = philips_factors(series.ctx, PHILIPS_ACTIVITY_SCALE_ELEMENT, series.notes)
    if suv_sf is not None and bool(np.all(suv_sf > 0)):
        series.details["philips_suv_scale_factor"] = suv_sf.copy()
        return suv_sf.copy(), series.decay_found, REF_NOT_NEEDED, "CNTS, Philips SUV scale factor (7053,1000)", None
    if acsf is not None and bool(np.all(acsf > 0)):
        weight = series.weight_kg()
        activity_bw, decay, ref, dose_text = activity_factors(
            series.ctx, weight, series.details, series.notes, series.plausibility
        )
        series.details["philips_activity_scale_factor"] = acsf.copy()
        convention = (
            "CNTS, Philips activity concentration scale factor (7053,1009) then BQML, "
            f"decay {decay}, {dose_text}"
        )
        return acsf * activity_bw, decay, ref, convention, weight
    raise series.ctx.error(
        "Philips SUV Scale Factor (7053,1000) / Activity Concentration Scale Factor (7053,1009)",
        "Units CNTS but neither scale factor is present and > 0 on every slice; counts cannot be converted",
    )


def _gml(series: _Series) -> tuple[np.ndarray, str, str, str, float | None]:
    value = series_value(series.ctx, "SUVType")
    stored_type = "" if value is None else str(value).strip().upper()
    if stored_type not in _GML_SUV_TYPES:
        known = ", ".join(k for k in _GML_SUV_TYPES if k)
        raise series.ctx.error(tag_name("SUVType"), f"{stored_type!r} is not an SUV type of Units GML ({known})")
    quantity, label = _GML_SUV_TYPES[stored_type]
    series.details["stored_suv_type"] = stored_type or "(empty: BW)"
    n = len(series.ctx.datasets)
    if quantity == "bw":
        return np.ones(n), series.decay_found, REF_NOT_NEEDED, f"GML (SUV{label}), used as is", None
    weight = series.weight_kg()
    size_kg = _body_size(series, quantity, weight)
    series.details[f"stored_{quantity}_kg"] = size_kg
    convention = f"GML (SUV{label}), converted back to SUVbw"
    return np.full(n, weight / size_kg), series.decay_found, REF_NOT_NEEDED, convention, weight


def _cm2ml(series: _Series) -> tuple[np.ndarray, str, str, str, float | None]:
    value = series_value(series.ctx, "SUVType")
    stored_type = "" if value is None else str(value).strip().upper()
    if stored_type not in ("", "BSA"):
        raise series.ctx.error(tag_name("SUVType"), f"{stored_type!r} contradicts Units CM2ML (SUVbsa)")
    weight = series.weight_kg()
    bsa_cm2 = _body_size(series, "bsa", weight)
    series.details["stored_bsa_cm2"] = bsa_cm2
    bw = np.full(len(series.ctx.datasets), weight * G_PER_KG / bsa_cm2)
    return bw, series.decay_found, REF_NOT_NEEDED, "CM2ML (SUVbsa, Du Bois), converted back to SUVbw", weight


_UNITS_RULES = {"BQML": _bqml, "CNTS": _cnts, "GML": _gml, "CM2ML": _cm2ml}


# public API --------------------------------------------------------------------------------


def _check_input(datasets: list[Dataset], suv_type: str, source: str) -> tuple[HeaderContext, str, str]:
    """Context, requested SUV type and Units (upper case); raises on what cannot be converted."""
    if not datasets:
        raise SuvError("no datasets given", source=source)
    ctx = HeaderContext(source, datasets)
    wanted = str(suv_type).strip().lower()
    if wanted not in SUV_TYPES:
        raise SuvError(f"unknown suv_type {suv_type!r} (expected one of {', '.join(SUV_TYPES)})", source=source)
    for ds in datasets:
        modality = ds.get("Modality")
        if not is_empty(modality) and str(modality).strip().upper() != "PT":
            raise ctx.error(tag_name("Modality"), f"{str(modality).strip()!r} is not a PET image (PT)", ds)
    check_rescale_slopes(ctx)
    units_value = series_value(ctx, "Units")
    if units_value is None:
        raise ctx.error(tag_name("Units"), "missing or empty; cannot tell what the pixel values are")
    units = str(units_value).strip().upper()
    if units not in _UNITS_RULES:
        raise ctx.error(tag_name("Units"), f"unsupported units {units!r} (supported: {', '.join(_UNITS_RULES)})")
    return ctx, wanted, units


def suv_conversion(
    pet_datasets: Sequence[Dataset],
    suv_type: str = "bw",
    *,
    source: str = "",
    plausibility: SuvPlausibility | None = None,
) -> SuvConversion:
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
    plausibility : SuvPlausibility, optional
        Ranges for weight, height, dose and half-life (``params:suv``). Without it only
        physically impossible values are refused.

    Returns
    -------
    SuvConversion
        ``SUV = (stored * RescaleSlope + RescaleIntercept) * slice_factors[i]`` for slice ``i``.

    Raises
    ------
    SuvError
        Missing, absurd or implausible values, naming the tag, the value and the file.
    """
    datasets = list(pet_datasets)
    ctx, wanted, units = _check_input(datasets, suv_type, source)
    decay_value = series_value(ctx, "DecayCorrection")
    series = _Series(ctx, plausibility, "" if decay_value is None else str(decay_value).strip().upper())
    series.details["notes"] = series.notes
    bw, decay_correction, ref_source, convention, weight = _UNITS_RULES[units](series)
    if wanted != "bw" and weight is None:
        weight = series.weight_kg()
    out = _bw_to_output_factor(series, wanted, weight if weight is not None else float("nan"))
    factors = np.asarray(bw, dtype=np.float64) * out
    if not np.all(np.isfinite(factors)) or np.any(factors <= 0):
        raise ctx.error(tag_name("Units"), f"conversion gives non-positive or non-finite factors {factors}")
    series.details.update(suv_bw_factors=np.asarray(bw, dtype=np.float64), bw_to_output=out)
    if weight is not None:
        series.details.setdefault("weight_kg", weight)
    if wanted != "bw":
        convention += f"; SUVbw -> SUV{wanted} x {out:.6g}"
    return SuvConversion(
        slice_factors=factors,
        suv_type=wanted,
        units=str(series_value(ctx, "Units")).strip(),
        decay_correction=decay_correction,
        convention=convention,
        reference_time_source=ref_source,
        details=series.details,
    )


def header_hint(conversion: SuvConversion) -> str:
    """The header values an SUV depends on, for messages: weight and dose where used."""
    parts = []
    if "weight_kg" in conversion.details:
        parts.append(f"{tag_name('PatientWeight')} -> {conversion.details['weight_kg']:g} kg")
    if "dose_bq" in conversion.details:
        parts.append(f"{tag_name('RadionuclideTotalDose')} -> {conversion.details['dose_bq'] / 1e6:g} MBq")
    parts.append(f"Units {conversion.units}")
    return ", ".join(parts)


def to_suv(
    rescaled_zyx: np.ndarray,
    conversion: SuvConversion,
    *,
    plausibility: SuvPlausibility | None = None,
    source: str = "",
) -> np.ndarray:
    """Apply a :class:`SuvConversion` to a ``(z, y, x)`` volume of rescaled pixel values.

    Parameters
    ----------
    rescaled_zyx : numpy.ndarray
        Pixel values after each slice's RescaleSlope/RescaleIntercept, slices in the order of the
        datasets the conversion was computed from.
    conversion : SuvConversion
    plausibility : SuvPlausibility, optional
        When given, the SUV is checked with :func:`check_suv_values` (finite, within
        ``suv_range``, body median within ``body_median_suv``).
    source : str
        Label for error messages.

    Returns
    -------
    numpy.ndarray
        float32 SUV volume (computed in float64).
    """
    volume = np.asarray(rescaled_zyx)
    factors = conversion.slice_factors
    if volume.ndim != 3 or volume.shape[0] != factors.shape[0]:
        raise ValueError(f"volume of shape {volume.shape} does not match {factors.shape[0]} slice factors")
    with np.errstate(over="ignore", invalid="ignore"):
        suv = volume.astype(np.float64) * factors[:, None, None]
    if plausibility is not None:
        check_suv_values(suv, plausibility, source=source, hint=header_hint(conversion))
    return suv.astype(np.float32)
