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
    slice_ratio_max : float
        Slice-to-slice continuity (:func:`check_slice_continuity`): a slice whose SUV factor or
        body median SUV departs from its neighbours' median by more than this factor on both sides
        is refused (the first and last slice are not judged).
    slice_window : int
        Neighbours on each side that the continuity check compares a slice with.
    slice_min_body_fraction : float
        Slices with fewer body voxels than this fraction of the fullest slice's are not compared
        (the tips of a field of view: a skull cap, the feet).
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
    slice_ratio_max: float
    slice_window: int
    slice_min_body_fraction: float

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
            slice_ratio_max=_above_one("slice_ratio_max", params["slice_ratio_max"]),
            slice_window=int(_positive("slice_window", params["slice_window"])),
            slice_min_body_fraction=_positive("slice_min_body_fraction", params["slice_min_body_fraction"]),
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


def _above_one(name: str, value: Any) -> float:
    number = _positive(name, value)
    if number <= 1:
        raise ValueError(f"suv.{name} must be a factor above 1, got {value!r}")
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


def _departure(values: np.ndarray, valid: np.ndarray, window: int, ratio_max: float) -> tuple[int, float, float] | None:
    """The first slice whose value departs from the median of its valid neighbours on each side by more than
    ``ratio_max``, in the same direction on both sides: (slice, value, neighbours' median); else None.

    A slice without a valid neighbour on one side (an end of the series, the edge of a run of small
    slices) is not judged: one side alone cannot tell an outlier from the edge of an organ."""
    for z in np.flatnonzero(valid):
        sides = [values[max(0, z - window):z][valid[max(0, z - window):z]],
                 values[z + 1:z + 1 + window][valid[z + 1:z + 1 + window]]]
        if not all(side.size for side in sides):
            continue
        medians = [float(np.median(side)) for side in sides]
        if min(medians) <= 0:
            continue
        ratios = [values[z] / m for m in medians]
        if all(r > ratio_max for r in ratios) or all(r < 1 / ratio_max for r in ratios):
            return int(z), float(values[z]), float(np.median(np.concatenate(sides)))
    return None


def check_slice_continuity(suv_zyx: np.ndarray, slice_factors: Sequence[float], plausibility: SuvPlausibility, *,
                           source: str = "", slice_labels: Sequence[str] = ()) -> None:
    """Refuse a series whose SUV factor or body median SUV jumps at one slice (a slice scaled unlike its neighbours).

    A slice's value is compared with the median of the ``slice_window`` slices on each side; it
    departs when it is more than ``slice_ratio_max`` times above (or below) both sides' medians, so
    an organ's edge (heart, bladder, brain: high on one side only) passes and an isolated jump does
    not. The first and last slice have no neighbour on one side and are not judged. The body median is over the slice's voxels above
    ``body_threshold_fraction_of_mean`` times the volume's mean; slices with fewer body voxels than
    ``slice_min_body_fraction`` of the fullest slice's are left out.

    Parameters
    ----------
    suv_zyx : numpy.ndarray
        SUV ``(z, y, x)``, slices in series order.
    slice_factors : sequence of float
        SUV per stored PET unit of each slice (from the headers: decay, scale factors).
    plausibility : SuvPlausibility
    source : str
        Label for the message (pseudonym).
    slice_labels : sequence of str
        The file (label) of each slice, named in the message.

    Raises
    ------
    SuvError
        Naming the slice (index and file label), its value and its neighbours'.
    """
    suv = np.asarray(suv_zyx, dtype=np.float64)
    ratio, window = plausibility.slice_ratio_max, plausibility.slice_window

    def limit(around: float, digits: int) -> str:
        return (f"departs from its neighbours' median {around:.{digits}g} by more than a factor {ratio:g} "
                "(suv.slice_ratio_max)")

    def name(z: int) -> str:
        return f"slice {z}" + (f" ({slice_labels[z]})" if len(slice_labels) > z else "")

    factors = np.asarray(slice_factors, dtype=np.float64)
    hit = _departure(factors, np.isfinite(factors) & (factors > 0), window, ratio) if factors.size > 1 else None
    if hit is not None:
        z, value, around = hit
        raise SuvError(f"{name(z)}: SUV factor {value:.6g} {limit(around, 6)}", tag="SUV scale", source=source,
                       file=slice_labels[z] if len(slice_labels) > z else "")
    body = suv > plausibility.body_threshold_fraction_of_mean * float(suv.mean())
    counts = body.sum(axis=(1, 2))
    medians = np.array([float(np.median(s[b])) if n else 0.0 for s, b, n in zip(suv, body, counts)])
    valid = counts >= plausibility.slice_min_body_fraction * max(int(counts.max()), 1)
    hit = _departure(medians, valid & (counts > 0), window, ratio) if suv.shape[0] > 1 else None
    if hit is not None:
        z, value, around = hit
        raise SuvError(f"{name(z)}: body median SUV {value:.4g} {limit(around, 4)}: RescaleSlope or scale factor of "
                       "that slice?", tag="SUV continuity", source=source,
                       file=slice_labels[z] if len(slice_labels) > z else "")
