"""Coarse mediastinum: SimpleITK connected thresholding on soft-tissue HU between the lungs.

The search region of every axial slice is the convex hull of the lungs, less the lungs, bone
(and the spinal canal it encloses) and anything posterior of the vertebral body. Seeds are
placed on every slice where both lungs appear, midway between their medial borders; SimpleITK's
ConnectedThreshold grows them over soft-tissue HU within the region; an opening cuts thin
leaks, a closing and per-slice hole filling make it coarse and solid (the airway lumen inside
it is included).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import grid_points_in_poly
from skimage.morphology import convex_hull_image

from colearn_pipeline.groundtruth._morphology import (
    bounding_box,
    closing,
    disk_footprint,
    fill_holes_per_slice,
    opening,
    spacing_zyx,
)

#: Defaults of :func:`segment_mediastinum` (see docs/groundtruth.md).
MEDIASTINUM_LOWER_HU = -300.0
MEDIASTINUM_UPPER_HU = -30.0
BONE_HU = 250.0
BONE_MARGIN_MM = 0.0
BONE_CLOSING_RADIUS_MM = 3.0
LUNG_MARGIN_MM = 2.0
REGION_MARGIN_MM = 10.0
WRAP_PER_SLICE = True
WRAP_MIN_AREA_MM2 = 20.0
WRAP_MERGE_MM = 10.0
WRAP_THROUGH_BONE = True
WRAP_MIN_COVERAGE = 0.4
WRAP_COVER_MM = 4.0
SMOOTHING_SIGMA_MM = 1.0
MIN_LUNG_AREA_MM2 = 100.0
SEED_SEARCH_MM = 15.0
OPENING_RADIUS_MM = 0.0
CLOSING_RADIUS_MM = 5.0
EXCLUDE_POSTERIOR_OF_SPINE = False
SPINE_SEARCH_HALF_WIDTH_MM = 20.0


def _two_lungs(lung_slice: np.ndarray, min_area_px: float):
    """The two largest lung components of a slice ordered by column (low x first), or None."""
    lab, n = ndi.label(lung_slice)
    if n < 2:
        return None
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    order = np.argsort(sizes)[::-1][:2]
    if sizes[order[1]] < min_area_px:
        return None
    a, b = (lab == order[0] + 1), (lab == order[1] + 1)
    xa = np.nonzero(a)[1].mean()
    xb = np.nonzero(b)[1].mean()
    return (a, b) if xa < xb else (b, a)


def _grown_hull(mask: np.ndarray, radius_px) -> np.ndarray:
    """Convex hull of a 2D mask grown by an elliptic radius ``(ry, rx)`` in pixels.

    The hull of the pixel corners is offset by the ellipse (a Minkowski sum of convex sets is the
    hull of the summed vertices), which is much cheaper than dilating the hull image.
    """
    pts = np.argwhere(mask).astype(float)
    if len(pts) < 3:
        return mask.copy()
    corners = (pts[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])).reshape(-1, 2)
    try:
        verts = corners[ConvexHull(corners).vertices]
    except QhullError:
        return mask.copy()
    ry, rx = (float(r) for r in radius_px)
    if ry > 0 or rx > 0:
        angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
        ring = np.stack([ry * np.sin(angles), rx * np.cos(angles)], axis=1)
        verts = (verts[:, None, :] + ring[None]).reshape(-1, 2)
        verts = verts[ConvexHull(verts).vertices]
    lo = np.maximum(np.floor(verts.min(axis=0)).astype(int), 0)
    hi = np.minimum(np.ceil(verts.max(axis=0)).astype(int) + 1, mask.shape)
    out = mask.copy()
    out[lo[0] : hi[0], lo[1] : hi[1]] |= grid_points_in_poly(tuple(hi - lo), verts - lo)
    return out


def _hull_coverage(hull: np.ndarray, pieces: np.ndarray, near: np.ndarray) -> float:
    """Fraction of the hull's boundary pixels that lie within ``near`` (a footprint) of ``pieces``."""
    edge = hull & ~ndi.binary_erosion(hull, border_value=0)
    n = int(edge.sum())
    if n == 0:
        return 0.0
    return float((edge & ndi.binary_dilation(pieces, structure=near)).sum()) / n


def mediastinum_search_region(
    ct_hu: np.ndarray,
    lung_mask: np.ndarray,
    spacing_xyz_mm,
    *,
    bone_hu: float = BONE_HU,
    bone_margin_mm: float = BONE_MARGIN_MM,
    bone_closing_radius_mm: float = BONE_CLOSING_RADIUS_MM,
    lung_margin_mm: float = LUNG_MARGIN_MM,
    region_margin_mm: float = REGION_MARGIN_MM,
    exclude_posterior_of_spine: bool = EXCLUDE_POSTERIOR_OF_SPINE,
    spine_search_half_width_mm: float = SPINE_SEARCH_HALF_WIDTH_MM,
) -> np.ndarray:
    """Where the mediastinum may lie: per-slice convex hull of the lungs minus lungs and bone.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
    lung_mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    bone_hu : float
        Voxels above it are bone; bone is closed in-plane by ``bone_closing_radius_mm`` and its
        holes (the spinal canal, marrow) filled before it is excluded with a ``bone_margin_mm``
        margin.
    lung_margin_mm : float
        The lungs are dilated in-plane by this (mm) before being excluded, so that the
        partial-volume rim between lung and chest wall (which has fat-like HU) cannot carry the
        growth around the lungs; :func:`segment_mediastinum` gives the margin back at the end.
    region_margin_mm : float
        The hull is dilated in-plane by this (mm), so that the region reaches the sternum and the
        spine in front of which the lungs stop.
    exclude_posterior_of_spine : bool
        Also exclude every row posterior of the anterior edge of the bone found within
        ``spine_search_half_width_mm`` of the midline between the lungs (the vertebral body).

    Returns
    -------
    ndarray of bool, shape (z, y, x)
    """
    lungs = np.asarray(lung_mask, dtype=bool)
    ct = np.asarray(ct_hu)
    sp = spacing_zyx(spacing_xyz_mm)
    bone = ct > bone_hu
    bone = fill_holes_per_slice(closing(bone, disk_footprint(bone_closing_radius_mm, spacing_xyz_mm)))
    if bone_margin_mm > 0:
        bone = ndi.binary_dilation(bone, structure=disk_footprint(bone_margin_mm, spacing_xyz_mm))
    lung_excl = lungs
    if lung_margin_mm > 0:
        lung_excl = ndi.binary_dilation(lungs, structure=disk_footprint(lung_margin_mm, spacing_xyz_mm))
    region = np.zeros_like(lungs)
    half_w = int(round(spine_search_half_width_mm / sp[2]))
    for z in np.nonzero(lungs.any(axis=(1, 2)))[0]:
        hull = _grown_hull(lungs[z], region_margin_mm / sp[1:])
        hull &= ~lung_excl[z] & ~bone[z]
        if exclude_posterior_of_spine:
            cols = np.nonzero(lungs[z].any(axis=0))[0]
            mid = int(round(0.5 * (cols.min() + cols.max())))
            strip = bone[z][:, max(0, mid - half_w) : mid + half_w + 1]
            rows = np.nonzero(strip.any(axis=1))[0]
            ys, _ = np.nonzero(lungs[z])
            # The vertebral body is the bone on the midline in the posterior half of the lungs.
            centre_y = 0.5 * (ys.min() + ys.max())
            posterior = rows[rows > centre_y]
            if posterior.size:
                hull[posterior.min() :, :] = False
        region[z] = hull
    return region


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

    The row is the mean of the two lungs' centroid rows; where that voxel is not soft tissue
    inside ``region``, the nearest such voxel within ``seed_search_mm`` is taken instead.
    """
    sp = spacing_zyx(spacing_xyz_mm)
    min_area_px = min_lung_area_mm2 / (sp[1] * sp[2])
    ct = np.asarray(ct_hu)
    seeds = []
    for z in np.nonzero(lung_mask.any(axis=(1, 2)))[0]:
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


def wrap_slices(
    mask: np.ndarray,
    spacing_xyz_mm,
    *,
    links=None,
    min_area_mm2: float = WRAP_MIN_AREA_MM2,
    merge_mm: float = WRAP_MERGE_MM,
    cover_mm: float = WRAP_COVER_MM,
    min_coverage: float = WRAP_MIN_COVERAGE,
) -> np.ndarray:
    """Per axial slice, the convex hulls of the pieces of ``mask``: what they wrap.

    The hull of all the slice's pieces (8-connected, at least ``min_area_mm2``) is taken when at
    least ``min_coverage`` of its boundary lies within ``cover_mm`` of them; otherwise pieces
    closer than ``merge_mm``, or joined through ``links`` (e.g. bone), get one hull per group.
    Smaller pieces are kept as they are.

    Parameters
    ----------
    mask : ndarray of bool, shape (z, y, x)
    spacing_xyz_mm : sequence of 3 float
    links : ndarray of bool, shape (z, y, x), optional
    min_area_mm2, merge_mm, cover_mm, min_coverage : float

    Returns
    -------
    ndarray of bool, a superset of ``mask``
    """
    sp = spacing_zyx(spacing_xyz_mm)
    out = mask.copy()
    eight = np.ones((3, 3), bool)
    cover = disk_footprint(cover_mm, spacing_xyz_mm)[0]
    merge = disk_footprint(merge_mm, spacing_xyz_mm)[0] if merge_mm > 0 else np.ones((1, 1), bool)
    min_px = max(min_area_mm2 / (sp[1] * sp[2]), 3)
    for z in np.nonzero(mask.any(axis=(1, 2)))[0]:
        lab, n = ndi.label(mask[z], structure=eight)
        big = (np.bincount(lab.ravel(), minlength=n + 1) >= min_px) & (np.arange(n + 1) > 0)
        if not big.any():
            continue
        pieces = big[lab]
        whole = convex_hull_image(pieces)
        if _hull_coverage(whole, pieces, cover) >= min_coverage:
            # The pieces surround their hull (a fat ring open where the heart meets the chest
            # wall or the spine): wrap them all.
            out[z] |= whole
            continue
        joined = ndi.binary_dilation(pieces, structure=merge)
        if links is not None:
            joined |= links[z]
        groups, n_groups = ndi.label(joined, structure=eight)
        for g in range(1, n_groups + 1):
            member = pieces & (groups == g)
            if member.sum() >= 3:
                out[z] |= convex_hull_image(member)
    return out


def segment_mediastinum(
    ct_hu,
    lung_mask,
    spacing_xyz_mm,
    *,
    lower_hu: float = MEDIASTINUM_LOWER_HU,
    upper_hu: float = MEDIASTINUM_UPPER_HU,
    bone_hu: float = BONE_HU,
    bone_margin_mm: float = BONE_MARGIN_MM,
    bone_closing_radius_mm: float = BONE_CLOSING_RADIUS_MM,
    lung_margin_mm: float = LUNG_MARGIN_MM,
    region_margin_mm: float = REGION_MARGIN_MM,
    exclude_posterior_of_spine: bool = EXCLUDE_POSTERIOR_OF_SPINE,
    spine_search_half_width_mm: float = SPINE_SEARCH_HALF_WIDTH_MM,
    smoothing_sigma_mm: float = SMOOTHING_SIGMA_MM,
    min_lung_area_mm2: float = MIN_LUNG_AREA_MM2,
    seed_search_mm: float = SEED_SEARCH_MM,
    opening_radius_mm: float = OPENING_RADIUS_MM,
    closing_radius_mm: float = CLOSING_RADIUS_MM,
    wrap_per_slice: bool = WRAP_PER_SLICE,
    wrap_min_area_mm2: float = WRAP_MIN_AREA_MM2,
    wrap_merge_mm: float = WRAP_MERGE_MM,
    wrap_through_bone: bool = WRAP_THROUGH_BONE,
    wrap_min_coverage: float = WRAP_MIN_COVERAGE,
    wrap_cover_mm: float = WRAP_COVER_MM,
    seeds_zyx=None,
    airway_mask=None,
    return_info: bool = False,
):
    """Coarse mediastinum by connected thresholding between the lungs.

    Parameters
    ----------
    ct_hu : ndarray, shape (z, y, x)
        CT in HU.
    lung_mask : ndarray of bool, shape (z, y, x)
        From :func:`segment_lungs`.
    spacing_xyz_mm : sequence of 3 float
        Voxel spacing, SimpleITK order (x, y, z), mm.
    lower_hu, upper_hu : float
        Soft-tissue window of ConnectedThreshold (HU); the default takes mediastinal fat,
        vessels, heart and nodes, and leaves out lung and bone.
    bone_hu, bone_margin_mm, bone_closing_radius_mm, lung_margin_mm, region_margin_mm, exclude_posterior_of_spine, spine_search_half_width_mm
        Search region, see :func:`mediastinum_search_region`.
    smoothing_sigma_mm : float
        Gaussian smoothing (mm) of the CT before thresholding; 0 disables it.
    min_lung_area_mm2 : float
        A slice gets a seed only where both lungs have at least this area.
    seed_search_mm : float
        How far (mm) a seed may move to reach soft tissue inside the region.
    opening_radius_mm : float
        Radius (mm) of the in-plane opening that cuts thin leaks (0 disables it).
    closing_radius_mm : float
        Radius (mm) of the in-plane closing before per-slice hole filling.
    wrap_per_slice : bool
        Replace each 2D piece (8-connected, at least ``wrap_min_area_mm2``) of the grown region
        by its convex hull, within the search region: with a fat window, the mediastinal fat
        wraps the heart, vessels, airway and nodes, even where its ring is open.
    wrap_min_area_mm2 : float
        Smaller pieces are kept as they are.
    wrap_merge_mm : float
        Pieces closer than this (mm) in a slice are wrapped by one hull (a fat ring broken by
        bone or by the heart touching the chest wall); farther pieces get a hull each, so that
        the hull does not span the liver dome between the mediastinum and a distant fat strip.
    wrap_through_bone : bool
        Pieces linked through bone (``ct > bone_hu``: the spine, the sternum) are one group.
    wrap_min_coverage, wrap_cover_mm : float
        First the hull of all the slice's pieces is tried: it is taken when at least
        ``wrap_min_coverage`` of its boundary lies within ``wrap_cover_mm`` of the pieces (they
        surround it, like the fat around the heart); otherwise the pieces are grouped as above.
    seeds_zyx : sequence of (z, y, x), optional
        Manual seeds replacing the automatic ones (the paper's "minor manual adjustments").
    airway_mask : ndarray of bool, optional
        Trachea and main bronchi (``segment_lungs(..., return_info=True)[1]["airway_mask"]``);
        they are mediastinal structures and are added to it (within the lungs' slices).
    return_info : bool
        Also return a dict with the seeds used.

    Returns
    -------
    mediastinum : ndarray of bool, shape (z, y, x)
    info : dict, only with ``return_info``
    """
    ct = np.asarray(ct_hu, dtype=np.float32)
    lungs = np.asarray(lung_mask, dtype=bool)
    if ct.shape != lungs.shape:
        raise ValueError(f"ct_hu {ct.shape} and lung_mask {lungs.shape} differ in shape")
    out = np.zeros_like(lungs)
    sp = spacing_zyx(spacing_xyz_mm)
    margin_mm = max(bone_closing_radius_mm + bone_margin_mm, opening_radius_mm, closing_radius_mm) + region_margin_mm
    box = bounding_box(lungs, (0, *np.ceil(margin_mm / sp[1:] + 1).astype(int)))
    if box is None:
        return (out, {"seeds_zyx": [], "n_seeds": 0}) if return_info else out
    origin = np.array([b.start for b in box])
    ct, lungs = ct[box], lungs[box]
    if smoothing_sigma_mm > 0:
        ct = ndi.gaussian_filter(ct, sigma=smoothing_sigma_mm / sp, mode="nearest")
    region = mediastinum_search_region(
        ct,
        lungs,
        spacing_xyz_mm,
        bone_hu=bone_hu,
        bone_margin_mm=bone_margin_mm,
        bone_closing_radius_mm=bone_closing_radius_mm,
        lung_margin_mm=lung_margin_mm,
        region_margin_mm=region_margin_mm,
        exclude_posterior_of_spine=exclude_posterior_of_spine,
        spine_search_half_width_mm=spine_search_half_width_mm,
    )
    if seeds_zyx is None:
        seeds = mediastinum_seeds(
            ct,
            lungs,
            region,
            spacing_xyz_mm,
            lower_hu=lower_hu,
            upper_hu=upper_hu,
            min_lung_area_mm2=min_lung_area_mm2,
            seed_search_mm=seed_search_mm,
        )
    else:
        seeds = [tuple(int(round(v)) - int(o) for v, o in zip(s, origin)) for s in seeds_zyx]
        seeds = [s for s in seeds if all(0 <= v < n for v, n in zip(s, ct.shape))]
    grown = np.zeros_like(lungs)
    if seeds:
        outside_value = lower_hu - 1000.0
        image = sitk.GetImageFromArray(np.where(region, ct, outside_value).astype(np.float32))
        image.SetSpacing(tuple(float(s) for s in spacing_xyz_mm))
        grown = sitk.ConnectedThreshold(
            image,
            seedList=[(int(x), int(y), int(z)) for z, y, x in seeds],
            lower=float(lower_hu),
            upper=float(upper_hu),
            replaceValue=1,
        )
        grown = sitk.GetArrayFromImage(grown).astype(bool)
        grown = opening(grown, disk_footprint(opening_radius_mm, spacing_xyz_mm))
        lab, n = ndi.label(grown)
        if n:
            seed_labels = {int(lab[s]) for s in seeds} - {0}
            if not seed_labels:
                sizes = np.bincount(lab.ravel(), minlength=n + 1)
                sizes[0] = 0
                seed_labels = {int(np.argmax(sizes))}
            grown = np.isin(lab, sorted(seed_labels))
        if wrap_per_slice:
            # Everything the grown compartment wraps in its slice (heart, vessels, airway, nodes),
            # but not what lies outside it (subdiaphragmatic organs under the lung bases).
            bone = fill_holes_per_slice(closing(ct > bone_hu, disk_footprint(bone_closing_radius_mm, spacing_xyz_mm)))
            hulls = wrap_slices(
                grown,
                spacing_xyz_mm,
                links=bone if wrap_through_bone else None,
                min_area_mm2=wrap_min_area_mm2,
                merge_mm=wrap_merge_mm,
                cover_mm=wrap_cover_mm,
                min_coverage=wrap_min_coverage,
            )
            grown = hulls & (region | grown)
    if airway_mask is not None:
        grown |= np.asarray(airway_mask, dtype=bool)[box] & ~lungs
    if grown.any():
        grown = fill_holes_per_slice(closing(grown, disk_footprint(closing_radius_mm, spacing_xyz_mm)))
        if lung_margin_mm > 0:
            # Give back the margin left out next to the lungs (where the mediastinum meets them).
            grown |= ndi.binary_dilation(grown, structure=disk_footprint(lung_margin_mm, spacing_xyz_mm))
        grown &= ~lungs
    out[box] = grown
    if return_info:
        seeds_full = [tuple(int(v + o) for v, o in zip(s, origin)) for s in seeds]
        return out, {"seeds_zyx": seeds_full, "n_seeds": len(seeds_full)}
    return out
