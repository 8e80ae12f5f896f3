"""The thorax of a scan along z (whole-body studies): the lungs' extent plus a margin.

Ground truth is derived only in this slab; report findings outside it are listed, not followed
(a hot focus in the brain or the bladder is physiological uptake, not a lung tumour).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from colearn_pipeline.groundtruth._morphology import spacing_zyx
from colearn_pipeline.groundtruth.lungs import segment_lungs

#: Reason recorded for a report finding outside the thorax slab.
SEED_OUTSIDE_THORAX = "seed_outside_thorax"


def thorax_extent(lung_mask, spacing_xyz_mm: Sequence[float], *, min_lung_area_mm2: float,
                  margin_mm: float) -> tuple[int, int] | None:
    """First and last axial slice (inclusive) of the thorax: slices with plausible lung, widened by a margin.

    Parameters
    ----------
    lung_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
        SimpleITK order (x, y, z), mm.
    min_lung_area_mm2 : float
        A slice counts as lung when its lung area is at least this (mm²): a trachea in the neck or
        a bowel-gas pocket taken for lung does not stretch the thorax.
    margin_mm : float
        Added above and below (tumours at the apex or on the diaphragm, the heart under the lung bases).

    Returns
    -------
    (first, last) : tuple of int, or None when no slice has plausible lung
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    sp = spacing_zyx(spacing_xyz_mm)
    area_mm2 = lungs.sum(axis=(1, 2)) * float(sp[1] * sp[2])
    slices = np.flatnonzero(area_mm2 >= min_lung_area_mm2)
    if slices.size == 0:
        return None
    pad = int(np.ceil(float(margin_mm) / float(sp[0]) - 1e-9))
    return max(0, int(slices[0]) - pad), min(lungs.shape[0] - 1, int(slices[-1]) + pad)


def restrict_to_slab(mask, extent: tuple[int, int] | None) -> np.ndarray:
    """``mask`` with every slice outside ``extent`` cleared (all cleared when ``extent`` is None)."""
    out = np.array(mask, dtype=bool, copy=True)
    if extent is None:
        out[:] = False
        return out
    first, last = extent
    out[:first] = False
    out[last + 1:] = False
    return out


def seeds_in_thorax(seeds_zyx, extent: tuple[int, int] | None) -> np.ndarray:
    """Bool per seed: its slice (rounded) lies in the thorax ``extent`` (none does when it is None)."""
    seeds = np.asarray(seeds_zyx, dtype=float).reshape(-1, 3)
    if extent is None:
        return np.zeros(len(seeds), dtype=bool)
    z = np.rint(seeds[:, 0])
    return (z >= extent[0]) & (z <= extent[1])


def seeds_to_follow(seeds_zyx, extent: tuple[int, int] | None) -> tuple[np.ndarray, list[dict]]:
    """The seeds inside the thorax ``extent`` ``(n, 3)``, and one ``{"finding": index, "reason":
    "seed_outside_thorax"}`` per seed left out (index into ``seeds_zyx``)."""
    seeds = np.asarray(seeds_zyx, dtype=float).reshape(-1, 3)
    inside = seeds_in_thorax(seeds, extent)
    return seeds[inside], [{"finding": int(i), "reason": SEED_OUTSIDE_THORAX} for i in np.flatnonzero(~inside)]


def lungs_in_thorax(ct_hu, spacing_xyz_mm: Sequence[float], *, extent: Mapping, **lung_params):
    """Lungs (:func:`~colearn_pipeline.groundtruth.segment_lungs`) of a scan that may reach beyond the thorax.

    A first pass over the whole scan finds the thorax slab (:func:`thorax_extent`); when the slab is
    shorter than the scan (a whole-body study), the lungs are segmented again on the slab alone, so
    that the airway is searched in the top of the thorax (the trachea above the apices), not in the
    head, and the threshold comes from the thorax's histogram.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    extent : mapping
        Keyword arguments of :func:`thorax_extent`.
    **lung_params
        Keyword arguments of :func:`segment_lungs` (``return_info`` is implied).

    Returns
    -------
    lungs : ndarray of bool
        Empty outside the slab.
    info : dict
        ``segment_lungs``'s info (with ``airway_mask``, empty outside the slab) of the pass that was kept.
    slab : (first, last) or None
    """
    ct = np.asarray(ct_hu)
    lungs, info = segment_lungs(ct, spacing_xyz_mm, return_info=True, **lung_params)
    slab = thorax_extent(lungs, spacing_xyz_mm, **dict(extent))
    if slab is not None and (slab[0] > 0 or slab[1] < ct.shape[0] - 1):
        part, info = segment_lungs(ct[slab[0]: slab[1] + 1], spacing_xyz_mm, return_info=True, **lung_params)
        lungs = np.zeros(ct.shape, dtype=bool)
        lungs[slab[0]: slab[1] + 1] = part
        airway = np.zeros(ct.shape, dtype=bool)
        airway[slab[0]: slab[1] + 1] = info["airway_mask"]
        info["airway_mask"] = airway
    info["airway_mask"] = restrict_to_slab(info["airway_mask"], slab)
    return restrict_to_slab(lungs, slab), info, slab
