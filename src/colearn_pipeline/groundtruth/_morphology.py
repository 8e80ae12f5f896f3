"""Small morphology helpers shared by the ground-truth modules (voxel sizes in mm)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

#: In-plane (per axial slice) 4-connectivity written as a 3D structure: no links across z.
IN_PLANE_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE_STRUCTURE[1] = ndi.generate_binary_structure(2, 1)


def spacing_zyx(spacing_xyz_mm) -> np.ndarray:
    """Return the voxel spacing in array order ``(z, y, x)`` from SimpleITK order ``(x, y, z)``."""
    spacing = np.asarray(spacing_xyz_mm, dtype=float)
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(f"spacing_xyz_mm must be three positive numbers, got {spacing_xyz_mm!r}")
    return spacing[::-1]


def ellipsoid_footprint(radius_mm: float, spacing_xyz_mm) -> np.ndarray:
    """Boolean ball of physical radius ``radius_mm`` on an anisotropic ``(z, y, x)`` grid.

    A radius smaller than every voxel size gives the single-voxel footprint.
    """
    sp = spacing_zyx(spacing_xyz_mm)
    half = np.floor(radius_mm / sp + 1e-9).astype(int)
    axes = [np.arange(-h, h + 1) * s for h, s in zip(half, sp)]
    zz, yy, xx = np.meshgrid(*axes, indexing="ij")
    return (zz**2 + yy**2 + xx**2) <= radius_mm**2 + 1e-9


def disk_footprint(radius_mm: float, spacing_xyz_mm) -> np.ndarray:
    """Boolean in-plane disk of radius ``radius_mm`` as a 3D ``(1, y, x)`` footprint."""
    sp = spacing_zyx(spacing_xyz_mm)
    half = np.floor(radius_mm / sp[1:] + 1e-9).astype(int)
    yy, xx = np.meshgrid(*(np.arange(-h, h + 1) * s for h, s in zip(half, sp[1:])), indexing="ij")
    return ((yy**2 + xx**2) <= radius_mm**2 + 1e-9)[None]


def _half(footprint: np.ndarray) -> np.ndarray:
    return np.asarray(footprint.shape) // 2


def _pasted(mask: np.ndarray, box: tuple[slice, ...], part: np.ndarray) -> np.ndarray:
    """A False array shaped like ``mask`` with ``part`` written at ``box``."""
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = part
    return out


def dilation(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary dilation (``scipy.ndimage.binary_dilation``), computed on the mask's bounding box only."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, _half(footprint))
    if box is None:
        return mask.copy()
    return _pasted(mask, box, ndi.binary_dilation(mask[box], structure=footprint))


def closing(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary closing that does not lose foreground at the volume border.

    Computed on the mask's bounding box padded by the footprint, which gives the closing of the
    whole volume padded by the footprint (the dilation cannot reach farther).
    """
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    if footprint.sum() <= 1 or box is None:
        return mask.copy()
    half = _half(footprint)
    pad = [(int(h), int(h)) for h in half]
    closed = ndi.binary_closing(np.pad(mask[box], pad), structure=footprint)
    # Shift the padded result back onto the volume, dropping what falls outside it.
    lo = np.array([b.start for b in box]) - half
    hi = np.array([b.stop for b in box]) + half
    clip_lo = np.maximum(lo, 0)
    clip_hi = np.minimum(hi, mask.shape)
    inner = tuple(slice(int(a - l), int(b - l)) for a, b, l in zip(clip_lo, clip_hi, lo))
    return _pasted(mask, tuple(slice(int(a), int(b)) for a, b in zip(clip_lo, clip_hi)), closed[inner])


def opening(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary opening (the border needs no padding: erosion treats outside as background).

    Computed on the mask's bounding box: an opening never adds foreground.
    """
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    if footprint.sum() <= 1 or box is None:
        return mask.copy()
    return _pasted(mask, box, ndi.binary_opening(mask[box], structure=footprint))


def fill_holes_per_slice(mask: np.ndarray, max_hole_px: float | None = None) -> np.ndarray:
    """Fill the holes of every axial slice (2D holes; a 3D fill would miss open tubes).

    A hole is a 4-connected background region of a slice that does not reach the slice border.
    With ``max_hole_px``, only holes of at most that many pixels are filled. The background is
    labelled once on the mask's bounding box grown by one pixel (a background ring, connected to
    the border outside it), instead of propagating from the border of the whole slice.
    """
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask, (0, 1, 1))
    if box is None:
        return mask.copy()
    sub = mask[box]
    lab, n = ndi.label(~sub, structure=IN_PLANE_STRUCTURE)
    outside = np.zeros(n + 1, dtype=bool)
    for face in (lab[:, 0, :], lab[:, -1, :], lab[:, :, 0], lab[:, :, -1]):
        outside[face] = True
    fill = ~outside
    fill[0] = False
    if max_hole_px is not None:
        fill &= np.bincount(lab.ravel(), minlength=n + 1) <= max_hole_px
    out = mask.copy()
    out[box] |= fill[lab]
    return out


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of labels ``1..n`` (index 0 of the result is label 1)."""
    return np.bincount(labels.ravel(), minlength=n + 1)[1:]


def bounding_box(mask: np.ndarray, margin_zyx=(0, 0, 0)) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin_zyx`` voxels, or None if empty."""
    mask = np.asarray(mask, dtype=bool)
    zy = mask.any(axis=2)
    if not zy.any():
        return None
    profiles = (zy.any(axis=1), zy.any(axis=0), mask.any(axis=(0, 1)))
    box = []
    for axis, (profile, m) in enumerate(zip(profiles, margin_zyx)):
        idx = np.nonzero(profile)[0]
        box.append(slice(max(0, int(idx[0] - m)), min(mask.shape[axis], int(idx[-1] + m + 1))))
    return tuple(box)
