"""One grid: resampling in physical space, in-plane resizing to the model size, point mapping."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from skimage.transform import resize

INTERPOLATORS = {
    "linear": sitk.sitkLinear,
    "nearest": sitk.sitkNearestNeighbor,
    "bspline": sitk.sitkBSpline,
}


def resample_to_reference(
    moving: sitk.Image,
    reference: sitk.Image,
    interpolator: str = "linear",
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``moving`` onto the grid of ``reference`` in physical (patient) space.

    Parameters
    ----------
    moving : SimpleITK.Image
        E.g. the PET SUV volume on the PET grid.
    reference : SimpleITK.Image
        E.g. the CT volume: size, spacing, origin and direction of the output.
    interpolator : {"linear", "nearest", "bspline"}
    default_value : float
        Value outside ``moving``'s field of view.

    Returns
    -------
    SimpleITK.Image
        float32 on the reference grid (identity transform: both images share a frame of reference).
    """
    if interpolator not in INTERPOLATORS:
        raise ValueError(f"unknown interpolator {interpolator!r}; expected one of {sorted(INTERPOLATORS)}")
    f = sitk.ResampleImageFilter()
    f.SetReferenceImage(reference)
    f.SetInterpolator(INTERPOLATORS[interpolator])
    f.SetDefaultPixelValue(float(default_value))
    f.SetTransform(sitk.Transform())
    f.SetOutputPixelType(sitk.sitkFloat32)
    return f.Execute(moving)


def resize_slices(volume: np.ndarray, size_hw: Sequence[int], kind: str = "image") -> np.ndarray:
    """Resize every axial slice of a ``(z, y, x)`` volume to ``size_hw``.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(z, y, x)``.
    size_hw : (int, int)
        Output rows and columns.
    kind : {"image", "label"}
        ``"image"``: linear interpolation with Gaussian anti-aliasing when shrinking (an
        area-like average, so a 512 -> 256 CT is not aliased); float32 out.
        ``"label"``: nearest neighbour, dtype kept.

    Returns
    -------
    numpy.ndarray
        ``(z, H, W)``.
    """
    h, w = (int(v) for v in size_hw)
    if h <= 0 or w <= 0:
        raise ValueError(f"size_hw must be positive, got {size_hw!r}")
    z = volume.shape[0]
    if volume.shape[1:] == (h, w):
        return volume.astype(np.float32 if kind == "image" else volume.dtype, copy=True)
    if kind == "label":
        return resize(volume, (z, h, w), order=0, preserve_range=True, anti_aliasing=False, mode="edge").astype(
            volume.dtype
        )
    if kind != "image":
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    shrinking = h < volume.shape[1] or w < volume.shape[2]
    sigma = None
    if shrinking:
        # anti-aliasing only in-plane: z keeps its size
        factors = np.array([1.0, volume.shape[1] / h, volume.shape[2] / w])
        sigma = np.maximum(0.0, (factors - 1.0) / 2.0)
    out = resize(
        volume.astype(np.float32, copy=False), (z, h, w), order=1, preserve_range=True,
        anti_aliasing=shrinking, anti_aliasing_sigma=sigma, mode="edge",
    )
    return out.astype(np.float32)


def resize_labels_nearest(labels: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Nearest-neighbour resize of a ``(S, H, W)`` label stack to ``(S, rows, cols)``.

    Pixel centres are aligned: output pixel ``i`` samples input ``floor((i + 0.5) * H / rows)``,
    which inverts a resize of the whole field of view (model grid 256 -> CT grid 512 and back).

    Parameters
    ----------
    labels : numpy.ndarray
        ``(S, H, W)`` integer labels.
    rows, cols : int
        Output size.

    Returns
    -------
    numpy.ndarray
        ``(S, rows, cols)`` of the input dtype.
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"expected (S, H, W) labels, got shape {lab.shape}")
    _, h, w = lab.shape
    yi = np.minimum(((np.arange(rows) + 0.5) * h / rows).astype(np.int64), h - 1)
    xi = np.minimum(((np.arange(cols) + 0.5) * w / cols).astype(np.int64), w - 1)
    return lab[:, yi[:, None], xi[None, :]]


def physical_to_index_zyx(points_xyz_mm: Sequence[Sequence[float]], image: sitk.Image) -> np.ndarray:
    """Map patient-space points (LPS, mm) to continuous voxel indices ``(z, y, x)`` of ``image``.

    Parameters
    ----------
    points_xyz_mm : sequence of (x, y, z)
    image : SimpleITK.Image

    Returns
    -------
    numpy.ndarray
        float64 ``(n, 3)`` in array order; values outside ``[-0.5, size - 0.5]`` are outside the
        image.
    """
    out = np.empty((len(points_xyz_mm), 3), dtype=np.float64)
    for i, p in enumerate(points_xyz_mm):
        if len(p) != 3:
            raise ValueError(f"a position must have three coordinates (x, y, z) in mm, got {p!r}")
        idx = image.TransformPhysicalPointToContinuousIndex([float(v) for v in p])
        out[i] = idx[::-1]
    return out


def inside(index_zyx: np.ndarray, shape_zyx: Sequence[int]) -> np.ndarray:
    """Whether continuous indices ``(n, 3)`` lie within a volume of ``shape_zyx`` (voxel extents)."""
    idx = np.asarray(index_zyx, dtype=float).reshape(-1, 3)
    upper = np.asarray(shape_zyx, dtype=float) - 0.5
    return np.all((idx >= -0.5) & (idx <= upper), axis=1)
