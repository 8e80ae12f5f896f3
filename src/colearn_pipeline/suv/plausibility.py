"""Plausibility ranges for the SUV inputs and outputs, and the check of an SUV volume.

The ranges are parameters, never defaults in code: they come from the ``suv`` block of
``conf/base/parameters_suv.yml`` (Kedro ``params:suv``; ``colearn-suv`` carries the same values)
through :meth:`SuvPlausibility.from_params`, which refuses unknown and missing keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from colearn_pipeline.suv.errors import SuvError

#: Accepted values of ``dose_unit``: ``auto`` reads RadionuclideTotalDose as Bq, or as MBq
#: below 1e5 (the IBSI-SUV rule); the others name the unit the site records.
DOSE_UNITS = ("auto", "Bq", "MBq", "mCi")
#: MBq per mCi.
MBQ_PER_MCI = 37.0


@dataclass(frozen=True)
class Radionuclide:
    """A radionuclide the half-life check knows: its half-life and the codes that name it.

    ``codes`` are compared, case-blind, with CodeValue and CodeMeaning of the first item of
    RadionuclideCodeSequence (0054,0300), e.g. ``C-111A1`` or ``^18^Fluorine`` for F-18.
    """

    name: str
    half_life_s: float
    codes: tuple[str, ...]


@dataclass(frozen=True)
class SuvPlausibility:
    """Ranges outside which an SUV input or output is refused (``[low, high]``, inclusive).

    Attributes
    ----------
    weight_kg : (float, float)
        PatientWeight (0010,1030) after the grams rule (a value above 1000 is read as grams).
    height_m : (float, float)
        PatientSize (0010,1020), checked where a body-size SUV needs it.
    dose_mbq : (float, float)
        RadionuclideTotalDose (0018,1074) in MBq after reading it in ``dose_unit``.
    dose_unit : {"auto", "Bq", "MBq", "mCi"}
        Unit of RadionuclideTotalDose. With ``auto`` a value plausible only as mCi is refused.
    half_life_relative_tolerance : float
        Largest ``|header / known - 1|`` of RadionuclideHalfLife (0018,1075) against the
        radionuclide named in the header (or, without a known code, against any listed one).
    radionuclides : tuple of Radionuclide
    suv_range : (float, float)
        Every voxel's SUV (and every value finite).
    body_median_suv : (float, float)
        Median SUV of the body: voxels above ``body_threshold_fraction_of_mean`` times the
        volume's mean SUV (a threshold that scales with the image, so a wrong weight or dose
        moves the median instead of emptying the mask).
    body_threshold_fraction_of_mean : float
    """

    weight_kg: tuple[float, float]
    height_m: tuple[float, float]
    dose_mbq: tuple[float, float]
    dose_unit: str
    half_life_relative_tolerance: float
    radionuclides: tuple[Radionuclide, ...]
    suv_range: tuple[float, float]
    body_median_suv: tuple[float, float]
    body_threshold_fraction_of_mean: float

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> SuvPlausibility:
        """Build from the ``suv`` parameter block; unknown or missing keys raise naming them."""
        if not isinstance(params, Mapping):
            raise ValueError(f"suv parameters must be a mapping, got {type(params).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(params) - set(names))
        missing = [n for n in names if n not in params]
        if unknown or missing:
            raise ValueError(f"suv parameters: unknown keys {unknown}, missing keys {missing}")
        ranges = {n: _range(n, params[n]) for n in ("weight_kg", "height_m", "dose_mbq", "suv_range", "body_median_suv")}
        if params["dose_unit"] not in DOSE_UNITS:
            raise ValueError(f"suv.dose_unit must be one of {DOSE_UNITS}, got {params['dose_unit']!r}")
        return cls(
            **ranges,
            dose_unit=str(params["dose_unit"]),
            half_life_relative_tolerance=_positive("half_life_relative_tolerance", params["half_life_relative_tolerance"]),
            radionuclides=_radionuclides(params["radionuclides"]),
            body_threshold_fraction_of_mean=_positive(
                "body_threshold_fraction_of_mean", params["body_threshold_fraction_of_mean"]
            ),
        )

    def radionuclide_for(self, codes: Sequence[str]) -> Radionuclide | None:
        """The listed radionuclide named by any of ``codes`` (case-blind), or None."""
        wanted = {str(c).strip().lower() for c in codes if str(c).strip()}
        for nuclide in self.radionuclides:
            if wanted & {c.lower() for c in nuclide.codes}:
                return nuclide
        return None



def _range(name: str, value: Any) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"suv.{name} must be [low, high], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"suv.{name} must be finite with low < high, got {value!r}")
    return low, high


def _positive(name: str, value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"suv.{name} must be a positive number, got {value!r}")
    return number


def _radionuclides(value: Any) -> tuple[Radionuclide, ...]:
    if not isinstance(value, Mapping) or not value:
        raise ValueError(f"suv.radionuclides must be a non-empty mapping name -> {{half_life_s, codes}}, got {value!r}")
    out = []
    for name, entry in value.items():
        if not isinstance(entry, Mapping) or set(entry) != {"half_life_s", "codes"}:
            raise ValueError(f"suv.radionuclides.{name} must have exactly the keys half_life_s and codes")
        out.append(
            Radionuclide(
                str(name), _positive(f"radionuclides.{name}.half_life_s", entry["half_life_s"]), tuple(map(str, entry["codes"]))
            )
        )
    return tuple(out)


def check_suv_values(
    suv_zyx: np.ndarray, plausibility: SuvPlausibility, *, source: str = "", hint: str = ""
) -> float:
    """Refuse an SUV volume with non-finite values, values outside ``suv_range`` or a body median
    outside ``body_median_suv``.

    Parameters
    ----------
    suv_zyx : numpy.ndarray
        SUV volume ``(z, y, x)``.
    plausibility : SuvPlausibility
    source : str
        Label for the message (pseudonym / series).
    hint : str
        The header values the SUV came from (e.g. ``"PatientWeight (0010,1030) = 70 kg"``), added
        to the message.

    Returns
    -------
    float
        The body median SUV.

    Raises
    ------
    SuvError
        Naming the slice, the value and the range.
    """
    suv = np.asarray(suv_zyx, dtype=np.float64)
    where = f" ({hint})" if hint else ""
    bad = ~np.isfinite(suv)
    if bad.any():
        z = int(np.argwhere(bad)[0][0])
        raise SuvError(f"{int(bad.sum())} non-finite values, first in slice {z}{where}", tag="SUV", source=source)
    if not (suv > 0).any():  # before the range checks: an empty series is the cause, not its median
        raise SuvError(f"the PET series is empty: every voxel is {float(suv.max()):g} or below{where}",
                       tag="SUV", source=source)
    low, high = plausibility.suv_range
    for value, name in ((float(suv.min()), "minimum"), (float(suv.max()), "maximum")):
        if not low <= value <= high:
            z = int(np.argwhere(suv == value)[0][0])
            raise SuvError(
                f"{name} {value:.6g} in slice {z} outside the physical range {low:g}..{high:g} (suv.suv_range){where}",
                tag="SUV",
                source=source,
            )
    body = suv[suv > plausibility.body_threshold_fraction_of_mean * float(suv.mean())]
    if body.size == 0:
        raise SuvError(f"no body voxels (the image is uniform or empty){where}", tag="SUV", source=source)
    median = float(np.median(body))
    low, high = plausibility.body_median_suv
    if not low <= median <= high:
        raise SuvError(
            f"body median {median:.4g} outside {low:g}..{high:g} (suv.body_median_suv){where}",
            tag="SUV",
            source=source,
        )
    return median
