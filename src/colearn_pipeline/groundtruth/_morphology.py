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


def _padded(op, mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    pad = [(s // 2, s // 2) for s in footprint.shape]
    out = op(np.pad(mask, pad), structure=footprint)
    return out[tuple(slice(p, p + n) for (p, _), n in zip(pad, mask.shape))]


def closing(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary closing that does not lose foreground at the volume border."""
    if footprint.sum() <= 1:
        return mask.copy()
    return _padded(ndi.binary_closing, mask, footprint)


def opening(mask: np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Binary opening (the border needs no padding: erosion treats outside as background)."""
    if footprint.sum() <= 1:
        return mask.copy()
    return ndi.binary_opening(mask, structure=footprint)


def fill_holes_per_slice(mask: np.ndarray, max_hole_px: float | None = None) -> np.ndarray:
    """Fill the holes of every axial slice (2D holes; a 3D fill would miss open tubes).

    With ``max_hole_px``, only holes of at most that many pixels are filled.
    """
    filled = ndi.binary_fill_holes(mask, structure=IN_PLANE_STRUCTURE)
    if max_hole_px is None:
        return filled
    holes = filled & ~mask
    lab, n = ndi.label(holes, structure=IN_PLANE_STRUCTURE)
    if n == 0:
        return filled
    small = np.bincount(lab.ravel(), minlength=n + 1) <= max_hole_px
    small[0] = False
    return mask | small[lab]


def component_sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Voxel count of labels ``1..n`` (index 0 of the result is label 1)."""
    return np.bincount(labels.ravel(), minlength=n + 1)[1:]


def bounding_box(mask: np.ndarray, margin_zyx=(0, 0, 0)) -> tuple[slice, ...] | None:
    """Slices of the bounding box of ``mask`` grown by ``margin_zyx`` voxels, or None if empty."""
    if not mask.any():
        return None
    box = []
    for axis, m in enumerate(margin_zyx):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        box.append(slice(max(0, idx[0] - int(m)), min(mask.shape[axis], idx[-1] + int(m) + 1)))
    return tuple(box)
