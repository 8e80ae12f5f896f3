"""Lung segmentation from CT after Hu, Hoffman and Reinhardt (IEEE TMI 2001), the paper's [46].

Steps: an iterative optimal threshold separates low-density voxels (lungs, airways, air outside
the body) from the body; air connected to the border of each axial slice (outside the body, under
the table, beyond the reconstruction circle) is discarded; the trachea and main bronchi are found
from the superior slices as the largest very-low-density component and removed (the threshold of
that region growing is made stricter until the airway stops leaking); the two largest remaining
components are the lungs, whose vessels and holes are filled by a small closing and per-slice hole
filling.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from colearn_pipeline.groundtruth._morphology import (
    IN_PLANE_STRUCTURE,
    bounding_box,
    closing,
    component_sizes,
    dilation,
    disk_footprint,
    ellipsoid_footprint,
    fill_holes_per_slice,
    opening,
    spacing_zyx,
)
from colearn_pipeline.groundtruth.mediastinum import (
    below_fitted_diaphragm,
    hull_within,
    lung_sides,
)

#: Defaults of :func:`optimal_threshold_hu`.
INITIAL_THRESHOLD_HU = -500.0
THRESHOLD_TOLERANCE_HU = 0.5
THRESHOLD_MAX_ITERATIONS = 100
#: HU below this are padding (outside the reconstruction circle) and are clipped to it.
AIR_FLOOR_HU = -1024.0

#: Defaults of :func:`segment_lungs` (see docs/groundtruth.md).
SMOOTHING_SIGMA_MM = 1.0
AIRWAY_THRESHOLD_HU = -950.0
AIRWAY_THRESHOLD_STEP_HU = 20.0
AIRWAY_MIN_THRESHOLD_HU = -1010.0
AIRWAY_MAX_VOLUME_ML = 150.0
AIRWAY_MIN_VOLUME_ML = 1.0
AIRWAY_SEARCH_FRACTION = 0.15
AIRWAY_DILATION_MM = 1.5
LUNG_CLOSING_RADIUS_MM = 2.0
BODY_OPENING_RADIUS_MM = 5.0
MAX_HOLE_AREA_MM2 = 700.0
#: In-plane grid (mm) on which the body mask is computed.
BODY_GRID_MM = 2.0
LUNG_MIN_VOLUME_FRACTION = 0.05
MAX_LUNG_COMPONENTS = 2
#: Airless lung inside a lung's outline (:func:`consolidated_lung`; issue 23): soft tissue in this CT
#: window (pleural fluid, 0-20 HU, stays below it: it is not lung), inside one lung's per-slice convex
#: hull and above the diaphragm fitted to the lung bases, cut from thin bridges by an in-plane opening,
#: in 3D pieces of which at least this share of the in-plane border lies within CONSOLIDATION_BAND_MM
#: of aerated lung (the partial-volume seam), of at least this volume. A contact above 1 disables the step.
CONSOLIDATION_MIN_HU = 20.0
CONSOLIDATION_MAX_HU = 150.0
CONSOLIDATION_OPENING_MM = 3.0
CONSOLIDATION_MIN_LUNG_CONTACT = 0.5
CONSOLIDATION_MIN_VOLUME_ML = 2.0
CONSOLIDATION_BAND_MM = 4.0
#: Candidate voxels are above this (fat is below it); a piece whose median CT is below ``min_hu`` is fluid.
CONSOLIDATION_VOXEL_MIN_HU = -30.0
#: Lungs smaller than this on a slice (mm²) are not split into two sides (:func:`lung_sides`).
SIDE_MIN_AREA_MM2 = 100.0

_ML_PER_MM3 = 1e-3


def optimal_threshold_hu(
    ct_hu,
    initial_hu: float = INITIAL_THRESHOLD_HU,
    tolerance_hu: float = THRESHOLD_TOLERANCE_HU,
    max_iterations: int = THRESHOLD_MAX_ITERATIONS,
    *,
    air_floor_hu: float = AIR_FLOOR_HU,
    mask=None,
) -> float:
    """Iterative optimal threshold separating body from non-body voxels (Hu et al. 2001).

    Starting from ``initial_hu``, the threshold becomes the midpoint of the mean of the voxels
    below it and the mean of the voxels at or above it, until it moves less than
    ``tolerance_hu``.

    Parameters
    ----------
    ct_hu : ndarray
        CT in Hounsfield units, any shape.
    initial_hu : float
        Starting threshold (HU); Hu et al. start at -500.
    tolerance_hu : float
        Convergence tolerance (HU).
    max_iterations : int
        Upper bound on the iterations.
    air_floor_hu : float, keyword-only
        Values below it (padding outside the reconstruction circle) are clipped to it, so that
        padding values such as -3024 do not pull the non-body mean down.
    mask : ndarray of bool, optional
        Only these voxels are used.

    Returns
    -------
    float
        The threshold in HU.

    Raises
    ------
    ValueError
        If there are no voxels, or no voxel lies on one side of ``initial_hu``.
    """
    values = np.asarray(ct_hu)
    if mask is not None:
        values = values[np.asarray(mask, dtype=bool)]
    if values.size == 0:
        raise ValueError("optimal_threshold_hu: no voxels")
    lo = max(float(values.min()), air_floor_hu)
    hi = max(float(values.max()), air_floor_hu)
    _check_range(lo, hi, initial_hu)
    counts, sums = _histogram_1hu(values, np.floor(lo), hi, air_floor_hu)
    return _threshold_from_histogram(counts, sums, np.floor(lo), initial_hu, tolerance_hu, max_iterations)


def _check_range(lo: float, hi: float, initial_hu: float) -> None:
    if not lo < initial_hu <= hi:
        raise ValueError(
            f"optimal_threshold_hu: all voxels lie on one side of initial_hu={initial_hu} "
            f"(range {lo:.0f}..{hi:.0f} HU)"
        )


#: Voxels per chunk of :func:`_histogram_1hu` (bounds its float64 temporaries to a few MB).
_HISTOGRAM_CHUNK = 1 << 19


def _histogram_1hu(values, offset: float, hi: float, air_floor_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """Count and sum of ``max(values, air_floor_hu)`` in 1 HU bins ``[offset + k, offset + k + 1)``.

    ``offset`` is an integer no larger than any clipped value and ``hi`` their maximum; the
    values are taken in chunks so that no float64 copy of a whole CT is made.
    """
    flat = np.ravel(values)
    n_bins = int(np.floor(hi - offset)) + 1
    counts = np.zeros(n_bins, dtype=np.int64)
    sums = np.zeros(n_bins, dtype=np.float64)
    for start in range(0, flat.size, _HISTOGRAM_CHUNK):
        chunk = np.maximum(flat[start : start + _HISTOGRAM_CHUNK].astype(np.float64), air_floor_hu)
        idx = np.floor(chunk - offset).astype(np.intp)
        counts += np.bincount(idx, minlength=n_bins)
        sums += np.bincount(idx, weights=chunk, minlength=n_bins)
    return counts, sums


def _threshold_from_histogram(counts, sums, offset, initial_hu, tolerance_hu, max_iterations) -> float:
    """Hu et al.'s iteration on a 1 HU histogram: every iteration is O(bins), not O(voxels)."""
    centres = offset + np.arange(counts.size) + 0.5
    cum_n = np.cumsum(counts)
    cum_s = np.cumsum(sums)
    total_n, total_s = cum_n[-1], cum_s[-1]
    threshold = float(initial_hu)
    for _ in range(int(max_iterations)):
        k = int(np.searchsorted(centres, threshold))  # bins with centre < threshold: [0, k)
        n_low = cum_n[k - 1] if k > 0 else 0
        s_low = cum_s[k - 1] if k > 0 else 0.0
        n_high = total_n - n_low
        if n_low == 0 or n_high == 0:
            break
        new = 0.5 * (s_low / n_low + (total_s - s_low) / n_high)
        if abs(new - threshold) < tolerance_hu:
            threshold = new
            break
        threshold = new
    return float(threshold)


def _outside_air(dark: np.ndarray) -> np.ndarray:
    """Dark voxels connected, within their axial slice, to the slice border."""
    lab, n = ndi.label(dark, structure=IN_PLANE_STRUCTURE)
    if n == 0:
        return np.zeros_like(dark)
    border = np.unique(
        np.concatenate([lab[:, 0, :].ravel(), lab[:, -1, :].ravel(), lab[:, :, 0].ravel(), lab[:, :, -1].ravel()])
    )
    keep = np.zeros(n + 1, dtype=bool)
    keep[border] = True
    keep[0] = False
    return keep[lab]


def body_mask(dark: np.ndarray, spacing_xyz_mm, *, opening_radius_mm: float = BODY_OPENING_RADIUS_MM) -> np.ndarray:
    """The patient's body, its lungs and airways included, without the scanner table.

    The non-dark voxels are opened in-plane with a disk of ``opening_radius_mm`` (cutting thin
    contacts and thin table shells), the largest 3D component is kept and grown back by the same
    disk within the non-dark voxels, and every slice's holes (lungs, airways) are filled.

    Parameters
    ----------
    dark : ndarray of bool, shape (z, y, x)
        Voxels below the lung/body threshold.
    spacing_xyz_mm : sequence of 3 float
    opening_radius_mm : float

    Returns
    -------
    ndarray of bool
    """
    solid = ~np.asarray(dark, dtype=bool)
    sp = spacing_zyx(spacing_xyz_mm)
    # The body only has to be right to a few mm (it cuts the table off): work on a grid of about
    # ``BODY_GRID_MM`` in-plane, which makes the opening cheap on 512x512 slices.
    step = _body_grid_step(sp)
    small = solid[:, ::step, ::step]
    coarse = (sp[0], sp[1] * step, sp[2] * step)[::-1]
    disk = disk_footprint(opening_radius_mm, coarse)
    core = opening(small, disk)
    lab, n = ndi.label(core)
    if n == 0:
        body = fill_holes_per_slice(small)
    else:
        core = lab == (np.argmax(component_sizes(lab, n)) + 1)
        body = fill_holes_per_slice(dilation(core, disk) & small)
    if step == 1:
        return body
    # Close the staircase of the upsampling: every non-dark voxel next to the coarse body. The
    # fine body is a union of step x step blocks, so its dilation by step voxels is the upsampled
    # coarse dilation by one pixel.
    near = ndi.binary_dilation(body, structure=np.ones((1, 3, 3), bool))
    return fill_holes_per_slice(_upsampled(body, step, solid.shape) | (_upsampled(near, step, solid.shape) & solid))


def _body_grid_step(sp_zyx: np.ndarray) -> int:
    return max(1, int(BODY_GRID_MM // max(sp_zyx[1], sp_zyx[2])))


def _upsampled(coarse: np.ndarray, step: int, shape) -> np.ndarray:
    """Repeat every in-plane pixel ``step`` times along y and x, cropped to ``shape``."""
    return np.repeat(np.repeat(coarse, step, axis=2), step, axis=1)[:, : shape[1], : shape[2]]  # 8x a broadcast reshape


def find_airway(
    ct_smooth_hu: np.ndarray,
    candidates: np.ndarray,
    spacing_xyz_mm,
    *,
    airway_threshold_hu: float = AIRWAY_THRESHOLD_HU,
    airway_threshold_step_hu: float = AIRWAY_THRESHOLD_STEP_HU,
    airway_min_threshold_hu: float = AIRWAY_MIN_THRESHOLD_HU,
    airway_max_volume_ml: float = AIRWAY_MAX_VOLUME_ML,
    airway_min_volume_ml: float = AIRWAY_MIN_VOLUME_ML,
    airway_search_fraction: float = AIRWAY_SEARCH_FRACTION,
    superior_at_high_z: bool = True,
) -> tuple[np.ndarray, float | None]:
    """Trachea and main bronchi: the largest very-dark component reaching the superior slab.

    The component of ``candidates & (ct < threshold)`` (3D, face connectivity) with most voxels
    among those that reach the superior ``airway_search_fraction`` of the slices is taken. If it is
    larger than ``airway_max_volume_ml`` it has leaked into the parenchyma, and the threshold is
    lowered by ``airway_threshold_step_hu`` until it is not (Hu et al.'s leak control), down to
    ``airway_min_threshold_hu``.

    Returns
    -------
    airway : ndarray of bool
        The airway (all False when none is found).
    threshold_hu : float or None
        The threshold used, None when no airway was found.
    """
    voxel_ml = float(np.prod(spacing_zyx(spacing_xyz_mm))) * _ML_PER_MM3
    nz = candidates.shape[0]
    n_slab = max(1, int(round(airway_search_fraction * nz)))
    slab = slice(nz - n_slab, nz) if superior_at_high_z else slice(0, n_slab)
    threshold = float(airway_threshold_hu)
    while threshold >= airway_min_threshold_hu:
        strict = candidates & (ct_smooth_hu < threshold)
        lab, n = ndi.label(strict)
        if n == 0:
            break
        in_slab = np.unique(lab[slab])
        in_slab = in_slab[in_slab > 0]
        if in_slab.size == 0:
            break
        sizes = component_sizes(lab, n)
        best = in_slab[np.argmax(sizes[in_slab - 1])]
        volume_ml = sizes[best - 1] * voxel_ml
        if volume_ml < airway_min_volume_ml:
            break
        if volume_ml <= airway_max_volume_ml:
            return lab == best, threshold
        threshold -= airway_threshold_step_hu
    return np.zeros_like(candidates), None


def _lung_candidates(ct_s: np.ndarray, threshold_hu: float, spacing_xyz_mm, body_opening_radius_mm: float):
    """Dark voxels inside the body and not connected to the outside air, cropped to their in-plane box.

    Returns the crop (all slices: the airway search slab is counted in slices), the cropped
    candidates and the cropped smoothed CT.
    """
    dark = ct_s < threshold_hu
    candidates = dark & ~_outside_air(dark) & body_mask(dark, spacing_xyz_mm, opening_radius_mm=body_opening_radius_mm)
    del dark
    inner = bounding_box(candidates)
    inner = (slice(None), *inner[1:]) if inner is not None else (slice(None),) * 3
    return inner, candidates[inner], ct_s[inner]


def _airway_to_remove(ct_s: np.ndarray, candidates: np.ndarray, spacing_xyz_mm, remove_airway: bool,
                      airway_dilation_mm: float, airway_params: dict) -> tuple[np.ndarray, float | None]:
    """The dilated airway (:func:`find_airway`) and its threshold; nothing when ``remove_airway`` is False."""
    if not remove_airway:
        return np.zeros_like(candidates), None
    airway, airway_thr = find_airway(ct_s, candidates, spacing_xyz_mm, **airway_params)
    if airway_dilation_mm > 0 and airway.any():
        airway = dilation(airway, ellipsoid_footprint(airway_dilation_mm, spacing_xyz_mm))
    return airway, airway_thr


def _lungs_from_candidates(candidates: np.ndarray, airway: np.ndarray | None, spacing_xyz_mm,
                           closing_radius_mm: float, max_hole_px: float | None, max_components: int,
                           min_volume_fraction: float) -> tuple[np.ndarray, int]:
    """The largest components, closed and with their small holes filled; the airway stays out."""
    lungs, kept = _largest_components(candidates, max_components, min_volume_fraction)
    if kept:
        lungs = fill_holes_per_slice(closing(lungs, ellipsoid_footprint(closing_radius_mm, spacing_xyz_mm)), max_hole_px)
        # The closing must not bring the airway back where it touches the lungs at the hila.
        if airway is not None and airway.any():
            lungs &= ~(airway & ~fill_holes_per_slice(lungs & ~airway, max_hole_px))
    return lungs, kept


def _hull_per_slice(lung: np.ndarray, within: np.ndarray) -> np.ndarray:
    """The voxels of ``within`` inside the convex hull of ``lung`` on their slice."""
    hull = np.zeros_like(lung)
    for z in np.flatnonzero(lung.any(axis=(1, 2)) & within.any(axis=(1, 2))):
        hull[z] = hull_within(lung[z], within[z])
    return hull


def _lung_contact(component: np.ndarray, near_lung: np.ndarray) -> float:
    """Share of ``component``'s in-plane border pixels inside ``near_lung``."""
    border = component & ~ndi.binary_erosion(component, IN_PLANE_STRUCTURE, border_value=1)
    n = int(np.count_nonzero(border))
    return float(np.count_nonzero(border & near_lung)) / n if n else 0.0


def consolidated_lung(lungs, ct_s, spacing_xyz_mm, *, min_hu: float = CONSOLIDATION_MIN_HU,
                      max_hu: float = CONSOLIDATION_MAX_HU, opening_mm: float = CONSOLIDATION_OPENING_MM,
                      min_lung_contact: float = CONSOLIDATION_MIN_LUNG_CONTACT,
                      min_volume_ml: float = CONSOLIDATION_MIN_VOLUME_ML, lower_hu: float | None = None) -> np.ndarray:
    """Airless (consolidated or collapsed) lung inside the outline of one lung (superior at high z).

    Radiotherapy contouring atlases draw "all inflated and collapsed lung" (Kong et al., IJROBP
    2011): a consolidated lobe beside the mediastinum is lung, not mediastinum. Candidates: CT in
    ``(CONSOLIDATION_VOXEL_MIN_HU, max_hu]`` (no fat), not lung, inside the per-slice convex hull of one
    lung (:func:`lung_sides`) and not under the diaphragm fitted to the lung bases (the liver dome
    inside a base's ring); an in-plane opening of ``opening_mm`` cuts the vessels that bridge them
    to the hila. A 3D piece is airless lung when its median CT is at least ``min_hu`` (pleural
    fluid, 0-20 HU, is not lung), at least ``min_lung_contact`` of its in-plane
    border lies within ``CONSOLIDATION_BAND_MM`` of aerated lung (the heart and vessels in a lung's concavity
    are bordered by fat and by the hull's chord) and it holds ``min_volume_ml``. The partial-volume
    seam to the aerated lung (CT above ``lower_hu``, the lung threshold) is added with it.

    Parameters
    ----------
    lungs : ndarray of bool, shape (z, y, x)
        The aerated lungs.
    ct_s : ndarray, shape (z, y, x)
        CT in HU (smoothed).
    spacing_xyz_mm : sequence of 3 float

    Returns
    -------
    ndarray of bool
        The airless lung (none of ``lungs``).
    """
    lungs = np.asarray(lungs, dtype=bool)
    out = np.zeros_like(lungs)
    if min_lung_contact > 1 or not lungs.any():
        return out
    sp = spacing_zyx(spacing_xyz_mm)
    _, right, left = lung_sides(lungs, SIDE_MIN_AREA_MM2 / (sp[1] * sp[2]))
    lower = min_hu if lower_hu is None else lower_hu
    # the hull is only needed at the candidates and at the seam's voxels
    within = ~lungs & (ct_s >= min(lower, CONSOLIDATION_VOXEL_MIN_HU)) & (ct_s <= max_hu)
    hull = _hull_per_slice(right, within) | _hull_per_slice(left, within)
    cand = hull & (ct_s > CONSOLIDATION_VOXEL_MIN_HU)
    cand &= ~below_fitted_diaphragm(right, left, spacing_xyz_mm, margin_mm=0.0)
    if opening_mm > 0:
        cand = opening(cand, disk_footprint(opening_mm, spacing_xyz_mm))
    band_px = max(1, int(round(CONSOLIDATION_BAND_MM / float(sp[1:].max()))))
    lab, _ = ndi.label(cand)
    min_voxels = min_volume_ml * 1000.0 / float(np.prod(sp))
    for i, box in enumerate(ndi.find_objects(lab), start=1):
        comp = lab[box] == i
        if np.count_nonzero(comp) < min_voxels or np.median(ct_s[box][comp]) < min_hu:
            continue
        # the band around the lungs, in the piece's box grown by twice its width (seam included)
        grown = (box[0], *(slice(max(b.start - 2 * band_px, 0), b.stop + 2 * band_px) for b in box[1:]))
        near_lung = ndi.binary_dilation(lungs[grown], IN_PLANE_STRUCTURE, iterations=band_px)
        piece = lab[grown] == i
        if _lung_contact(piece, near_lung) < min_lung_contact:
            continue
        seam = ndi.binary_dilation(piece, IN_PLANE_STRUCTURE, iterations=band_px) & hull[grown] & ~lungs[grown]
        out[grown] |= piece | (seam & near_lung & (ct_s[grown] >= lower) & (ct_s[grown] <= max_hu))
    return out


def segment_lungs(
    ct_hu, spacing_xyz_mm, *, threshold_hu: float | None = None, initial_hu: float = INITIAL_THRESHOLD_HU,
    tolerance_hu: float = THRESHOLD_TOLERANCE_HU, max_iterations: int = THRESHOLD_MAX_ITERATIONS,
    air_floor_hu: float = AIR_FLOOR_HU, smoothing_sigma_mm: float = SMOOTHING_SIGMA_MM,
    airway_threshold_hu: float = AIRWAY_THRESHOLD_HU, airway_threshold_step_hu: float = AIRWAY_THRESHOLD_STEP_HU,
    airway_min_threshold_hu: float = AIRWAY_MIN_THRESHOLD_HU, airway_max_volume_ml: float = AIRWAY_MAX_VOLUME_ML,
    airway_min_volume_ml: float = AIRWAY_MIN_VOLUME_ML, airway_search_fraction: float = AIRWAY_SEARCH_FRACTION,
    airway_dilation_mm: float = AIRWAY_DILATION_MM, remove_airway: bool = True, superior_at_high_z: bool = True,
    closing_radius_mm: float = LUNG_CLOSING_RADIUS_MM, body_opening_radius_mm: float = BODY_OPENING_RADIUS_MM,
    max_hole_area_mm2: float | None = MAX_HOLE_AREA_MM2, min_volume_fraction: float = LUNG_MIN_VOLUME_FRACTION,
    max_components: int = MAX_LUNG_COMPONENTS, consolidation_min_hu: float = CONSOLIDATION_MIN_HU,
    consolidation_max_hu: float = CONSOLIDATION_MAX_HU, consolidation_opening_mm: float = CONSOLIDATION_OPENING_MM,
    consolidation_min_lung_contact: float = CONSOLIDATION_MIN_LUNG_CONTACT,
    consolidation_min_volume_ml: float = CONSOLIDATION_MIN_VOLUME_ML, return_info: bool = False,
):
    """Segment both lungs in a thoracic CT.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
        CT in HU.
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing in SimpleITK order (x, y, z), mm.
    threshold_hu : float, optional
        Fixed lung/body threshold (HU); by default :func:`optimal_threshold_hu` of the smoothed CT.
    initial_hu, tolerance_hu, max_iterations, air_floor_hu : float
        Passed to :func:`optimal_threshold_hu`.
    smoothing_sigma_mm : float
        Gaussian smoothing of the CT before thresholding (mm); 0 disables it.
    airway_threshold_hu, airway_threshold_step_hu, airway_min_threshold_hu, airway_max_volume_ml, airway_min_volume_ml, airway_search_fraction, superior_at_high_z
        Initial threshold (HU, stricter than the lung one), leak control and search slab of
        :func:`find_airway` (trachea and main bronchi); ``superior_at_high_z`` is True when the last
        slice is the most superior (the architecture's axial slice order, +z = superior in LPS).
    airway_dilation_mm : float
        The airway is dilated by this (mm) before removal, to take the partial-volume wall too.
    remove_airway : bool
        False keeps the airway (e.g. a scan with no trachea in the field of view).
    closing_radius_mm : float
        Radius (mm) of the 3D closing that fills vessels at the lung border.
    body_opening_radius_mm : float
        In-plane opening (mm) that separates the body from the scanner table, see :func:`body_mask`.
    max_hole_area_mm2 : float or None
        Only holes of a slice up to this area (mm²) are filled (vessels, small nodules), not the
        larger liver dome or stomach seen through the lung bases. None fills every hole.
    min_volume_fraction, max_components : float, int
        At most ``max_components`` components (the two lungs) are kept; one other than the largest
        only if it has at least ``min_volume_fraction`` of the largest's volume.
    consolidation_min_hu, consolidation_max_hu, consolidation_opening_mm : float
        Airless lung inside a lung's outline is added (:func:`consolidated_lung`: ``min_hu``,
        ``max_hu``, ``opening_mm``) ...
    consolidation_min_lung_contact, consolidation_min_volume_ml : float
        ... (``min_lung_contact``, above 1 disables it; ``min_volume_ml``).
    return_info : bool
        Also return a dict with the thresholds used.

    Returns
    -------
    lungs : ndarray of bool, shape (z, y, x)
    info : dict, only with ``return_info``
        ``threshold_hu``, ``airway_threshold_hu`` (None if no airway found), ``n_components``,
        ``consolidated_voxels`` (airless lung added),
        ``airway_mask`` (bool array: the trachea and main bronchi taken out of the lungs, with
        their dilation; :func:`segment_mediastinum` can add it to the mediastinum).
    """
    ct = np.asarray(ct_hu, dtype=np.float32)
    if ct.ndim != 3:
        raise ValueError(f"ct_hu must be 3D (z, y, x), got shape {ct.shape}")
    sp = spacing_zyx(spacing_xyz_mm)
    box, ct_s, threshold_hu = _smoothed_and_threshold(
        ct, sp, threshold_hu, smoothing_sigma_mm, initial_hu, tolerance_hu, max_iterations, air_floor_hu
    )
    inner, candidates, ct_s = _lung_candidates(ct_s, threshold_hu, spacing_xyz_mm, body_opening_radius_mm)
    airway, airway_thr = _airway_to_remove(ct_s, candidates, spacing_xyz_mm, remove_airway, airway_dilation_mm, dict(
        airway_threshold_hu=airway_threshold_hu, airway_threshold_step_hu=airway_threshold_step_hu,
        airway_min_threshold_hu=airway_min_threshold_hu, airway_max_volume_ml=airway_max_volume_ml,
        airway_min_volume_ml=airway_min_volume_ml, airway_search_fraction=airway_search_fraction,
        superior_at_high_z=superior_at_high_z))
    candidates &= ~airway
    max_hole_px = None if max_hole_area_mm2 is None else max_hole_area_mm2 / (sp[1] * sp[2])
    lungs, kept = _lungs_from_candidates(candidates, airway if remove_airway else None, spacing_xyz_mm,
                                         closing_radius_mm, max_hole_px, max_components, min_volume_fraction)
    airless = _airless(lungs, ct_s, spacing_xyz_mm, superior_at_high_z, dict(
        min_hu=consolidation_min_hu, max_hu=consolidation_max_hu, opening_mm=consolidation_opening_mm,
        min_lung_contact=consolidation_min_lung_contact, min_volume_ml=consolidation_min_volume_ml,
        lower_hu=threshold_hu))
    lungs |= airless
    lungs_full, airway_full = np.zeros(ct.shape, dtype=bool), np.zeros(ct.shape, dtype=bool)
    lungs_full[box][inner] = lungs
    if return_info:
        airway_full[box][inner] = airway & ~lungs if remove_airway else airway
        return lungs_full, {"threshold_hu": float(threshold_hu), "airway_threshold_hu": airway_thr,
                            "n_components": kept, "consolidated_voxels": int(np.count_nonzero(airless)),
                            "airway_mask": airway_full}
    return lungs_full


def _airless(lungs: np.ndarray, ct_s: np.ndarray, spacing_xyz_mm, superior_at_high_z: bool, params: dict) -> np.ndarray:
    """:func:`consolidated_lung` with the volume turned so that the last slice is the most superior."""
    flip = slice(None, None, 1 if superior_at_high_z else -1)
    return consolidated_lung(lungs[flip], ct_s[flip], spacing_xyz_mm, **params)[flip]


def _largest_components(candidates: np.ndarray, max_components: int, min_volume_fraction: float):
    """The ``max_components`` largest 3D components with at least ``min_volume_fraction`` of the largest."""
    lab, n = ndi.label(candidates)
    if n == 0:
        return np.zeros_like(candidates), 0
    sizes = component_sizes(lab, n)
    order = np.argsort(sizes)[::-1][:max_components]
    keep = np.zeros(n + 1, dtype=bool)
    kept = [i + 1 for i in order if sizes[i] >= min_volume_fraction * sizes[order[0]]]
    keep[kept] = True
    return keep[lab], len(kept)


def _smoothed_and_threshold(ct, sp, threshold_hu, smoothing_sigma_mm, initial_hu, tolerance_hu, max_iterations, air_floor_hu):
    """Smoothed CT and lung/body threshold, computed on the in-plane box that holds the body.

    Outside the box every voxel, and every voxel within the smoothing's reach, is below a level
    that the threshold exceeds, so it is dark in any case: it can only enter the threshold's
    histogram (as one bin of known count and sum) and the air connected to the slice border.
    When the threshold comes out at or below that level, everything is done on the whole volume.

    Returns
    -------
    box : tuple of slice
    ct_s : ndarray of float32, ``ct[box]`` clipped at ``air_floor_hu`` and smoothed
    threshold_hu : float
    """
    level = 0.5 * (air_floor_hu + initial_hu)
    if threshold_hu is not None:
        level = min(level, threshold_hu - 1.0)
    reach = np.zeros(3, dtype=int)
    if smoothing_sigma_mm > 0:
        reach = np.floor(4.0 * smoothing_sigma_mm / sp + 0.5).astype(int)  # scipy's truncate=4
    step = _body_grid_step(sp)
    margin = 2 * int(reach[1:].max()) + step + 2
    whole = (slice(None), slice(0, ct.shape[1]), slice(0, ct.shape[2]))
    box = bounding_box(ct > level, (0, margin, margin))
    # The body mask's coarse grid must fall on the same voxels as on the whole volume.
    box = whole if box is None else (slice(None), *(slice(b.start - b.start % step, b.stop) for b in box[1:]))
    for attempt in (box, whole):
        ct_s = np.maximum(ct[attempt], air_floor_hu)
        if smoothing_sigma_mm > 0:
            ndi.gaussian_filter(ct_s, sigma=smoothing_sigma_mm / sp, mode="nearest", output=ct_s)
        if threshold_hu is not None:
            return attempt, ct_s, float(threshold_hu)
        found = _threshold_with_outside(ct, attempt, ct_s, initial_hu, tolerance_hu, max_iterations, air_floor_hu)
        if found >= level + 1.0 or attempt == whole:
            return attempt, ct_s, found
    raise AssertionError("unreachable")


def _threshold_with_outside(ct, box, ct_s, initial_hu, tolerance_hu, max_iterations, air_floor_hu) -> float:
    """:func:`optimal_threshold_hu` of ``ct_s`` plus the clipped voxels of ``ct`` outside ``box``.

    The outside voxels go into one bin (that of their maximum) with their count and sum; this is
    exact as long as the threshold stays above that bin.
    """
    ys, xs = box[1], box[2]
    parts = [ct[:, : ys.start], ct[:, ys.stop :], ct[:, ys, : xs.start], ct[:, ys, xs.stop :]]
    n_out, s_out, lo, hi_out = 0, 0.0, float(ct_s.min()), -np.inf
    for part in parts:
        if part.size:
            clipped = np.maximum(part, air_floor_hu)
            n_out += clipped.size
            s_out += float(clipped.sum(dtype=np.float64))
            lo, hi_out = min(lo, float(clipped.min())), max(hi_out, float(clipped.max()))
    lo, hi = max(lo, air_floor_hu), max(float(ct_s.max()), hi_out, air_floor_hu)
    _check_range(lo, hi, initial_hu)
    offset = np.floor(lo)
    counts, sums = _histogram_1hu(ct_s, offset, hi, air_floor_hu)
    if n_out:
        counts[int(np.floor(hi_out - offset))] += n_out
        sums[int(np.floor(hi_out - offset))] += s_out
    return _threshold_from_histogram(counts, sums, offset, initial_hu, tolerance_hu, max_iterations)
