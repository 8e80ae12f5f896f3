"""Read one DICOM image series into a validated, geometry-aware volume.

The volume is ordered by position along the slice normal (the cross product of the row and
column direction cosines of ImageOrientationPatient), the slice spacing comes from those
positions (never from SliceThickness), and every slice gets its own RescaleSlope and
RescaleIntercept. Anything that would make the volume wrong -- an unreadable or truncated file,
a gap, a duplicated position, uneven spacing, mixed orientation or size -- raises
:class:`~colearn_pipeline.dicom.errors.DicomSeriesError` naming the study, the file and the
problem.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from colearn_pipeline.dicom.consistency import resolve_positions
from colearn_pipeline.dicom.errors import DicomSeriesError
from colearn_pipeline.dicom.multiframe import frame_headers, is_multiframe

#: Direction cosines of two slices agree when no component differs by more than this.
ORIENTATION_TOLERANCE = 1e-4
#: Two slices closer than this along the normal are the same position (duplicates).
DUPLICATE_TOLERANCE_MM = 1e-3
#: Slice gaps may differ from the median gap by this fraction before spacing is "non-uniform".
SPACING_RELATIVE_TOLERANCE = 0.01
#: In-plane drift allowed between slice origins (mm) before positions are "not along the normal".
INPLANE_TOLERANCE_MM = 0.01
#: Pixel spacings of two slices agree within this (mm).
PIXEL_SPACING_TOLERANCE_MM = 1e-4
#: What a dynamic PET (several frames per position by time) becomes: refused, or the frame nearest
#: :data:`UPTAKE_TIME_MIN` after injection (:func:`~colearn_pipeline.dicom.consistency.resolve_positions`).
DYNAMIC_PET = "refuse"
#: The standard uptake time (minutes after injection) of a static FDG PET.
UPTAKE_TIME_MIN = 60.0
#: CT value given to PixelPaddingValue pixels (air) unless the caller names another.
AIR_HU = -1000.0
#: Uncompressed little-endian transfer syntaxes whose pixels are read straight from the bytes;
#: every other syntax (compressed, big endian, deflated) is decoded by pydicom and its plugins.
NATIVE_LITTLE_ENDIAN = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})


@dataclass
class SeriesVolume:
    """A series read into memory.

    Attributes
    ----------
    array : numpy.ndarray
        float32 ``(z, y, x)`` in the modality's units after per-slice rescale (HU for CT,
        the PET's Units, e.g. Bq/mL, for PET).
    datasets : list of pydicom.dataset.Dataset
        The headers in the array's slice order, pixel data removed.
    files : list of str
        The files in the array's slice order.
    spacing_xyz_mm : tuple of float
        Column spacing, row spacing and slice spacing (from the positions).
    origin_xyz_mm : tuple of float
        ImagePositionPatient of the first slice (patient LPS, mm).
    direction : tuple of float
        Nine direction cosines in SimpleITK order (row-major 3x3 whose columns are the
        x, y and z axes: row cosine, column cosine, slice normal).
    study : str
        The study's pseudonym.
    notes : list of str
        What was done to objects sharing a position (identical duplicates kept once, the frame kept
        of a dynamic PET); empty for an ordinary series.
    """

    array: np.ndarray
    datasets: list[Dataset]
    files: list[str]
    spacing_xyz_mm: tuple[float, float, float]
    origin_xyz_mm: tuple[float, float, float]
    direction: tuple[float, ...]
    study: str = "-"
    modality: str = field(default="")
    notes: list[str] = field(default_factory=list)

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        """Shape of :attr:`array`."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def to_sitk(self, array: np.ndarray | None = None):
        """Return a SimpleITK image with this series' geometry.

        Parameters
        ----------
        array : numpy.ndarray, optional
            A ``(z, y, x)`` array of the same shape to wrap instead of :attr:`array`
            (e.g. the SUV volume).

        Returns
        -------
        SimpleITK.Image
        """
        import SimpleITK as sitk

        data = self.array if array is None else np.asarray(array)
        if data.shape != self.array.shape:
            raise ValueError(f"{self.study}: array shape {data.shape} != series shape {self.array.shape}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(data))
        image.SetSpacing([float(v) for v in self.spacing_xyz_mm])
        image.SetOrigin([float(v) for v in self.origin_xyz_mm])
        image.SetDirection([float(v) for v in self.direction])
        return image


def _label(path: str, root: str | None) -> str:
    if root:
        try:
            return os.path.relpath(path, root)
        except ValueError:
            return str(path)
    return str(path)


def _floats(ds: Dataset, keyword: str, n: int, study: str, label: str) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise DicomSeriesError(study, label, f"missing {keyword}")
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DicomSeriesError(study, label, f"unreadable {keyword} {value!r}") from exc
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise DicomSeriesError(study, label, f"{keyword} must have {n} finite values, got {value!r}")
    return out


def _decode_problem(ds: Dataset, exc: Exception) -> str:
    """Why the pixel data could not be decoded: the transfer syntax and the decoder that is missing."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:
        return f"pixel data cannot be decoded, no TransferSyntaxUID in the file meta ({type(exc).__name__}: {exc})"
    ts = UID(str(ts))
    name = f"transfer syntax {ts.name} ({ts})"
    if not ts.is_compressed:
        return f"pixel data of {name} cannot be read: file truncated or corrupt ({type(exc).__name__}: {exc})"
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        return f"{name} cannot be decoded: pydicom has no pixel-data decoder for it (convert the series to another syntax)"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
        return f"{name} cannot be decoded: no decoder plugin installed ({missing})"
    plugins = ", ".join(decoder.available_plugins)
    return (
        f"pixel data of {name} could not be decoded by the installed plugin(s) {plugins}: damaged or "
        f"non-conformant codestream ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    )


def native_pixels(ds: Dataset) -> np.ndarray | None:
    """The ``(rows, cols)`` stored pixels of an uncompressed little-endian single-frame grey image, else None.

    Equal to ``ds.pixel_array`` (unused high bits corrected as pydicom does) without its decoder
    machinery; None whenever pydicom must decide (another syntax, colour, several frames, a
    buffer too short), so that unusual and broken files get pydicom's handling and messages.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    pixel_data = ds.get("PixelData")
    try:
        rows, cols, allocated = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        stored, signed = int(ds.BitsStored), int(ds.PixelRepresentation)  # required, as pydicom requires them
        frames, samples = int(ds.get("NumberOfFrames", 1) or 1), int(ds.SamplesPerPixel)
    except (AttributeError, TypeError, ValueError):
        return None
    if (syntax not in NATIVE_LITTLE_ENDIAN or pixel_data is None or allocated not in (8, 16, 32) or signed not in (0, 1)
            or not 0 < stored <= allocated or frames != 1 or samples != 1 or rows <= 0 or cols <= 0
            or not str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME")):
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{allocated // 8}")
    buffer = pixel_data.value if hasattr(pixel_data, "value") else pixel_data
    if not isinstance(buffer, bytes) or len(buffer) < rows * cols * dtype.itemsize:
        return None
    pixels = np.frombuffer(buffer, dtype=dtype, count=rows * cols).reshape(rows, cols)
    if stored < allocated:
        shift = allocated - stored
        pixels = np.right_shift(np.left_shift(pixels, shift), shift)
    return pixels


def _rescale(ds: Dataset, study: str, label: str) -> tuple[float, float]:
    """RescaleSlope and RescaleIntercept; a slope that is 0, negative or not finite is refused."""
    slope, intercept = 1.0, 0.0
    if ds.get("RescaleSlope") not in (None, ""):
        try:
            slope = float(ds.RescaleSlope)
        except (TypeError, ValueError) as exc:
            raise DicomSeriesError(study, label, f"RescaleSlope (0028,1053) is not a number: {ds.RescaleSlope!r}") from exc
        if not np.isfinite(slope) or slope <= 0:
            raise DicomSeriesError(study, label, f"RescaleSlope (0028,1053) must be > 0 and finite, got {slope!r}")
    if ds.get("RescaleIntercept") not in (None, ""):
        try:
            intercept = float(ds.RescaleIntercept)
        except (TypeError, ValueError) as exc:
            raise DicomSeriesError(study, label, f"RescaleIntercept (0028,1052) is not a number: {ds.RescaleIntercept!r}") from exc
        if not np.isfinite(intercept):
            raise DicomSeriesError(study, label, f"RescaleIntercept (0028,1052) must be finite, got {intercept!r}")
    return slope, intercept


def _padding_mask(ds: Dataset, stored: np.ndarray) -> np.ndarray | None:
    """Stored pixels that are PixelPaddingValue (or within the padding range), else None."""
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit")
    if limit is None:
        return stored == int(pad)
    low, high = sorted((int(pad), int(limit)))
    return (stored >= low) & (stored <= high)


def _exact_in_float32(stored: np.ndarray, slope: float, intercept: float) -> bool:
    """Whether ``stored * slope + intercept`` is an integer of at most 2**24 for every stored value (so
    float32 arithmetic is exact): integer pixels of at most 16 bits, integer slope and intercept."""
    if stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or not (slope.is_integer() and intercept.is_integer()):
        return False
    info = np.iinfo(stored.dtype)
    return max(abs(info.min), abs(info.max)) * abs(slope) + abs(intercept) <= 2**24


def _to_real(ds: Dataset, stored: np.ndarray, study: str, label: str, padding_value: float) -> np.ndarray:
    """Stored pixels -> float32 real-world values (HU, Bq/mL); padding pixels become ``padding_value``."""
    slope, intercept = _rescale(ds, study, label)
    if _exact_in_float32(stored, slope, intercept):
        image = stored.astype(np.float32)  # every step exact: the same bits as the float64 path below
        if slope != 1.0:
            image *= np.float32(slope)
        if intercept != 0.0:
            image += np.float32(intercept)
        pad = _padding_mask(ds, stored)
        if pad is not None:
            image[pad] = padding_value
        return image
    # float64 multiply then cast: slope*stored can exceed float32 precision for large PET values
    image = stored.astype(np.float64) * slope + intercept
    if image.size and not np.abs(image).max() <= np.finfo(np.float32).max:
        raise DicomSeriesError(
            study, label, f"RescaleSlope (0028,1053) {slope!r} gives values beyond the float32 range (implausible slope)"
        )
    pad = _padding_mask(ds, stored)
    if pad is not None:
        image[pad] = padding_value
    return image.astype(np.float32)


def read_image(path: str, study: str = "-", label: str | None = None, padding_value: float | None = None) -> list[tuple[Dataset, np.ndarray]]:
    """Read one file fully and return (header without pixels, rescaled float32 2-D slice) per frame.

    A classic image gives one pair; an enhanced (or legacy-converted) multi-frame object gives one
    pair per frame, each header flattened from the functional groups (:mod:`.multiframe`).
    ``label`` names the file in messages (default: ``path``); ``padding_value`` replaces
    PixelPaddingValue pixels (default: -1000 HU for CT, 0 for PET).
    """
    label = str(path) if label is None else label
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # pydicom raises many types for corrupt input
        why = str(exc).replace(os.fspath(path), label)  # an OSError repeats the raw path
        raise DicomSeriesError(study, label, f"corrupt or unreadable DICOM ({type(exc).__name__}: {why})") from exc
    if "PixelData" not in ds:
        raise DicomSeriesError(study, label, "no pixel data (truncated file or not an image)")
    pixels = native_pixels(ds)
    if pixels is None:
        try:
            pixels = ds.pixel_array
        except Exception as exc:
            raise DicomSeriesError(study, label, _decode_problem(ds, exc)) from exc
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    if n_frames > 1 or is_multiframe(ds):
        pixels = pixels.reshape((n_frames, *pixels.shape[-2:])) if pixels.ndim >= 2 else pixels
        headers = frame_headers(ds)
    else:
        headers = [ds]
        pixels = pixels[None]
    if pixels.ndim != 3 or int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise DicomSeriesError(study, label, f"expected single-sample grey-level frames, got pixel array {pixels.shape}")
    if padding_value is None:
        padding_value = AIR_HU if str(ds.get("Modality", "")).upper() == "CT" else 0.0
    out = []
    for frame_ds, stored in zip(headers, pixels):
        out.append((frame_ds, _to_real(frame_ds, stored, study, label, padding_value)))
    if "PixelData" in ds:
        del ds.PixelData
    return out


def _consistent_geometry(
    headers: list[Dataset], slices: list[np.ndarray], labels: list[str], study: str, orientation_tolerance: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check that every slice shares series, orientation, pixel spacing and size with the first;
    return (ImageOrientationPatient, PixelSpacing, positions ``(n, 3)``)."""
    first = headers[0]
    series_uid = first.get("SeriesInstanceUID")
    iop0 = _floats(first, "ImageOrientationPatient", 6, study, labels[0])
    ps0 = _floats(first, "PixelSpacing", 2, study, labels[0])
    if not np.all(ps0 > 0):
        raise DicomSeriesError(study, labels[0], f"PixelSpacing (0028,0030) must be positive, got {ps0.tolist()}")
    shape0 = slices[0].shape
    positions = np.empty((len(headers), 3), dtype=np.float64)
    for i, (ds, image, label) in enumerate(zip(headers, slices, labels)):
        if ds.get("SeriesInstanceUID") != series_uid:
            raise DicomSeriesError(study, label, "file belongs to another series (SeriesInstanceUID differs)")
        iop = _floats(ds, "ImageOrientationPatient", 6, study, label)
        if np.max(np.abs(iop - iop0)) > orientation_tolerance:
            raise DicomSeriesError(
                study, label, f"inconsistent orientation: ImageOrientationPatient {iop.tolist()} != {iop0.tolist()}"
            )
        ps = _floats(ds, "PixelSpacing", 2, study, label)
        if np.max(np.abs(ps - ps0)) > PIXEL_SPACING_TOLERANCE_MM:
            raise DicomSeriesError(study, label, f"inconsistent PixelSpacing {ps.tolist()} != {ps0.tolist()}")
        if image.shape != shape0:
            raise DicomSeriesError(
                study, label, f"inconsistent size: {image.shape[0]}x{image.shape[1]} != {shape0[0]}x{shape0[1]}"
            )
        positions[i] = _floats(ds, "ImagePositionPatient", 3, study, label)

    return iop0, ps0, positions


def _slice_step(along, positions, normal, first, labels, study, duplicate_tolerance_mm, spacing_relative_tolerance,
                inplane_tolerance_mm) -> float:
    """The slice spacing from the sorted positions; duplicates, tilt, gaps and uneven spacing are refused."""
    if len(along) > 1:
        gaps = np.diff(along)
        dup = np.flatnonzero(gaps < duplicate_tolerance_mm)
        if dup.size:
            i = int(dup[0])
            raise DicomSeriesError(
                study,
                labels[i + 1],
                f"duplicated slice: same position {along[i]:.3f} mm along the normal as {labels[i]}",
            )
        inplane = positions - np.outer(along, normal)
        drift = np.max(np.abs(inplane - inplane[0]), axis=1)
        bad = np.flatnonzero(drift > inplane_tolerance_mm)
        if bad.size:
            i = int(bad[0])
            raise DicomSeriesError(
                study,
                labels[i],
                f"slice positions are not along the slice normal (in-plane offset {drift[i]:.3f} mm; gantry tilt?)",
            )
        step = float(np.median(gaps))
        rel = np.abs(gaps - step) / step
        bad = np.flatnonzero(rel > spacing_relative_tolerance)
        if bad.size:
            i = int(bad[0])
            ratio = gaps[i] / step
            k = round(ratio)
            if k >= 2 and abs(ratio - k) <= spacing_relative_tolerance * k:
                problem = (
                    f"missing slice(s): gap of {gaps[i]:.3f} mm after this file, {k - 1} slice(s) of "
                    f"{step:.3f} mm missing before {labels[i + 1]}"
                )
            else:
                problem = (
                    f"non-uniform slice spacing: gap of {gaps[i]:.3f} mm to {labels[i + 1]} "
                    f"vs median {step:.3f} mm"
                )
            raise DicomSeriesError(study, labels[i], problem)
    else:
        spacing_tag = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        if not spacing_tag:
            raise DicomSeriesError(study, labels[0], "single-slice series without SliceThickness: no z spacing")
        step = float(spacing_tag)

    return step


def _read_frames(files, study: str, root, padding_value, file_labels) -> tuple[list, list, list, list]:
    """Every slice of ``files`` (frames of multi-frame objects included): headers, arrays, paths, labels."""
    root_s = os.fspath(root) if root is not None else None
    files = [os.fspath(f) for f in files]
    if not files:
        raise DicomSeriesError(study, "-", "empty series (no files)")
    headers, slices, paths, labels = [], [], [], []
    for path in files:
        label = file_labels[path] if file_labels and path in file_labels else _label(path, root_s)
        frames = read_image(path, study, label, padding_value)
        for i, (ds, image) in enumerate(frames):
            headers.append(ds)
            slices.append(image)
            paths.append(path)
            labels.append(label if len(frames) == 1 else f"{label} frame {i + 1}")
    return headers, slices, paths, labels


def _one_per_position(along, positions, headers, slices, paths, labels, **rules) -> tuple:
    """Everything in slice order along the normal, one object per position
    (:func:`~colearn_pipeline.dicom.consistency.resolve_positions`), and the notes of what was dropped."""
    order = np.argsort(along, kind="stable")
    headers, slices, labels = [headers[i] for i in order], [slices[i] for i in order], [labels[i] for i in order]
    resolution = resolve_positions(along[order], headers, slices, labels, **rules)
    keep = order[resolution.keep]
    return (along[keep], positions[keep], [headers[i] for i in resolution.keep], [slices[i] for i in resolution.keep],
            [paths[i] for i in keep], [labels[i] for i in resolution.keep], resolution.notes)


def read_series(
    files: Sequence[str | os.PathLike],
    study: str = "-",
    *,
    root: str | os.PathLike | None = None,
    orientation_tolerance: float = ORIENTATION_TOLERANCE,
    duplicate_tolerance_mm: float = DUPLICATE_TOLERANCE_MM,
    spacing_relative_tolerance: float = SPACING_RELATIVE_TOLERANCE,
    inplane_tolerance_mm: float = INPLANE_TOLERANCE_MM,
    padding_value: float | None = None,
    file_labels: Mapping[str, str] | None = None,
    dynamic_pet: str = DYNAMIC_PET,
    uptake_time_min: float = UPTAKE_TIME_MIN,
) -> SeriesVolume:
    """Read and validate one image series.

    Parameters
    ----------
    files : sequence of path-like
        The series' files, in any order: one slice each (classic), or one enhanced /
        legacy-converted multi-frame object whose frames are the slices.
    study : str
        The study's pseudonym, used in error messages.
    root : path-like, optional
        Files are named relative to this folder in messages.
    orientation_tolerance : float
        Largest difference between direction cosines of two slices.
    duplicate_tolerance_mm : float
        Slices closer than this along the normal are duplicates.
    spacing_relative_tolerance : float
        Largest relative deviation of a slice gap from the median gap.
    inplane_tolerance_mm : float
        Largest in-plane drift of slice origins (a tilted or sheared stack is refused).
    padding_value : float, optional
        Real-world value given to pixels equal to PixelPaddingValue (0028,0120) (or within
        PixelPaddingRangeLimit); default air (-1000 HU) for CT and 0 for PET.
    file_labels : mapping of str to str, optional
        Names to use for files in messages (e.g. :attr:`StudyFiles.file_labels`, hashes of the
        relative paths); default the path relative to ``root``.
    dynamic_pet : {"refuse", "nearest_uptake_time"}
        A PET with several frames per position (by acquisition time) is refused, or only the
        frame starting nearest ``uptake_time_min`` after injection is kept (said in ``notes``).
    uptake_time_min : float
        The standard uptake time, minutes after injection.

    Returns
    -------
    SeriesVolume

    Raises
    ------
    DicomSeriesError
        Naming the study, the file and the problem.
    """
    headers, slices, paths, labels = _read_frames(files, study, root, padding_value, file_labels)
    first = headers[0]
    iop0, ps0, positions = _consistent_geometry(headers, slices, labels, study, orientation_tolerance)
    row_cos, col_cos = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row_cos) - 1) > 1e-3 or abs(np.linalg.norm(col_cos) - 1) > 1e-3 or abs(row_cos @ col_cos) > 1e-3:
        raise DicomSeriesError(study, labels[0], f"ImageOrientationPatient {iop0.tolist()} is not orthonormal")
    normal = np.cross(row_cos, col_cos)
    along, positions, headers, slices, paths, labels, notes = _one_per_position(
        positions @ normal, positions, headers, slices, paths, labels, study=study,
        duplicate_tolerance_mm=duplicate_tolerance_mm, dynamic_pet=dynamic_pet, uptake_time_min=uptake_time_min)
    step = _slice_step(along, positions, normal, first, labels, study, duplicate_tolerance_mm,
                       spacing_relative_tolerance, inplane_tolerance_mm)
    direction = tuple(float(v) for v in np.column_stack([row_cos, col_cos, normal]).reshape(-1))
    return SeriesVolume(
        array=np.stack(slices, axis=0),
        datasets=headers,
        files=paths,
        spacing_xyz_mm=(float(ps0[1]), float(ps0[0]), float(step)),
        origin_xyz_mm=tuple(float(v) for v in positions[0]),  # type: ignore[arg-type]
        direction=direction,
        study=study,
        modality=str(first.get("Modality", "")),
        notes=notes,
    )
