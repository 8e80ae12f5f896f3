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
#: The cap of a finding whose report states its size (longest diameter, mm): a ball of
#: ``SIZE_CAP_FACTOR * size + SIZE_CAP_MARGIN_MM`` around the peak. No point of a tumour lies farther
#: from its peak than its longest diameter; the factor allows for a size measured in-plane or
#: rounded, the margin for the PET's blur (about one PSF FWHM).
SIZE_CAP_FACTOR = 1.2
SIZE_CAP_MARGIN_MM = 10.0
#: A finding without a stated size whose region at ``peak_fraction`` reaches the 50 mm cap may be a
#: large tumour: the region is grown again in balls up to this radius (mm) and kept if it closes
#: inside one (it stops growing) and is compact (see MIN_COMPACTNESS); otherwise the fraction is raised.
MAX_UNSIZED_RADIUS_MM = 100.0
UNSIZED_RADIUS_STEP_MM = 10.0
#: Volume over the ball whose radius is the region's largest distance from its centroid: a ball 1,
#: an irregular tumour about 0.3-0.6, a tumour that leaked through a neck into a vessel or the heart less.
MIN_COMPACTNESS = 0.25


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


def _grow_in_ball(suv: np.ndarray, peak_zyx, peak: float, sp: np.ndarray, radius_mm: float, allowed_mask,
                  fraction: float, min_threshold_suv: float, leak_fraction_step: float, max_peak_fraction: float):
    """:func:`_grow_until_contained` in the ball of ``radius_mm`` around the peak.

    Returns the ball's box (slices), the region in it, the fraction and threshold used and whether
    the region still reaches the ball's surface.
    """
    half = np.ceil(radius_mm / sp).astype(int)
    box, ball, local_peak = _ball_around(peak_zyx, half, sp, radius_mm, suv.shape)
    shell = ball & ~ndi.binary_erosion(ball, border_value=1)
    allowed = ball if allowed_mask is None else ball & np.asarray(allowed_mask, dtype=bool)[box]
    region, fraction, thr, capped = _grow_until_contained(
        suv[box], allowed, shell, local_peak, peak, fraction, min_threshold_suv, leak_fraction_step, max_peak_fraction)
    return box, region, fraction, thr, capped


def compactness(region, spacing_zyx_mm) -> float:
    """Volume of ``region`` over the ball whose radius is its largest distance from its centroid (0..1).

    About 1 for a ball, 0.4 for a half ball (a tumour flattened against the mediastinum), and low
    for a tumour joined through a neck to a vessel or the heart (the centroid moves between them).
    """
    pts = np.argwhere(region) * np.asarray(spacing_zyx_mm, dtype=float)
    if len(pts) == 0:
        return 0.0
    voxel_mm3 = float(np.prod(spacing_zyx_mm))
    # the voxel's own half-diagonal, so that a single voxel or a thin region is not over-penalised
    reach_mm = float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)).max()) + 0.5 * float(np.min(spacing_zyx_mm))
    return min(1.0, len(pts) * voxel_mm3 / (4.0 / 3.0 * np.pi * reach_mm**3))


def size_cap_radius_mm(size_mm: float, *, size_cap_factor: float = SIZE_CAP_FACTOR,
                       size_cap_margin_mm: float = SIZE_CAP_MARGIN_MM) -> float:
    """Cap radius (mm) around the peak of a finding whose report states its longest diameter ``size_mm``."""
    return float(size_cap_factor) * float(size_mm) + float(size_cap_margin_mm)


def _stated_size(sizes_mm, i: int) -> float | None:
    """The i-th stated size (mm) if it is a positive finite number, else None."""
    if sizes_mm is None:
        return None
    value = sizes_mm[i]
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if np.isfinite(value) and value > 0 else None


def _grow_unsized(suv, peak_zyx, peak, sp, allowed_mask, peak_fraction, min_threshold_suv, *, start_mm: float,
                  max_unsized_radius_mm: float, unsized_radius_step_mm: float, min_compactness: float):
    """The ``peak_fraction`` region in balls growing from ``start_mm`` to ``max_unsized_radius_mm``:
    the first that closes inside its ball (not reaching its surface nor the volume's border), if
    compact, as ``(box, region, radius_mm)``; else None."""
    if unsized_radius_step_mm <= 0:
        return None
    for radius in np.arange(start_mm + unsized_radius_step_mm, max_unsized_radius_mm + 1e-9, unsized_radius_step_mm):
        box, region, _, _, capped = _grow_in_ball(suv, peak_zyx, peak, sp, float(radius), allowed_mask,
                                                  peak_fraction, min_threshold_suv, 0.0, peak_fraction)
        if not capped:
            if _touches_volume_border(region, box, suv.shape):
                return None                  # cut by the field of view: it has not closed off
            return (box, region, float(radius)) if compactness(region, sp) >= min_compactness else None
    return None


def _touches_volume_border(region: np.ndarray, box, shape) -> bool:
    """Whether ``region`` (in the volume's sub-box ``box``) has a voxel on a face of the whole volume."""
    for axis, (sl, n) in enumerate(zip(box, shape)):
        face = [slice(None)] * 3
        for at_border, index in ((sl.start == 0, 0), (sl.stop == n, -1)):
            face[axis] = index
            if at_border and region[tuple(face)].any():
                return True
    return False


def _region_of_finding(suv, peak_zyx, peak: float, sp, radius: float, unsized: bool, allowed_mask, g: dict):
    """One finding's region in its ball of ``radius`` (mm): the box, the region, the fraction and threshold
    used, whether it is still capped and the radius used. ``g``: the growth keywords of
    :func:`segment_tumours`."""
    fraction = g["peak_fraction"]
    if unsized and g["max_unsized_radius_mm"] > g["max_radius_mm"]:
        # a region that reaches the ball at the paper's fraction may be a large tumour: does it close
        # off, compact, in a larger ball before the fraction is raised?
        capped = _grow_in_ball(suv, peak_zyx, peak, sp, radius, allowed_mask, fraction, g["min_threshold_suv"],
                               0.0, fraction)[4]
        larger = None if not capped else _grow_unsized(
            suv, peak_zyx, peak, sp, allowed_mask, fraction, g["min_threshold_suv"], start_mm=g["max_radius_mm"],
            max_unsized_radius_mm=g["max_unsized_radius_mm"], unsized_radius_step_mm=g["unsized_radius_step_mm"],
            min_compactness=g["min_compactness"])
        if larger is not None:
            box, region, used_mm = larger
            return box, region, fraction, max(fraction * peak, g["min_threshold_suv"]), False, used_mm
    box, region, fraction, thr, capped = _grow_in_ball(
        suv, peak_zyx, peak, sp, radius, allowed_mask, fraction, g["min_threshold_suv"], g["leak_fraction_step"],
        g["max_peak_fraction"])
    return box, region, fraction, thr, capped, float(radius)


def segment_tumours(
    suv, seeds_zyx, spacing_xyz_mm, *, peak_fraction: float = PEAK_FRACTION,
    seed_search_radius_mm: float = SEED_SEARCH_RADIUS_MM, max_radius_mm: float = MAX_RADIUS_MM,
    min_peak_suv: float = MIN_PEAK_SUV, min_threshold_suv: float = MIN_THRESHOLD_SUV,
    leak_fraction_step: float = LEAK_FRACTION_STEP, max_peak_fraction: float = MAX_PEAK_FRACTION,
    size_cap_factor: float = SIZE_CAP_FACTOR, size_cap_margin_mm: float = SIZE_CAP_MARGIN_MM,
    max_unsized_radius_mm: float = MAX_UNSIZED_RADIUS_MM, unsized_radius_step_mm: float = UNSIZED_RADIUS_STEP_MM,
    min_compactness: float = MIN_COMPACTNESS, allowed_mask=None, sizes_mm=None,
):
    """Tumours as the connected region above a fraction of each finding's peak SUV (docs/groundtruth.md).

    For each seed: the seed moves to its own SUV peak within ``seed_search_radius_mm``; the region
    is the 3D (face-connected) component holding it of ``suv >= max(peak_fraction * peak,
    min_threshold_suv)``, in a ball around it that follows the tumour: ``size_cap_factor * size +
    size_cap_margin_mm`` where the report states the finding's size (longest diameter), else
    ``max_radius_mm``. A region that reaches the ball has leaked (a node beside the blood pool) or is
    a large tumour: without a stated size it is first grown in balls up to ``max_unsized_radius_mm``
    (steps of ``unsized_radius_step_mm``) and kept where it closes inside one and is compact
    (:func:`compactness` >= ``min_compactness``); otherwise its fraction is raised by
    ``leak_fraction_step`` until it no longer reaches the ball, up to ``max_peak_fraction`` (the
    paper's "minor adjustments of the thresholding parameters", made automatically and reported).
    A finding whose peak is below ``min_peak_suv`` gets no region. The result is the union.

    Parameters
    ----------
    suv : ndarray, shape (z, y, x)
        SUV on the CT grid.
    seeds_zyx : sequence of (z, y, x)
        Approximate finding positions as CT voxel indices (may be fractional).
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing, SimpleITK order (x, y, z), mm.
    peak_fraction, seed_search_radius_mm, max_radius_mm, min_peak_suv : float
        As above (fraction of the peak, mm, mm, SUV).
    min_threshold_suv, leak_fraction_step, max_peak_fraction : float
        As above (SUV, fractions of the peak).
    size_cap_factor, size_cap_margin_mm, max_unsized_radius_mm, unsized_radius_step_mm, min_compactness : float
        The size guard, as above; ``max_unsized_radius_mm <= max_radius_mm`` disables the larger balls.
    allowed_mask : ndarray of bool, optional
        Where tumour may lie (e.g. body); None allows everywhere.
    sizes_mm : sequence of (float or None), optional
        Per seed, the longest diameter (mm) the report states; None where it states none.

    Returns
    -------
    tumours : ndarray of bool, shape (z, y, x)
    info : list of dict
        Per seed: ``seed_zyx`` (given), ``peak_zyx`` (moved seed), ``peak_suv``, ``peak_fraction``
        (used), ``threshold_suv``, ``voxels`` (of that seed's region), ``capped`` (the final region
        still reaches its ball, i.e. it may have leaked), ``size_mm`` (stated, or None),
        ``cap_radius_mm`` (the ball used) and ``max_ml`` (with a stated size, the volume of a ball
        whose diameter is the cap radius: no two points of the tumour lie farther apart, and no set of
        that diameter is larger, the isodiametric inequality; None without).
    """
    suv = np.asarray(suv, dtype=np.float32)
    if suv.ndim != 3:
        raise ValueError(f"suv must be 3D (z, y, x), got shape {suv.shape}")
    if not 0 < peak_fraction < 1:
        raise ValueError(f"peak_fraction must be in (0, 1), got {peak_fraction}")
    if sizes_mm is not None and len(sizes_mm) != len(seeds_zyx):
        raise ValueError(f"sizes_mm has {len(sizes_mm)} entries for {len(seeds_zyx)} seeds")
    sp = spacing_zyx(spacing_xyz_mm)
    out = np.zeros(suv.shape, dtype=bool)
    info = []
    for i, seed in enumerate(seeds_zyx):
        peak_zyx = move_seed_to_peak(suv, seed, spacing_xyz_mm, seed_search_radius_mm)
        peak = float(suv[peak_zyx])
        size = _stated_size(sizes_mm, i)
        radius = max_radius_mm if size is None else size_cap_radius_mm(
            size, size_cap_factor=size_cap_factor, size_cap_margin_mm=size_cap_margin_mm)
        entry = {"seed_zyx": tuple(float(v) for v in seed), "peak_zyx": peak_zyx, "peak_suv": peak,
                 "peak_fraction": float(peak_fraction), "threshold_suv": max(peak_fraction * peak, min_threshold_suv),
                 "voxels": 0, "capped": False, "size_mm": size, "cap_radius_mm": float(radius),
                 "max_ml": None if size is None else float(np.pi / 6.0 * radius**3 / 1000.0)}
        if peak < min_peak_suv or peak <= 0:
            info.append(entry)
            continue
        box, region, fraction, thr, capped, entry["cap_radius_mm"] = _region_of_finding(
            suv, peak_zyx, peak, sp, radius, size is None, allowed_mask, dict(
                peak_fraction=float(peak_fraction), min_threshold_suv=min_threshold_suv,
                leak_fraction_step=leak_fraction_step, max_peak_fraction=max_peak_fraction,
                max_radius_mm=max_radius_mm, max_unsized_radius_mm=max_unsized_radius_mm,
                unsized_radius_step_mm=unsized_radius_step_mm, min_compactness=min_compactness))
        entry.update(peak_fraction=fraction, threshold_suv=thr, capped=capped, voxels=int(region.sum()))
        out[box] |= region
        info.append(entry)
    return out, info
