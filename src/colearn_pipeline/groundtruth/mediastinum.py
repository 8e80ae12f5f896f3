"""Coarse mediastinum: connected thresholding inside an anatomical envelope between the lungs.

The envelope of every axial slice with two lungs is the lungs' convex hull, in front of the
vertebral body, above the diaphragm (a paraboloid per dome fitted to the lung bases, and a floor
interpolated from them) and outside lungs and bone. SimpleITK's
ConnectedThreshold grows seeds placed midway between the lungs over a soft-tissue window inside
it; a closing and per-slice hole filling make the result coarse and solid (heart, great vessels,
airway lumen). The work is done on an in-plane grid of about ``working_spacing_mm`` and the result
brought back to the CT grid against the full-resolution lungs.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import grid_points_in_poly, points_in_poly

from colearn_pipeline.groundtruth._morphology import (
    bounding_box,
    closing,
    disk_footprint,
    fill_holes_per_slice,
    spacing_zyx,
)

#: Defaults of :func:`segment_mediastinum` (mirrored in conf, see docs/groundtruth.md).
MEDIASTINUM_LOWER_HU = -300.0
MEDIASTINUM_UPPER_HU = 250.0
BONE_HU = 250.0
BONE_CLOSING_RADIUS_MM = 3.0
VERTEBRA_HU = 120.0
DISC_BRIDGE_MM = 8.0
LUNG_MARGIN_MM = 2.0
HULL_MARGIN_MM = 0.0
VERTEBRAL_DEPTH_MM = 20.0
SPINE_SEARCH_HALF_WIDTH_MM = 20.0
FLOOR_RADIUS_MM = 30.0
FLOOR_SIGMA_MM = 25.0
FLOOR_LUNG_ABOVE_MM = 40.0
FLOOR_ENCLOSED_FRACTION = 0.6
SMOOTHING_SIGMA_MM = 1.0
MIN_LUNG_AREA_MM2 = 100.0
SEED_SEARCH_MM = 15.0
CLOSING_RADIUS_MM = 5.0
WORKING_SPACING_MM = 2.0
#: A second lung component smaller than this fraction of the first is a detached bit of it.
SECOND_LUNG_MIN_FRACTION = 0.1
DOME_TRIM_MM = 10.0
DOME_MARGIN_MM = 5.0
DOME_FIT_ITERATIONS = 5
WEAK_LUNG_FRACTION = 0.5
BRANCH_OPENING_RADIUS_MM = 4.0


def _two_lungs(lung_slice: np.ndarray, min_area_px: float):
    """The right and left lung of a slice (low column first), or None.

    The two largest components when both have ``min_area_px`` and the smaller at least
    ``SECOND_LUNG_MIN_FRACTION`` of the larger (not a detached bit of one lung); lungs that touch (an anterior or
    posterior junction line) are split at the column of least lung in the middle of their extent.
    """
    lab, n = ndi.label(lung_slice)
    if n == 0:
        return None
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1][:2]
    if n >= 2 and sizes[order[1]] >= max(min_area_px, SECOND_LUNG_MIN_FRACTION * sizes[order[0]]):
        a, b = (lab == order[0] + 1), (lab == order[1] + 1)
        return (a, b) if np.nonzero(a)[1].mean() < np.nonzero(b)[1].mean() else (b, a)
    main = lab == order[0] + 1
    profile = main.sum(axis=0)
    cols = np.nonzero(profile)[0]
    lo, hi = cols[0] + int(0.3 * (cols[-1] - cols[0])), cols[0] + int(0.7 * (cols[-1] - cols[0]))
    if hi <= lo:
        return None
    split = lo + int(np.argmin(profile[lo : hi + 1]))
    right, left = main.copy(), main.copy()
    right[:, split:] = False
    left[:, :split] = False
    if right.sum() < min_area_px or left.sum() < min_area_px:
        return None
    return right, left


def _row_end_pixels(mask: np.ndarray) -> np.ndarray:
    """``(row, column)`` of the first and last pixel of every row of a 2D mask, in ``np.argwhere`` order.

    A subset of ``np.argwhere(mask)`` in the same order that holds every corner of the pixels'
    convex hull: the other pixels of a row lie between its two ends.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    ends = np.stack([np.repeat(rows, 2), np.stack([first, last], axis=1).ravel()], axis=1)
    keep = np.ones(len(ends), dtype=bool)
    keep[1::2] = last > first  # a row of one pixel gives it once
    return ends[keep]


def grown_hull_polygon(mask: np.ndarray, radius_px) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The polygon of :func:`_grown_hull`: ``(verts, lo, hi)``, vertices relative to the box ``lo:hi``.

    None when the hull is only the mask itself (fewer than three pixels, or a degenerate hull).
    The polygon's inside is ``points_in_poly(points - lo, verts)`` for points in the box, the
    same test :func:`_grown_hull` makes on the box's grid.
    """
    if np.count_nonzero(mask) < 3:
        return None
    pts = _row_end_pixels(mask).astype(float)
    corners = (pts[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])).reshape(-1, 2)
    try:
        verts = corners[ConvexHull(corners).vertices]
    except QhullError:
        return None
    ry, rx = (float(r) for r in radius_px)
    if ry > 0 or rx > 0:
        angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        ring = np.stack([ry * np.sin(angles), rx * np.cos(angles)], axis=1)
        verts = (verts[:, None, :] + ring[None]).reshape(-1, 2)
        verts = verts[ConvexHull(verts).vertices]
    lo = np.maximum(np.floor(verts.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(verts.max(axis=0)).astype(int) + 1, mask.shape)
    return verts - lo, lo, hi


def _grown_hull(mask: np.ndarray, radius_px, within: np.ndarray | None = None) -> np.ndarray:
    """Convex hull of a 2D mask grown by an elliptic radius ``(ry, rx)`` in pixels (only its pixels in ``within``).

    The hull of the pixel corners is offset by the ellipse (a Minkowski sum of convex sets is the
    hull of the summed vertices), which is much cheaper than dilating the hull image. With
    ``within``, ``_grown_hull(mask, radius_px) & within``, testing only the pixels of ``within``.
    """
    out = mask.copy() if within is None else mask & within
    polygon = grown_hull_polygon(mask, radius_px)
    if polygon is not None:
        verts, lo, hi = polygon
        if np.all(hi > lo):
            box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]))
            if within is None:
                out[box] |= grid_points_in_poly(tuple(hi - lo), verts)
            else:  # the same point-in-polygon test as on the box's grid, at the pixels that count
                rows, cols = np.nonzero(within[box] & ~out[box])
                if rows.size:
                    out[rows + lo[0], cols + lo[1]] = points_in_poly(np.stack([rows, cols], axis=1).astype(float), verts)
    return out


def hull_within(mask: np.ndarray, within: np.ndarray) -> np.ndarray:
    """The pixels of ``within`` inside the convex hull of a 2D ``mask`` (tested at those pixels only)."""
    return _grown_hull(mask, (0.0, 0.0), within)


def lung_hull(lung_mask: np.ndarray, spacing_xyz_mm, margin_mm: float = 0.0) -> np.ndarray:
    """Per axial slice, the convex hull of the lungs grown in-plane by ``margin_mm``.

    Parameters
    ----------
    lung_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    margin_mm : float

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    sp = spacing_zyx(spacing_xyz_mm)
    out = np.zeros_like(lungs)
    for z in np.nonzero(lungs.any(axis=(1, 2)))[0]:
        out[z] = _grown_hull(lungs[z], margin_mm / sp[1:])
    return out


def superior_is_high_z(lung_mask: np.ndarray, airway_mask: np.ndarray | None = None) -> bool:
    """Whether the last slices are superior.

    The trachea (``airway_mask``) lies above the lungs' centre; without it, the slice of largest
    lung area lies nearer the lung bases than the apices.
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    area = lungs.sum(axis=(1, 2)).astype(float)
    zs = np.nonzero(area)[0]
    if zs.size < 3:
        return True
    z_lungs = float((area * np.arange(area.size)).sum() / area.sum())
    if airway_mask is not None and np.any(airway_mask):
        z_airway = float(np.nonzero(np.asarray(airway_mask, dtype=bool).any(axis=(1, 2)))[0].mean())
        return z_airway > z_lungs
    widest = float(np.nonzero(area >= 0.95 * area.max())[0].mean())
    return bool(widest - zs[0] <= zs[-1] - widest)


def below_diaphragm(lung_mask: np.ndarray, spacing_xyz_mm, *, radius_mm: float = FLOOR_RADIUS_MM,
                    sigma_mm: float = FLOOR_SIGMA_MM, lung_above_mm: float = FLOOR_LUNG_ABOVE_MM):
    """Voxels under the diaphragm, judged from the lung bases (superior is at high z).

    The base of a lung column is its lowest lung voxel.

    Parameters
    ----------
    lung_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    radius_mm, sigma_mm, lung_above_mm : float

    Returns
    -------
    below_all : ndarray of bool, shape (z, y, x)
        Below every lung base within ``radius_mm`` (the lungs reach down beside the heart to the
        diaphragm): surely abdomen.
    under_dome : ndarray of bool, shape (z, y, x)
        Below the gaussian-weighted (``sigma_mm``) mean of the lung bases with lung directly above
        within ``lung_above_mm``: abdomen where it also lies inside one lung's ring on its slice
        (the liver and stomach under the domes), see :func:`mediastinum_envelope`.
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    sp = spacing_zyx(spacing_xyz_mm)
    nz = lungs.shape[0]
    present = lungs.any(axis=0)
    big = float(nz + 1)
    base = np.where(present, np.argmax(lungs, axis=0), big).astype(np.float32)
    lowest = ndi.minimum_filter(base, footprint=disk_footprint(radius_mm, spacing_xyz_mm)[0], mode="constant", cval=big)
    weight = ndi.gaussian_filter(present.astype(np.float32), sigma_mm / sp[1:], mode="constant")
    mean = ndi.gaussian_filter(np.where(present, base, 0.0).astype(np.float32), sigma_mm / sp[1:], mode="constant")
    mean = np.where(weight > 1e-3, mean / np.maximum(weight, 1e-6), 0.0)
    z = np.arange(nz)[:, None, None]
    k = max(1, int(round(lung_above_mm / sp[0])))
    counts = np.concatenate([np.zeros((1,) + lungs.shape[1:], np.int32), np.cumsum(lungs, axis=0, dtype=np.int32)])
    above = counts[np.minimum(np.arange(nz) + 1 + k, nz)] - counts[np.arange(nz) + 1]
    return z < lowest[None], (z < mean[None]) & (above > 0)


def _vertebral_body(bone: np.ndarray, right: np.ndarray, left: np.ndarray, half_width_px: int):
    """``(front_row, mid_column)`` of the vertebral body (midline bone behind the lungs' centre), or None."""
    ys = np.nonzero(right.any(axis=1) | left.any(axis=1))[0]
    centre_y = 0.5 * (ys.min() + ys.max())
    mid = int(round(0.5 * (np.nonzero(right)[1].max() + np.nonzero(left)[1].min())))
    strip = bone[:, max(0, mid - half_width_px) : mid + half_width_px + 1]
    rows = np.nonzero(strip.any(axis=1))[0]
    rows = rows[rows > centre_y]
    return (int(rows.min()), mid) if rows.size else None


def _behind_vertebral_front(bone: np.ndarray, front: int, mid: int, half_width_px: int, depth_px: int) -> np.ndarray:
    """The vertebral body and all behind it: column by column within ``half_width_px`` of ``mid``,
    from that column's first bone row behind ``front`` (the body is round: the descending aorta
    and the azygos vein lie in front of its flanks), and every row ``depth_px`` behind ``front``.
    """
    out = np.zeros(bone.shape, dtype=bool)
    lo, hi = max(0, mid - half_width_px), min(bone.shape[1], mid + half_width_px + 1)
    strip = bone[front:, lo:hi]
    has_bone = strip.any(axis=0)
    first = np.where(has_bone, np.argmax(strip, axis=0), strip.shape[0])
    rows = np.arange(strip.shape[0])[:, None]
    out[front:, lo:hi] = rows >= first[None, :]
    out[front + depth_px :, :] = True
    return out


def compute_bone_mask(ct_hu: np.ndarray, spacing_xyz_mm, bone_hu: float = BONE_HU,
                      closing_radius_mm: float = BONE_CLOSING_RADIUS_MM) -> np.ndarray:
    """Bone: ``ct > bone_hu`` closed in-plane by ``closing_radius_mm`` with its holes filled (canal, marrow)."""
    return fill_holes_per_slice(closing(np.asarray(ct_hu) > bone_hu, disk_footprint(closing_radius_mm, spacing_xyz_mm)))


def compute_vertebra_mask(ct_hu: np.ndarray, spacing_xyz_mm, vertebra_hu: float = VERTEBRA_HU,
                          closing_radius_mm: float = BONE_CLOSING_RADIUS_MM,
                          disc_bridge_mm: float = DISC_BRIDGE_MM) -> np.ndarray:
    """Bone including cancellous marrow: ``ct > vertebra_hu``, closed in-plane by ``closing_radius_mm``
    and across ``disc_bridge_mm`` in z (an intervertebral disc is softer), holes filled.

    A vertebral body's thin cortex fades under the working grid's averaging, and its marrow lies
    below ``bone_hu`` (real CT: 100-300 HU), so :func:`compute_bone_mask` alone leaves its front open.
    """
    mask = np.asarray(ct_hu) > vertebra_hu
    sp = spacing_zyx(spacing_xyz_mm)
    half_z = int(np.floor(disc_bridge_mm / 2.0 / sp[0] + 1e-9))
    footprint = disk_footprint(closing_radius_mm, spacing_xyz_mm)
    if half_z > 0:
        footprint = np.repeat(footprint, 2 * half_z + 1, axis=0)
    return fill_holes_per_slice(closing(mask, footprint))


def lung_sides(lung_mask: np.ndarray, min_area_px: float):
    """Per slice the right and left lung (:func:`_two_lungs`), and both as volumes.

    A slice with one lung only (under the other lung's base, above its apex) gives its lung to the
    side of the median midline of the two-lung slices.

    Returns
    -------
    pairs : dict of int to (ndarray, ndarray)
        ``{z: (right, left)}`` for the slices with two lungs.
    right, left : ndarray of bool, shape (z, y, x)
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    right, left = np.zeros_like(lungs), np.zeros_like(lungs)
    pairs, mids = {}, []
    for z in np.nonzero(lungs.any(axis=(1, 2)))[0]:
        pair = _two_lungs(lungs[z], min_area_px)
        if pair is not None:
            pairs[int(z)] = pair
            right[z], left[z] = pair
            mids.append(0.5 * (np.nonzero(pair[0])[1].max() + np.nonzero(pair[1])[1].min()))
    if mids:
        on_right = np.arange(lungs.shape[2])[None, :] < float(np.median(mids))
        for z in np.nonzero(lungs.any(axis=(1, 2)))[0]:
            if int(z) not in pairs:
                right[z], left[z] = lungs[z] & on_right, lungs[z] & ~on_right
    return pairs, right, left


def _fit_dome_mm(lung: np.ndarray, sp: np.ndarray, trim_mm: float, iterations: int):
    """Coefficients ``(a, b, c, d)`` of ``z = a + b x + c y + d (x^2 + y^2)`` (mm) through a lung's base, or None.

    The base of a lung column is its lowest voxel; bases more than ``trim_mm`` above the fit (lung
    lying on the heart, not on the diaphragm) are left out and the fit repeated. None unless the
    surface is a dome (``d < 0``).
    """
    present = lung.any(axis=0)
    if present.sum() < 10:
        return None
    yy, xx = np.nonzero(present)
    base = np.argmax(lung, axis=0)[yy, xx] * sp[0]
    y, x = yy * sp[1], xx * sp[2]
    design = np.stack([np.ones_like(x), x, y, x * x + y * y], axis=1)
    keep = np.ones(base.size, dtype=bool)
    coef = None
    for _ in range(max(1, iterations)):
        if keep.sum() < 4:
            break
        coef = np.linalg.lstsq(design[keep], base[keep], rcond=None)[0]
        keep = base - design @ coef < trim_mm
    return coef if coef is not None and coef[3] < 0 else None


def below_fitted_diaphragm(right: np.ndarray, left: np.ndarray, spacing_xyz_mm, *, trim_mm: float = DOME_TRIM_MM,
                           margin_mm: float = DOME_MARGIN_MM, iterations: int = DOME_FIT_ITERATIONS) -> np.ndarray:
    """Voxels more than ``margin_mm`` under the diaphragm (superior at high z).

    Each dome is a paraboloid fitted to its lung's base (:func:`_fit_dome_mm`); the diaphragm is
    the higher of the two, so the heart resting on the left dome and the central tendon stays
    above it while the liver and the stomach under the domes fall below, also on slices where a
    lung has ended or wraps the liver as a crescent.

    Parameters
    ----------
    right, left : ndarray of bool, shape (z, y, x)
        The lungs of each side (:func:`lung_sides`).
    spacing_xyz_mm : sequence of 3 float
    trim_mm, margin_mm : float
    iterations : int

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    sp = spacing_zyx(spacing_xyz_mm)
    nz, ny, nx = right.shape
    y = np.arange(ny)[:, None] * sp[1]
    x = np.arange(nx)[None, :] * sp[2]
    height = np.full((ny, nx), -np.inf)
    for lung in (right, left):
        coef = _fit_dome_mm(lung, sp, trim_mm, iterations)
        if coef is not None:
            height = np.maximum(height, coef[0] + coef[1] * x + coef[2] * y + coef[3] * (x * x + y * y))
    z_mm = np.arange(nz)[:, None, None] * sp[0]
    return (z_mm < height[None] - margin_mm) & ~(right | left)


def mediastinum_envelope(
    ct_hu: np.ndarray, lung_mask: np.ndarray, spacing_xyz_mm, *, bone_hu: float = BONE_HU,
    bone_closing_radius_mm: float = BONE_CLOSING_RADIUS_MM, lung_margin_mm: float = LUNG_MARGIN_MM, hull_margin_mm: float = HULL_MARGIN_MM,
    vertebral_depth_mm: float = VERTEBRAL_DEPTH_MM, spine_search_half_width_mm: float = SPINE_SEARCH_HALF_WIDTH_MM,
    floor_radius_mm: float = FLOOR_RADIUS_MM, floor_sigma_mm: float = FLOOR_SIGMA_MM, floor_lung_above_mm: float = FLOOR_LUNG_ABOVE_MM,
    min_lung_area_mm2: float = MIN_LUNG_AREA_MM2, dome_trim_mm: float = DOME_TRIM_MM, dome_margin_mm: float = DOME_MARGIN_MM,
    dome_fit_iterations: int = DOME_FIT_ITERATIONS, weak_lung_fraction: float = WEAK_LUNG_FRACTION,
    bone_mask: np.ndarray | None = None, vertebra_mask: np.ndarray | None = None, return_floor_cut: bool = False,
):
    """Where the mediastinum may lie (superior at high z).

    On every axial slice where both lungs have at least ``min_lung_area_mm2``: the lungs' convex
    hull grown by ``hull_margin_mm`` (the lungs lie against the chest wall, so the hull holds the
    heart, the great vessels and the hila but not the wall); less the lungs dilated by
    ``lung_margin_mm`` and bone (``ct > bone_hu``, closed by ``bone_closing_radius_mm``, holes
    filled), less the vertebral body (``vertebra_mask``: column by column behind its front,
    within ``spine_search_half_width_mm`` of the midline) and the rows more than
    ``vertebral_depth_mm`` behind its front; never under the diaphragm fitted to the lung bases
    (:func:`below_fitted_diaphragm` with ``dome_trim_mm``, ``dome_margin_mm``,
    ``dome_fit_iterations``), nor under the floor of :func:`below_diaphragm` (``floor_radius_mm``,
    ``floor_sigma_mm``, ``floor_lung_above_mm``: under every lung base near, or under a lung base
    and inside that lung's convex hull on the slice). Where a lung has ended or is smaller than
    ``weak_lung_fraction`` of the other (the heart on the diaphragm beside the liver dome), the
    slice also keeps the envelope of the slice above, cut the same way, so it shrinks to the heart.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
    lung_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    bone_mask, vertebra_mask : ndarray of bool, optional
        :func:`compute_bone_mask` and :func:`compute_vertebra_mask` computed already (by default
        the bone, also where the vertebral body is looked for).
    return_floor_cut : bool
        Also return the voxels that only the floor took out.

    Returns
    -------
    envelope : ndarray of bool, shape (z, y, x)
    floor_cuts : pair of ndarray of bool, shape (z, y, x), only with ``return_floor_cut``
        What the two floor rules alone took out: below every lung base near, and under a dome
        inside a lung's ring.
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    sp = spacing_zyx(spacing_xyz_mm)
    bone = bone_mask if bone_mask is not None else compute_bone_mask(ct_hu, spacing_xyz_mm, bone_hu, bone_closing_radius_mm)
    vertebra = bone if vertebra_mask is None else vertebra_mask
    lung_excl = ndi.binary_dilation(lungs, structure=disk_footprint(lung_margin_mm, spacing_xyz_mm)) if lung_margin_mm > 0 else lungs
    below_lowest, under_dome = below_diaphragm(lungs, spacing_xyz_mm, radius_mm=floor_radius_mm, sigma_mm=floor_sigma_mm, lung_above_mm=floor_lung_above_mm)
    min_area_px = min_lung_area_mm2 / (sp[1] * sp[2])
    half_w = int(round(spine_search_half_width_mm / sp[2]))
    envelope, floor_cut, ring_cut = (np.zeros_like(lungs) for _ in range(3))
    pairs, right3, left3 = lung_sides(lungs, min_area_px)
    under_fitted = below_fitted_diaphragm(right3, left3, spacing_xyz_mm, trim_mm=dome_trim_mm, margin_mm=dome_margin_mm,
                                          iterations=dome_fit_iterations)
    carried, body = None, None
    for z in np.nonzero(lungs.any(axis=(1, 2)))[0][::-1]:  # from the apices down
        right, left = right3[z], left3[z]
        smaller, larger = sorted((np.count_nonzero(right), np.count_nonzero(left)))
        weak = int(z) not in pairs or smaller < weak_lung_fraction * larger
        if int(z) not in pairs and carried is None:
            continue
        # The lungs lie against the chest wall: their hull holds the hila and the heart, not the wall.
        allowed = ~lung_excl[z] & ~bone[z] & ~vertebra[z] & ~under_fitted[z]
        inside = _grown_hull(right | left, hull_margin_mm / sp[1:], allowed) if int(z) in pairs else np.zeros_like(lungs[z])
        if weak and carried is not None:
            inside |= carried & allowed  # a lung has (nearly) ended: the heart lies under the envelope above
        # Under a dome the abdomen lies inside one lung's ring; the heart lies between the lungs
        # (the ring only counts inside the envelope).
        in_ring = under_dome[z] & inside
        if in_ring.any():
            in_ring = _grown_hull(right, (0, 0), in_ring) | _grown_hull(left, (0, 0), in_ring)
        floor_cut[z], ring_cut[z] = inside & below_lowest[z], inside & ~below_lowest[z] & in_ring
        inside &= ~below_lowest[z] & ~in_ring
        found = _vertebral_body(vertebra[z], right, left, half_w) if smaller else None
        body = found if found is not None or not weak else body  # a weak slice keeps the one above
        if body is not None:
            behind = _behind_vertebral_front(vertebra[z], *body, half_w, int(round(vertebral_depth_mm / sp[1])))
            inside, floor_cut[z], ring_cut[z] = inside & ~behind, floor_cut[z] & ~behind, ring_cut[z] & ~behind
        envelope[z] = inside
        carried = inside if inside.any() else None
    return (envelope, (floor_cut, ring_cut)) if return_floor_cut else envelope


def mediastinum_seeds(
    ct_hu: np.ndarray,
    lung_mask: np.ndarray,
    region: np.ndarray,
    spacing_xyz_mm,
    *,
    lower_hu: float = MEDIASTINUM_LOWER_HU,
    upper_hu: float = MEDIASTINUM_UPPER_HU,
    min_lung_area_mm2: float = MIN_LUNG_AREA_MM2,
    seed_search_mm: float = SEED_SEARCH_MM,
) -> list[tuple[int, int, int]]:
    """Seeds ``(z, y, x)`` midway between the lungs' medial borders on every slice with two lungs.

    The row is the mean of the two lungs' centroid rows; where that voxel is not inside the window
    and ``region``, the nearest such voxel within ``seed_search_mm`` is taken instead.
    """
    sp = spacing_zyx(spacing_xyz_mm)
    min_area_px = min_lung_area_mm2 / (sp[1] * sp[2])
    ct = np.asarray(ct_hu)
    seeds = []
    for z in np.nonzero(region.any(axis=(1, 2)))[0]:
        pair = _two_lungs(lung_mask[z], min_area_px)
        if pair is None:
            continue
        right, left = pair  # right lung has the lower column index (LPS: +x is patient left)
        y = int(round(0.5 * (np.nonzero(right)[0].mean() + np.nonzero(left)[0].mean())))
        rc, lc = np.nonzero(right[y])[0], np.nonzero(left[y])[0]
        x_r = rc.max() if rc.size else np.nonzero(right)[1].max()
        x_l = lc.min() if lc.size else np.nonzero(left)[1].min()
        x = int(round(0.5 * (x_r + x_l)))
        ok = region[z] & (ct[z] >= lower_hu) & (ct[z] <= upper_hu)
        if not ok.any():
            continue
        if not ok[y, x]:
            yy, xx = np.nonzero(ok)
            d2 = ((yy - y) * sp[1]) ** 2 + ((xx - x) * sp[2]) ** 2
            i = int(np.argmin(d2))
            if d2[i] > seed_search_mm**2:
                continue
            y, x = int(yy[i]), int(xx[i])
        seeds.append((int(z), y, x))
    return seeds


def _block_reduce(volume: np.ndarray, factor: int, how: str) -> np.ndarray:
    """In-plane block mean (``how='mean'``), majority (``'major'``) or any (``'any'``) by ``factor``."""
    if factor == 1:
        return volume.astype(np.float32) if how == "mean" else volume.astype(bool)
    nz, ny, nx = volume.shape
    py, px = (-ny) % factor, (-nx) % factor
    padded = np.pad(volume, ((0, 0), (0, py), (0, px)), mode="edge")
    if how == "mean" or padded.dtype != bool:
        blocks = padded.reshape(nz, (ny + py) // factor, factor, (nx + px) // factor, factor)
        if how == "any":
            return blocks.any(axis=(2, 4))
        mean = blocks.mean(axis=(2, 4), dtype=np.float32)
        return mean if how == "mean" else mean >= 0.5
    # Bool masks: count the block's pixels over strided slices, one per position in the block (several
    # times faster than reducing a (z, y, f, x, f) view over two strided axes).
    count = np.zeros((nz, (ny + py) // factor, (nx + px) // factor), np.int32)
    for i in range(factor):
        for j in range(factor):
            count += padded[:, i::factor, j::factor]
    # 'major': the block mean of a bool mask is >= 0.5 exactly where 2 * count >= factor**2
    return count > 0 if how == "any" else 2 * count >= factor * factor


def _block_expand(mask: np.ndarray, factor: int, shape_zyx) -> np.ndarray:
    """Nearest-neighbour inverse of :func:`_block_reduce`, cropped to ``shape_zyx``."""
    if factor == 1:
        return mask
    out = np.repeat(np.repeat(mask, factor, axis=1), factor, axis=2)
    return out[:, : shape_zyx[1], : shape_zyx[2]]


def _grow(ct: np.ndarray, envelope: np.ndarray, seeds, spacing_xyz_mm, lower_hu: float, upper_hu: float) -> np.ndarray:
    """SimpleITK ConnectedThreshold of the seeds over ``[lower_hu, upper_hu]`` inside ``envelope``."""
    image = sitk.GetImageFromArray(np.where(envelope, ct, lower_hu - 1000.0).astype(np.float32))
    image.SetSpacing(tuple(float(s) for s in spacing_xyz_mm))
    grown = sitk.ConnectedThreshold(
        image, seedList=[(int(x), int(y), int(z)) for z, y, x in seeds], lower=float(lower_hu), upper=float(upper_hu), replaceValue=1
    )
    return sitk.GetArrayFromImage(grown).astype(bool)


#: The keyword arguments of :func:`segment_mediastinum` passed on to :func:`mediastinum_envelope`.
_ENVELOPE_KEYS = ("bone_hu", "bone_closing_radius_mm", "lung_margin_mm", "hull_margin_mm",
                  "vertebral_depth_mm", "spine_search_half_width_mm", "floor_radius_mm", "floor_sigma_mm",
                  "floor_lung_above_mm", "min_lung_area_mm2", "dome_trim_mm", "dome_margin_mm", "dome_fit_iterations",
                  "weak_lung_fraction")


def _working_grid(ct_box: np.ndarray, lungs_box: np.ndarray, factor: int, spacing_c, smoothing_sigma_mm: float):
    """CT (block mean, smoothed), lungs (block majority) and lungs (block any) on the working grid."""
    ct_c = _block_reduce(ct_box, factor, "mean")
    if smoothing_sigma_mm > 0:
        ct_c = ndi.gaussian_filter(ct_c, smoothing_sigma_mm / spacing_zyx(spacing_c), mode="nearest")
    return ct_c, _block_reduce(lungs_box, factor, "major"), _block_reduce(lungs_box, factor, "any")


def _enclosed_floor_cuts(grown: np.ndarray, floor_cuts, window: np.ndarray, lungs_c: np.ndarray,
                         floor_enclosed_fraction: float) -> np.ndarray:
    """What the floor rules took out but the growth encloses (given back to the mediastinum).

    The two cuts are taken apart, so that the in-ring cut beside the heart does not hide the column
    through it; in a lung's ring the lung counts in the rim (the liver or stomach there is bordered
    by lung).
    """
    below_cut, ring_cut = floor_cuts
    back = enclosed_by_growth(grown, below_cut & window, lungs_c, floor_enclosed_fraction)
    grown = grown | back
    return back | enclosed_by_growth(grown, ring_cut & window, np.zeros_like(lungs_c), floor_enclosed_fraction)


def segment_mediastinum(
    ct_hu, lung_mask, spacing_xyz_mm, *, lower_hu: float = MEDIASTINUM_LOWER_HU,
    upper_hu: float = MEDIASTINUM_UPPER_HU, bone_hu: float = BONE_HU, bone_closing_radius_mm: float = BONE_CLOSING_RADIUS_MM,
    vertebra_hu: float = VERTEBRA_HU, disc_bridge_mm: float = DISC_BRIDGE_MM, lung_margin_mm: float = LUNG_MARGIN_MM, hull_margin_mm: float = HULL_MARGIN_MM,
    vertebral_depth_mm: float = VERTEBRAL_DEPTH_MM, spine_search_half_width_mm: float = SPINE_SEARCH_HALF_WIDTH_MM,
    floor_radius_mm: float = FLOOR_RADIUS_MM, floor_sigma_mm: float = FLOOR_SIGMA_MM, floor_lung_above_mm: float = FLOOR_LUNG_ABOVE_MM,
    dome_trim_mm: float = DOME_TRIM_MM, dome_margin_mm: float = DOME_MARGIN_MM, dome_fit_iterations: int = DOME_FIT_ITERATIONS,
    weak_lung_fraction: float = WEAK_LUNG_FRACTION, branch_opening_radius_mm: float = BRANCH_OPENING_RADIUS_MM,
    floor_enclosed_fraction: float = FLOOR_ENCLOSED_FRACTION, smoothing_sigma_mm: float = SMOOTHING_SIGMA_MM, min_lung_area_mm2: float = MIN_LUNG_AREA_MM2,
    seed_search_mm: float = SEED_SEARCH_MM, closing_radius_mm: float = CLOSING_RADIUS_MM, working_spacing_mm: float = WORKING_SPACING_MM,
    superior_at_high_z: bool | None = None, seeds_zyx=None, airway_mask=None, return_info: bool = False,
):
    """Coarse mediastinum by connected thresholding inside the envelope between the lungs.

    Parameters
    ----------
    ct_hu, lung_mask : ndarray, shape (z, y, x)
        CT in HU; bool lungs from :func:`segment_lungs`.
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing, SimpleITK order (x, y, z), mm.
    lower_hu, upper_hu : float
        Window of ConnectedThreshold (HU): soft tissue and fat, not lung or bone.
    bone_hu, bone_closing_radius_mm, vertebra_hu, disc_bridge_mm, lung_margin_mm, hull_margin_mm, vertebral_depth_mm, spine_search_half_width_mm, floor_radius_mm, floor_sigma_mm, floor_lung_above_mm, dome_trim_mm, dome_margin_mm, dome_fit_iterations, weak_lung_fraction
        The envelope, see :func:`mediastinum_envelope` and :func:`compute_vertebra_mask`.
    smoothing_sigma_mm, closing_radius_mm, branch_opening_radius_mm : float
        Gaussian smoothing (mm) of the CT before thresholding (0 disables it); radius (mm) of the
        in-plane closing before per-slice hole filling; branches of the growth thinner than twice
        the last are cut off (:func:`_without_thin_branches`, 0: never).
    min_lung_area_mm2, seed_search_mm : float
        Both lungs need this area (mm²) on an envelope slice with a seed; how far (mm) a seed may
        move to reach the window inside the envelope.
    working_spacing_mm : float
        In-plane spacing (mm) of the work (an integer block of CT pixels); the lung boundary is exact.
    superior_at_high_z : bool or None
        None: from the airway and the lungs (:func:`superior_is_high_z`).
    seeds_zyx : sequence of (z, y, x), optional
        Manual seeds replacing the automatic ones (the paper's "minor manual adjustments").
    airway_mask : ndarray of bool, optional
        Trachea and main bronchi from :func:`segment_lungs`; added on the envelope's slices.
    return_info : bool
        Also return a dict with the seeds used.

    Returns
    -------
    mediastinum : ndarray of bool, shape (z, y, x)
    info : dict, only with ``return_info``
    """
    ct, lungs = np.asarray(ct_hu, dtype=np.float32), np.asarray(lung_mask, dtype=bool)
    if ct.shape != lungs.shape or ct.ndim != 3:
        raise ValueError(f"ct_hu {ct.shape} and lung_mask {lungs.shape} must be the same 3D shape")
    superior = superior_is_high_z(lungs, airway_mask) if superior_at_high_z is None else bool(superior_at_high_z)
    flip = (lambda v: v) if superior else (lambda v: None if v is None else np.asarray(v)[::-1])
    sp, out = spacing_zyx(spacing_xyz_mm), np.zeros_like(lungs)
    margin_px = np.ceil((hull_margin_mm + lung_margin_mm + closing_radius_mm + working_spacing_mm) / sp[1:] + 1).astype(int)
    box = bounding_box(lungs, (0, *margin_px))
    info = {"seeds_zyx": [], "n_seeds": 0, "superior_at_high_z": superior}
    if box is None:
        return (out, info) if return_info else out
    factor = max(1, int(round(working_spacing_mm / min(sp[1], sp[2]))))
    spacing_c = (sp[2] * factor, sp[1] * factor, sp[0])
    ct_box, lungs_box = flip(ct[box]), flip(lungs[box])
    ct_c, lungs_c, lungs_any = _working_grid(ct_box, lungs_box, factor, spacing_c, smoothing_sigma_mm)
    bone = compute_bone_mask(ct_c, spacing_c, bone_hu, bone_closing_radius_mm)
    vertebra = bone | compute_vertebra_mask(ct_c, spacing_c, vertebra_hu, bone_closing_radius_mm, disc_bridge_mm)
    envelope, floor_cuts = mediastinum_envelope(ct_c, lungs_c, spacing_c, bone_mask=bone, vertebra_mask=vertebra, return_floor_cut=True, **{
        k: v for k, v in locals().items() if k in _ENVELOPE_KEYS})
    seeds = _seeds_on_working_grid(ct_c, lungs_c, envelope, spacing_c, seeds_zyx, box, factor, superior,
                                   lower_hu, upper_hu, min_lung_area_mm2, seed_search_mm)
    grown = _grow(ct_c, envelope, seeds, spacing_c, lower_hu, upper_hu) if seeds else np.zeros_like(envelope)
    grown = _pruned_and_given_back(grown, seeds, floor_cuts, (ct_c >= lower_hu) & (ct_c <= upper_hu), lungs_c, spacing_c,
                                   branch_opening_radius_mm, floor_enclosed_fraction)
    if airway_mask is not None and grown.any():
        airway_c = _block_reduce(flip(np.asarray(airway_mask, dtype=bool)[box]), factor, "any")
        grown |= airway_c & ~lungs_c & envelope.any(axis=(1, 2))[:, None, None]
    if grown.any():
        grown = _solid(grown, lungs_any, bone, spacing_c, closing_radius_mm, lung_margin_mm + working_spacing_mm)
    out[box] = flip(_block_expand(grown, factor, lungs_box.shape)) & ~lungs[box]
    info.update(seeds_zyx=[_seed_to_full(s, box, factor, superior, ct_box.shape[0]) for s in seeds], n_seeds=len(seeds))
    return (out, info) if return_info else out


def enclosed_by_growth(grown: np.ndarray, candidate: np.ndarray, lung_mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """The in-plane components of ``candidate`` whose rim, lungs aside, is mostly ``grown``.

    A floor that cuts a column out of the heart's centre (lung lying over the heart at the great
    vessels, the lungs beside it far away) leaves a hole that the heart surrounds on its slice;
    the abdomen under the diaphragm is bordered by more abdomen, not by the grown region.

    Parameters
    ----------
    grown, candidate, lung_mask : ndarray of bool, shape (z, y, x)
    min_fraction : float
        Share of a component's rim (its 8-neighbours outside it and outside the lungs) that must
        be ``grown``.

    Returns
    -------
    ndarray of bool, shape (z, y, x)
        The union of the enclosed components.
    """
    out = np.zeros_like(candidate)
    eight = np.ones((3, 3), dtype=bool)
    for z in np.nonzero(candidate.any(axis=(1, 2)) & grown.any(axis=(1, 2)))[0]:
        lab, n = ndi.label(candidate[z], structure=eight)
        for i, box in enumerate(ndi.find_objects(lab), start=1):
            grow_box = tuple(slice(max(b.start - 1, 0), b.stop + 1) for b in box)
            comp = lab[grow_box] == i
            rim = ndi.binary_dilation(comp, structure=eight) & ~comp & ~lung_mask[z][grow_box]
            if rim.any() and grown[z][grow_box][rim].mean() >= min_fraction:
                out[z][grow_box] |= comp
    return out


def _without_thin_branches(grown: np.ndarray, seeds, spacing_xyz_mm, radius_mm: float) -> np.ndarray:
    """The grown region less what hangs on it by branches thinner than ``2 * radius_mm``.

    Inside the lungs' hull the window also holds the lung vessels, and a lung tumour on them: an
    in-plane opening cuts those branches, the part still connected (3D) to a seed is kept, and
    its surroundings within ``radius_mm`` are given back (the opening rounds corners).
    """
    footprint = disk_footprint(radius_mm, spacing_xyz_mm)
    labelled, _ = ndi.label(ndi.binary_opening(grown, structure=footprint))
    kept = np.unique([labelled[z, y, x] for z, y, x in seeds])
    kept = kept[kept > 0]
    if kept.size == 0:  # every seed on a thin part: nothing to tell the body from its branches by
        return grown
    return grown & ndi.binary_dilation(np.isin(labelled, kept), structure=footprint)


def _pruned_and_given_back(grown, seeds, floor_cuts, window, lungs_c, spacing_c, branch_opening_radius_mm: float,
                           floor_enclosed_fraction: float) -> np.ndarray:
    """The growth less its thin branches (:func:`_without_thin_branches`), plus what the floor cut
    and the growth encloses (:func:`_enclosed_floor_cuts`); each step off when disabled."""
    if branch_opening_radius_mm > 0 and grown.any():
        grown = _without_thin_branches(grown, seeds, spacing_c, branch_opening_radius_mm)
    if floor_enclosed_fraction <= 1.0 and grown.any():
        grown = grown | _enclosed_floor_cuts(grown, floor_cuts, window, lungs_c, floor_enclosed_fraction)
    return grown


def _solid(grown, lungs_any, bone, spacing_xyz_mm, closing_radius_mm: float, give_back_mm: float) -> np.ndarray:
    """Closing, per-slice hole filling, the lung margin given back next to the lungs only, bone out."""
    grown = fill_holes_per_slice(closing(grown, disk_footprint(closing_radius_mm, spacing_xyz_mm)))
    ring = disk_footprint(give_back_mm, spacing_xyz_mm)
    # The full-resolution lungs cut the given-back margin exactly afterwards.
    grown |= ndi.binary_dilation(grown, structure=ring) & ndi.binary_dilation(lungs_any, structure=ring)
    return grown & ~bone


def _seed_to_full(seed, box, factor: int, superior: bool, nz: int) -> tuple[int, int, int]:
    z, y, x = seed
    z = z if superior else nz - 1 - z
    return (int(z + box[0].start), int(y * factor + factor // 2 + box[1].start), int(x * factor + factor // 2 + box[2].start))


def _seeds_on_working_grid(ct_c, lungs_c, envelope, spacing_c, seeds_zyx, box, factor, superior,
                           lower_hu, upper_hu, min_lung_area_mm2, seed_search_mm):
    """Automatic seeds, or the manual ones mapped onto the working grid (inside it only)."""
    if seeds_zyx is None:
        return mediastinum_seeds(ct_c, lungs_c, envelope, spacing_c, lower_hu=lower_hu, upper_hu=upper_hu,
                                 min_lung_area_mm2=min_lung_area_mm2, seed_search_mm=seed_search_mm)
    nz = envelope.shape[0]
    seeds = []
    for s in seeds_zyx:
        z = int(round(s[0])) - box[0].start
        z = z if superior else (box[0].stop - box[0].start) - 1 - z
        y, x = ((int(round(v)) - b.start) // factor for v, b in zip(s[1:], box[1:]))
        if 0 <= z < nz and 0 <= y < envelope.shape[1] and 0 <= x < envelope.shape[2]:
            seeds.append((z, y, x))
    return seeds
