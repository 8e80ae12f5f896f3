"""Tumours: 40% of peak SUV connected thresholding seeded at each report finding."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from colearn_pipeline.groundtruth._morphology import spacing_zyx

#: Defaults of :func:`segment_tumours` (see docs/groundtruth.md).
PEAK_FRACTION = 0.4
SEED_SEARCH_RADIUS_MM = 15.0
MAX_RADIUS_MM = 50.0
MIN_PEAK_SUV = 0.0
MIN_THRESHOLD_SUV = 0.0
LEAK_FRACTION_STEP = 0.05
MAX_PEAK_FRACTION = 0.7


def _ball_offsets(radius_mm: float, sp_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``(z, y, x)`` offsets within ``radius_mm`` and their distances (mm)."""
    half = np.floor(radius_mm / sp_zyx + 1e-9).astype(int)
    grids = np.meshgrid(*(np.arange(-h, h + 1) for h in half), indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    dist = np.sqrt(((off * sp_zyx) ** 2).sum(axis=1))
    keep = dist <= radius_mm + 1e-9
    return off[keep], dist[keep]


def move_seed_to_peak(suv, seed_zyx, spacing_xyz_mm, radius_mm: float = SEED_SEARCH_RADIUS_MM):
    """Voxel ``(z, y, x)`` of the seed's own SUV peak within ``radius_mm`` of ``seed_zyx``.

    The local maximum reached by steepest ascent (26 neighbours) from the seed, inside the ball of
    ``radius_mm``, so that a node beside a hotter primary keeps its own peak; a seed on a plateau
    (e.g. zero uptake around it) takes the highest SUV of the ball instead (nearest wins ties).

    Parameters
    ----------
    suv : ndarray, shape (z, y, x)
    seed_zyx : sequence of 3 int
        Seed voxel; it may lie outside the volume only by less than ``radius_mm``.
    spacing_xyz_mm : sequence of 3 float
    radius_mm : float
        Search radius (mm).

    Returns
    -------
    tuple of 3 int
    """
    suv = np.asarray(suv)
    sp = spacing_zyx(spacing_xyz_mm)
    seed = np.asarray(np.round(seed_zyx), dtype=int)
    off, dist = _ball_offsets(radius_mm, sp)
    pts = seed + off
    inside = np.all((pts >= 0) & (pts < np.asarray(suv.shape)), axis=1)
    if not inside.any():
        raise ValueError(f"seed {tuple(seed_zyx)} is more than {radius_mm} mm outside the volume {suv.shape}")
    pts, dist = pts[inside], dist[inside]
    values = suv[tuple(pts.T)]
    climbed = _climb(suv, seed, pts)
    if climbed is not None:
        return climbed
    # Highest value first, then nearest.
    i = np.lexsort((dist, -values))[0]
    return tuple(int(v) for v in pts[i])


def _climb(suv: np.ndarray, seed: np.ndarray, ball: np.ndarray):
    """The local maximum reached by steepest ascent from ``seed`` inside ``ball``, or None.

    A finding next to a hotter one (a node beside the primary) keeps its own peak. None when the
    seed lies outside the volume or on a plateau (no higher neighbour): then the ball's maximum.
    """
    allowed = _membership(ball)
    current = tuple(int(v) for v in seed)
    if not allowed(current):
        return None
    steps = 0
    shape = np.asarray(suv.shape)
    while True:
        lo = np.maximum(np.asarray(current) - 1, 0)
        hi = np.minimum(np.asarray(current) + 2, shape)
        block = suv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        best = tuple(int(v) for v in np.add(lo, np.unravel_index(int(np.argmax(block)), block.shape)))
        if suv[best] <= suv[current] or not allowed(best):
            return None if steps == 0 and np.all(block == suv[current]) else current
        current, steps = best, steps + 1


def _membership(points: np.ndarray):
    """``is_member(voxel)`` for the voxels ``points`` (n, 3): a lookup in a mask of their bounding box
    (a set of thousands of tuples costs more to build than the climb it serves)."""
    lo = points.min(axis=0)
    mask = np.zeros(tuple(points.max(axis=0) - lo + 1), dtype=bool)
    mask[tuple((points - lo).T)] = True

    def is_member(voxel) -> bool:
        i = np.asarray(voxel) - lo
        return bool(np.all(i >= 0) and np.all(i < mask.shape) and mask[tuple(i)])

    return is_member


def _ball_around(peak_zyx, half: np.ndarray, sp, max_radius_mm: float, shape):
    """The box of ``half`` voxels around a peak, the ball of ``max_radius_mm`` in it and the peak's index in the box."""
    lo = np.maximum(np.asarray(peak_zyx) - half, 0)
    hi = np.minimum(np.asarray(peak_zyx) + half + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    d2 = sum(((g - p) * s) ** 2 for g, p, s in zip(np.ogrid[box], peak_zyx, sp))
    return box, d2 <= max_radius_mm**2, tuple(int(p - a) for p, a in zip(peak_zyx, lo))


def _grow_until_contained(sub: np.ndarray, allowed: np.ndarray, shell: np.ndarray, local_peak, peak: float,
                          fraction: float, min_threshold_suv: float, leak_fraction_step: float,
                          max_peak_fraction: float):
    """The peak's connected region above ``fraction * peak``, the fraction raised while it reaches ``shell``.

    Returns the region, the fraction and threshold (SUV) used, and whether it still reaches the shell.
    """
    while True:
        thr = max(fraction * peak, min_threshold_suv)
        cand = (sub >= thr) & allowed
        cand[local_peak] = True
        lab, _ = ndi.label(cand)
        region = lab == lab[local_peak]
        capped = bool((region & shell).any())
        if not capped or leak_fraction_step <= 0 or fraction + leak_fraction_step > max_peak_fraction + 1e-9:
            return region, fraction, thr, capped
        fraction += leak_fraction_step


def segment_tumours(
    suv, seeds_zyx, spacing_xyz_mm, *, peak_fraction: float = PEAK_FRACTION,
    seed_search_radius_mm: float = SEED_SEARCH_RADIUS_MM, max_radius_mm: float = MAX_RADIUS_MM,
    min_peak_suv: float = MIN_PEAK_SUV, min_threshold_suv: float = MIN_THRESHOLD_SUV,
    leak_fraction_step: float = LEAK_FRACTION_STEP, max_peak_fraction: float = MAX_PEAK_FRACTION, allowed_mask=None,
):
    """Tumours as the connected region above a fraction of each finding's peak SUV.

    For each seed: the seed moves to the SUV maximum within ``seed_search_radius_mm``; the
    region is the 3D (face-connected) component containing it of
    ``suv >= max(peak_fraction * peak, min_threshold_suv)``, restricted to a ball of
    ``max_radius_mm`` around the moved seed so that a region cannot leak into the heart or
    another lesion. A region that reaches the ball's surface has leaked (e.g. a low-uptake node
    next to the blood pool): its fraction is raised by ``leak_fraction_step`` until it does not,
    up to ``max_peak_fraction`` (the paper's "minor adjustments of the thresholding parameters",
    made automatically and reported). The result is the union over seeds.

    Parameters
    ----------
    suv : ndarray, shape (z, y, x)
        SUV on the CT grid.
    seeds_zyx : sequence of (z, y, x)
        Approximate finding positions as CT voxel indices (may be fractional).
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing, SimpleITK order (x, y, z), mm.
    peak_fraction : float
        Fraction of the peak SUV that defines the region (the paper's 40%).
    seed_search_radius_mm : float
        Search radius (mm) for the local SUV maximum.
    max_radius_mm : float
        The region is capped by a ball of this radius (mm) around the moved seed.
    min_peak_suv : float
        A finding whose peak SUV is below it gets no region (reported in the info).
    min_threshold_suv : float
        Absolute floor of the threshold (SUV).
    leak_fraction_step : float
        Step by which the fraction is raised while the region reaches the cap; 0 disables it.
    max_peak_fraction : float
        The fraction is never raised above this.
    allowed_mask : ndarray of bool, optional
        Where tumour may lie (e.g. body); None allows everywhere.

    Returns
    -------
    tumours : ndarray of bool, shape (z, y, x)
    info : list of dict
        Per seed: ``seed_zyx`` (given), ``peak_zyx`` (moved seed), ``peak_suv``,
        ``peak_fraction`` (used), ``threshold_suv``, ``voxels`` (of that seed's region),
        ``capped`` (the final region still reaches the cap, i.e. it may have leaked).
    """
    suv = np.asarray(suv, dtype=np.float32)
    if suv.ndim != 3:
        raise ValueError(f"suv must be 3D (z, y, x), got shape {suv.shape}")
    if not 0 < peak_fraction < 1:
        raise ValueError(f"peak_fraction must be in (0, 1), got {peak_fraction}")
    sp = spacing_zyx(spacing_xyz_mm)
    out = np.zeros(suv.shape, dtype=bool)
    info = []
    half = np.ceil(max_radius_mm / sp).astype(int)
    for seed in seeds_zyx:
        peak_zyx = move_seed_to_peak(suv, seed, spacing_xyz_mm, seed_search_radius_mm)
        peak = float(suv[peak_zyx])
        entry = {"seed_zyx": tuple(float(v) for v in seed), "peak_zyx": peak_zyx, "peak_suv": peak,
                 "peak_fraction": float(peak_fraction), "threshold_suv": max(peak_fraction * peak, min_threshold_suv),
                 "voxels": 0, "capped": False}
        if peak < min_peak_suv or peak <= 0:
            info.append(entry)
            continue
        box, ball, local_peak = _ball_around(peak_zyx, half, sp, max_radius_mm, suv.shape)
        shell = ball & ~ndi.binary_erosion(ball, border_value=1)
        allowed = ball if allowed_mask is None else ball & np.asarray(allowed_mask, dtype=bool)[box]
        region, fraction, thr, capped = _grow_until_contained(
            suv[box], allowed, shell, local_peak, peak, float(peak_fraction), min_threshold_suv, leak_fraction_step,
            max_peak_fraction)
        entry.update(peak_fraction=fraction, threshold_suv=thr, capped=capped, voxels=int(region.sum()))
        out[box] |= region
        info.append(entry)
    return out, info
