"""One grid: resampling in physical space, in-plane resizing to the model size, point mapping."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from skimage.transform import resize

from colearn_pipeline.dicom.errors import DicomSeriesError

logger = logging.getLogger(__name__)

#: A CT slice centre this close outside the PET's slab still counts as covered (rounding of positions).
COVERAGE_TOLERANCE_MM = 1e-3

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


def _grid(volume) -> tuple[int, float, np.ndarray, np.ndarray]:
    """(slices, slice spacing, origin, slice normal) of a geometry mapping or a SeriesVolume-like object."""
    get = volume.get if isinstance(volume, Mapping) else lambda key: getattr(volume, key)
    direction = np.asarray(get("direction"), dtype=float).reshape(3, 3)
    return (int(get("shape_zyx")[0]), float(get("spacing_xyz_mm")[2]), np.asarray(get("origin_xyz_mm"), dtype=float),
            direction[:, 2])


def pet_covered_slices(ct, pet) -> tuple[int, int] | None:
    """The first and last CT slice whose centre lies in the PET's slab, or None when none does.

    The slab runs from half a PET slice below its first slice centre to half a slice above its last
    (where resampling the PET onto the CT still has PET values, :func:`resample_to_reference`).

    Parameters
    ----------
    ct, pet : mapping or SeriesVolume
        Geometry: ``shape_zyx``, ``spacing_xyz_mm``, ``origin_xyz_mm``, ``direction`` (keys or attributes).

    Returns
    -------
    (int, int) or None
    """
    n_ct, step_ct, origin_ct, normal_ct = _grid(ct)
    n_pet, step_pet, origin_pet, normal_pet = _grid(pet)
    centres = origin_ct[None, :] + np.arange(n_ct)[:, None] * step_ct * normal_ct[None, :]
    along = (centres - origin_pet) @ normal_pet
    low, high = -step_pet / 2, (n_pet - 1) * step_pet + step_pet / 2
    tolerance = COVERAGE_TOLERANCE_MM
    covered = np.flatnonzero((along >= low - tolerance) & (along <= high + tolerance))
    return None if covered.size == 0 else (int(covered[0]), int(covered[-1]))


def split_by_pet_coverage(slice_index: np.ndarray, ct, pet) -> tuple[np.ndarray, np.ndarray]:
    """``slice_index`` (CT slices) split into those the PET covers and the others (:func:`pet_covered_slices`)."""
    index = np.asarray(slice_index)
    covered = pet_covered_slices(ct, pet)
    inside_pet = np.zeros(index.shape, bool) if covered is None else (index >= covered[0]) & (index <= covered[1])
    return index[inside_pet], index[~inside_pet]


def slices_with_pet(slice_index: np.ndarray, ct, pet, study: str = "-") -> np.ndarray:
    """The CT slices of ``slice_index`` that the PET covers; the others are named in a warning (prediction masks them).

    Raises
    ------
    DicomSeriesError
        When the PET covers none of them.
    """
    covered, without = split_by_pet_coverage(slice_index, ct, pet)
    if without.size:
        logger.warning("%s: CT slices %s lie outside the PET's field of view (no SUV there): not segmented", study,
                       ", ".join(str(int(z)) for z in without))
    if covered.size == 0:
        raise DicomSeriesError(study, "PET series", "coverage: the PET covers none of the CT slices "
                                                    f"{int(without[0])}..{int(without[-1])} to be segmented")
    return covered
