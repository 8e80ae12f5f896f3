"""How far derived labels are from an expert's: Dice, volume ratio and mean surface distance per class.

The surface of a mask is its voxels with a face neighbour outside it (the volume's border counts
as outside). The mean surface distance is symmetric: the mean, over the surface voxels of both
masks, of the distance (mm, voxel centres, anisotropic spacing) to the nearest surface voxel of
the other mask.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from colearn_pipeline.groundtruth.labels import LABELS, dice


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it (or on the volume's border)."""
    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def mean_surface_distance_mm(a: np.ndarray, b: np.ndarray, spacing_xyz_mm: Sequence[float]) -> float | None:
    """Symmetric mean surface distance (mm) of two masks; 0 when equal, None when one is empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    if not a.any() or not b.any():
        return None
    both = np.argwhere(a | b)
    lo, hi = np.maximum(both.min(axis=0) - 1, 0), both.max(axis=0) + 2  # the box around both, 1 voxel wider
    box = tuple(slice(int(s), int(e)) for s, e in zip(lo, hi))
    sa, sb = surface(a)[box], surface(b)[box]
    sampling = tuple(float(v) for v in spacing_xyz_mm)[::-1]
    to_b = ndimage.distance_transform_edt(~sb, sampling=sampling)
    to_a = ndimage.distance_transform_edt(~sa, sampling=sampling)
    distances = np.concatenate([to_b[sa], to_a[sb]])
    return float(distances.mean())


def class_agreement(derived: np.ndarray, expert: np.ndarray, spacing_xyz_mm: Sequence[float],
                    classes: Iterable[str] = ("lung", "mediastinum", "tumour")) -> dict[str, dict[str, float | None]]:
    """Per class: Dice, volume ratio (derived / expert) and mean surface distance (mm) of two label maps.

    Parameters
    ----------
    derived, expert : numpy.ndarray
        ``(z, y, x)`` label maps on one grid (values of ``LABELS``).
    spacing_xyz_mm : sequence of 3 float
    classes : iterable of str
        The classes to compare (those the expert contoured).

    Returns
    -------
    dict
        ``{class: {"dice", "volume_ratio", "mean_surface_distance_mm"}}``; ``volume_ratio`` is None
        when the expert's class is empty, the distance None when either is.
    """
    out = {}
    for name in classes:
        a, b = np.asarray(derived) == LABELS[name], np.asarray(expert) == LABELS[name]
        n_expert = int(np.count_nonzero(b))
        out[name] = {
            "dice": float(dice(a, b)),
            "volume_ratio": float(np.count_nonzero(a) / n_expert) if n_expert else None,
            "mean_surface_distance_mm": mean_surface_distance_mm(a, b, spacing_xyz_mm),
        }
    return out
