"""Axis-aligned image grids in DICOM patient coordinates (LPS, mm) and shape rasterisers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """An axial grid with identity direction cosines.

    Attributes
    ----------
    shape_zyx : tuple of int
        (slices, rows, columns).
    spacing_xyz_mm : tuple of float
        Column spacing (x), row spacing (y), slice spacing (z), mm.
    origin_xyz_mm : tuple of float
        Patient position (LPS, mm) of the centre of voxel (0, 0, 0).
    """

    shape_zyx: tuple[int, int, int]
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]

    def axis_mm(self, axis: str) -> np.ndarray:
        """Voxel-centre coordinates (mm) along ``"x"``, ``"y"`` or ``"z"``."""
        i = "xyz".index(axis)
        n = self.shape_zyx[2 - i]
        return self.origin_xyz_mm[i] + self.spacing_xyz_mm[i] * np.arange(n, dtype=np.float64)

    def index_of(self, point_xyz_mm: np.ndarray) -> tuple[int, int, int]:
        """Nearest voxel ``(z, y, x)`` index of a point (clipped to the grid)."""
        p = np.asarray(point_xyz_mm, dtype=np.float64)
        ijk = np.rint((p - np.asarray(self.origin_xyz_mm)) / np.asarray(self.spacing_xyz_mm)).astype(int)
        ijk = np.clip(ijk, 0, np.asarray(self.shape_zyx[::-1]) - 1)
        return int(ijk[2]), int(ijk[1]), int(ijk[0])

    def point_of(self, zyx: tuple[int, int, int]) -> np.ndarray:
        """Patient position (LPS, mm) of a voxel centre."""
        z, y, x = zyx
        return np.asarray(self.origin_xyz_mm) + np.asarray(self.spacing_xyz_mm) * np.array([x, y, z], float)

    def bbox(self, lo_xyz_mm: np.ndarray, hi_xyz_mm: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Index slices ``(z, y, x)`` of the voxels whose centres lie in a box; None if empty."""
        o = np.asarray(self.origin_xyz_mm)
        s = np.asarray(self.spacing_xyz_mm)
        lo = np.ceil((np.asarray(lo_xyz_mm) - o) / s).astype(int)
        hi = np.floor((np.asarray(hi_xyz_mm) - o) / s).astype(int) + 1
        n = np.asarray(self.shape_zyx[::-1])
        lo = np.clip(lo, 0, n)
        hi = np.clip(hi, 0, n)
        if np.any(hi <= lo):
            return None
        return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])

    def coords(self, sl: tuple[slice, slice, slice]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Broadcastable coordinate arrays ``Z (n,1,1), Y (1,m,1), X (1,1,k)`` (mm) of a bbox."""
        z = self.axis_mm("z")[sl[0]][:, None, None]
        y = self.axis_mm("y")[sl[1]][None, :, None]
        x = self.axis_mm("x")[sl[2]][None, None, :]
        return z, y, x


def capsule(grid: Grid, p0, p1, r0: float, r1: float | None = None):
    """Voxels within a tapered capsule (a segment swept by a sphere of radius r0 -> r1).

    Returns
    -------
    (slices, mask) or None
        Bounding-box index slices ``(z, y, x)`` and the boolean mask inside that box.
    """
    r1 = r0 if r1 is None else r1
    p0 = np.asarray(p0, float)
    p1 = np.asarray(p1, float)
    rmax = max(r0, r1)
    sl = grid.bbox(np.minimum(p0, p1) - rmax, np.maximum(p0, p1) + rmax)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    d = p1 - p0
    dd = float(d @ d) or 1e-9
    t = ((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / dd
    t = np.clip(t, 0.0, 1.0)
    dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
    r = r0 + (r1 - r0) * t
    return sl, dist2 <= r * r


def ellipsoid(grid: Grid, centre, semi_axes_mm, axes=None, pad_mm: float = 0.0):
    """Voxels inside an (optionally rotated) ellipsoid grown by ``pad_mm`` along each axis.

    Parameters
    ----------
    axes : array (3, 3), optional
        Rows are the unit vectors of the ellipsoid's local axes in patient coordinates.

    Returns
    -------
    (slices, mask) or None
    """
    c = np.asarray(centre, float)
    a = np.asarray(semi_axes_mm, float) + pad_mm
    axes = np.eye(3) if axes is None else np.asarray(axes, float)
    ext = np.sqrt(((axes * a[:, None]) ** 2).sum(axis=0))
    sl = grid.bbox(c - ext, c + ext)
    if sl is None:
        return None
    z, y, x = grid.coords(sl)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    acc = 0.0
    for k in range(3):
        q = axes[k, 0] * dx + axes[k, 1] * dy + axes[k, 2] * dz
        acc = acc + (q / a[k]) ** 2
    return sl, acc <= 1.0


def paint(vol: np.ndarray, shape, value: int, where=None) -> None:
    """Set ``vol`` to ``value`` inside a ``(slices, mask)`` shape, optionally only where ``where(sub)``."""
    if shape is None:
        return
    sl, mask = shape
    sub = vol[sl]
    m = mask if where is None else (mask & where(sub))
    sub[m] = value
