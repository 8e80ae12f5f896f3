"""Clinical PET quantification of segmented tumours: MTV, SUVmax, SUVpeak, SUVmean, TLG, per component and per study.

Pure functions on arrays (no I/O). A tumour component is a 26-connected component of the
tumour label on the CT grid; the SUV (and an optional per-voxel uncertainty map) lie on the same
grid. Definitions:

- MTV (metabolic tumour volume, mL): the component's voxel count times the voxel volume;
- SUVmax: the highest voxel SUV in the component;
- SUVpeak (:func:`suv_peak_map`): the mean SUV in a 1 mL sphere (diameter 12.4 mm), placed where
  that mean is highest with its centre on a voxel of the component, as PERCIST 1.0 defines it
  (Wahl RL, Jacene H, Kasamon Y, Lodge MA. From RECIST to PERCIST: evolving considerations for PET
  response criteria in solid tumors. J Nucl Med 2009;50 Suppl 1:122S-150S) and as the IBSI
  "global intensity peak" computes it (Zwanenburg A et al., Radiology 2020;295:328-338): the sphere
  is the voxels whose centres lie within its radius, and it averages SUV whether or not those
  voxels are tumour;
- SUVmean: the mean voxel SUV in the component;
- TLG (total lesion glycolysis, g): MTV x SUVmean (SUV in g/mL times mL);
- uncertainty: the mean of the uncertainty map over the component, when one is given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from scipy.signal import fftconvolve

#: PERCIST's SUVpeak sphere volume (1 mL = 1000 mm^3).
PEAK_SPHERE_ML = 1.0
MM3_PER_ML = 1000.0
#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one component.
CONNECTIVITY = np.ones((3, 3, 3), bool)
#: Rounding of reported figures (decimals).
DECIMALS = 4


def sphere_kernel(spacing_xyz_mm: Sequence[float], volume_ml: float = PEAK_SPHERE_ML) -> np.ndarray:
    """Boolean ``(z, y, x)`` kernel: the voxels whose centres lie within the sphere of ``volume_ml`` around the centre.

    Parameters
    ----------
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing (SimpleITK order).
    volume_ml : float
        Sphere volume; 1 mL has radius (3 x 1000 / 4 pi)^(1/3) = 6.20 mm.
    """
    radius_mm = (3.0 * volume_ml * MM3_PER_ML / (4.0 * np.pi)) ** (1.0 / 3.0)
    sx, sy, sz = (float(s) for s in spacing_xyz_mm)
    half = [int(np.floor(radius_mm / s)) for s in (sz, sy, sx)]
    z, y, x = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    return (z * sz) ** 2 + (y * sy) ** 2 + (x * sx) ** 2 <= radius_mm ** 2 + 1e-9


def suv_peak_map(suv: np.ndarray, kernel: np.ndarray, box: tuple[slice, ...]) -> np.ndarray:
    """Mean SUV in the sphere ``kernel`` centred on each voxel of ``box`` (a region of ``suv``).

    Voxels of the sphere outside the image are left out of the mean (a sphere at the image's
    edge averages what it covers).

    Returns
    -------
    numpy.ndarray
        float64, the shape of ``suv[box]``.
    """
    half = [k // 2 for k in kernel.shape]
    grown = tuple(slice(max(0, b.start - h), min(n, b.stop + h)) for b, h, n in zip(box, half, suv.shape))
    region = np.asarray(suv[grown], dtype=np.float64)
    weights = kernel.astype(np.float64)
    total = fftconvolve(region, weights, mode="same")
    count = fftconvolve(np.ones_like(region), weights, mode="same")
    inner = tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))
    return total[inner] / np.maximum(np.rint(count[inner]), 1.0)


def _component_figures(suv: np.ndarray, mask: np.ndarray, box: tuple[slice, ...], kernel: np.ndarray,
                       voxel_ml: float, uncertainty: np.ndarray | None) -> dict[str, Any]:
    values = suv[box][mask].astype(np.float64)
    peak = suv_peak_map(suv, kernel, box)
    peak_at = np.unravel_index(int(np.argmax(np.where(mask, peak, -np.inf))), mask.shape)
    volume_ml = float(mask.sum()) * voxel_ml
    suv_mean = float(values.mean())
    out = {
        "voxels": int(mask.sum()), "volume_ml": volume_ml, "suv_max": float(values.max()),
        "suv_peak": float(peak[peak_at]), "suv_mean": suv_mean, "tlg_g": volume_ml * suv_mean,
        "peak_index_zyx": [int(i + b.start) for i, b in zip(peak_at, box)],
        "z_range": [int(box[0].start), int(box[0].stop) - 1],
        "centroid_index_zyx": [float(c + b.start) for c, b in zip(ndi.center_of_mass(mask), box)],
    }
    if uncertainty is not None:
        out["uncertainty_mean"] = float(uncertainty[box][mask].astype(np.float64).mean())
    return out


def quantify_tumours(
    labels: np.ndarray,
    suv: np.ndarray,
    spacing_xyz_mm: Sequence[float],
    *,
    tumour_label: int,
    uncertainty: np.ndarray | None = None,
    peak_volume_ml: float = PEAK_SPHERE_ML,
) -> dict[str, Any]:
    """MTV, SUVmax, SUVpeak, SUVmean, TLG (and mean uncertainty) per tumour component and for the study.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(z, y, x)`` label map; ``tumour_label`` marks tumour.
    suv : numpy.ndarray
        ``(z, y, x)`` SUV on the same grid.
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing (SimpleITK order).
    tumour_label : int
        The tumour's label value (``groundtruth.LABELS["tumour"]``).
    uncertainty : numpy.ndarray, optional
        ``(z, y, x)`` per-voxel uncertainty (e.g. entropy of an ensemble's mean softmax).
    peak_volume_ml : float
        SUVpeak sphere volume (PERCIST: 1 mL).

    Returns
    -------
    dict
        ``components``: one dict per 26-connected component, largest first (ties: first in
        z, y, x order), with ``component`` (1-based rank), ``voxels``, ``volume_ml``, ``suv_max``,
        ``suv_peak``, ``suv_mean``, ``tlg_g``, ``peak_index_zyx`` (the SUVpeak sphere's centre),
        ``centroid_index_zyx``, ``z_range`` (first and last slice it lies on) and, with
        ``uncertainty``, ``uncertainty_mean``; ``totals``:
        ``n_components``, ``volume_ml`` and ``tlg_g`` (sums), ``suv_max`` and ``suv_peak`` (the
        highest), ``suv_mean`` (over all tumour voxels) and ``uncertainty_mean`` (likewise);
        figures of an empty study are 0 (None for SUV figures).
    """
    for name, array in (("SUV", suv), ("uncertainty", uncertainty)):
        if array is not None and array.shape != labels.shape:
            raise ValueError(f"labels {labels.shape} and {name} {array.shape} are not on one grid")
    voxel_ml = float(np.prod(np.asarray(spacing_xyz_mm, dtype=np.float64))) / MM3_PER_ML
    kernel = sphere_kernel(spacing_xyz_mm, peak_volume_ml)
    components, n = ndi.label(labels == tumour_label, structure=CONNECTIVITY)
    found = []
    for i, box in enumerate(ndi.find_objects(components), start=1):
        mask = components[box] == i
        found.append(_component_figures(suv, mask, box, kernel, voxel_ml, uncertainty))
    found.sort(key=lambda c: -c["voxels"])  # stable: equal sizes keep the scan order
    for rank, c in enumerate(found, start=1):
        c["component"] = rank
    tumour = components > 0
    totals: dict[str, Any] = {
        "n_components": n, "volume_ml": sum(c["volume_ml"] for c in found), "tlg_g": sum(c["tlg_g"] for c in found),
        "suv_max": max((c["suv_max"] for c in found), default=None),
        "suv_peak": max((c["suv_peak"] for c in found), default=None),
        "suv_mean": float(suv[tumour].astype(np.float64).mean()) if n else None,
    }
    if uncertainty is not None:
        totals["uncertainty_mean"] = float(uncertainty[tumour].astype(np.float64).mean()) if n else None
    return {"components": found, "totals": totals}


def rounded(figures: dict[str, Any], decimals: int = DECIMALS) -> dict[str, Any]:
    """A copy of a figures dict with floats (also in lists) rounded for reports."""
    def one(v):
        if isinstance(v, float):
            return round(v, decimals)
        if isinstance(v, list):
            return [one(x) for x in v]
        return v

    return {k: one(v) for k, v in figures.items()}


__all__ = ["PEAK_SPHERE_ML", "quantify_tumours", "rounded", "sphere_kernel", "suv_peak_map"]
